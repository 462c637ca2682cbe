"""A study's references, trained as Ray work with one trial's resources: the fixed mixed baseline and the
teachers (once per study, before any trial), and the ablations (after the trials): of the best configuration
and, when the space samples ``kd.method``, of each method's best, so each is compared with its own recipe.

The ablation is the study's best configuration retrained without its distillation term (Hinton KD with
alpha = 0; for annealing KD, phase 2 alone), same recipe, same seeds and folds: the one comparison that
isolates what distillation adds. Every job sets ``torch.set_num_threads`` to the CPUs it was given, so the
references never oversubscribe the cores the way training in the driver's threads did.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from kdcore import METHODS, KDCoreError, one_line
from results.reader import read_table
from results.writer import StudyTables
from tune import cluster
from tune.errors import KDTuneError
from tune.plan import RunOptions
from tune.progress import ProgressLine
from tune.study import StudyMeta, StudyPaths, load_optuna_study
from tune.tables import ABLATION, reference_rows, study_tables


def _job(study_dir: str, what: str, params: dict[str, Any] | None, threads: int, use_gpu: bool) -> dict[str, Any]:
    """One reference, in a Ray worker: ``baseline``, ``teachers`` or ``ablation`` (of ``params``)."""
    import dataclasses

    import torch

    import kdcore
    from kdcore import TeacherCache, prepare, train_baseline, train_student

    torch.set_num_threads(max(1, threads))
    paths = StudyPaths(Path(study_dir))
    meta = StudyMeta.read(paths)
    space = meta.space(paths)
    config = space.base if params is None else space.experiment(params)
    device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
    dataset = kdcore.load_data(meta.data)
    prep = prepare(dataset, config, device)
    start = time.perf_counter()
    if what == "baseline":
        summaries = [("baseline", train_baseline(prep, config).summary())]
    elif what == "teachers":
        cached = TeacherCache(paths.teachers).get_or_train(prep, config, dataset.fingerprint())
        summaries = [(f"teacher_{k}", s) for k, s in enumerate(cached.summaries)]
    elif what == ABLATION:
        config = dataclasses.replace(config, kd=config.kd.without_kd())
        summaries = [(ABLATION, train_student(prep, config, None).summary())]
    else:
        raise ValueError(f"unknown reference job {what!r}")
    return {"summaries": summaries, "seconds": time.perf_counter() - start}


def run_jobs(paths: StudyPaths, meta: StudyMeta, jobs: list[tuple[str, dict[str, Any] | None]], *,
             label: str, options: RunOptions) -> list[tuple[str, dict[str, Any]]]:
    """Run reference jobs as Ray tasks (in parallel where the cluster has room) with a clock on stderr."""
    import ray

    line = ProgressLine(options.stream, enabled=not options.quiet)
    task = ray.remote(num_cpus=meta.cpus_per_trial, num_gpus=meta.gpus_per_trial, max_retries=2)(_job)
    threads = max(1, int(meta.cpus_per_trial))
    pending = {task.remote(str(paths.root), what, params, threads, meta.gpus_per_trial > 0): what
               for what, params in jobs}
    refs = list(pending)
    start = time.monotonic()
    done: list[Any] = []
    try:
        while len(done) < len(refs):
            ready, _ = ray.wait([r for r in refs if r not in done], timeout=0.5)
            done.extend(ready)
            waiting = ", ".join(pending[r] for r in refs if r not in done) or "-"
            line.update(f"{label}: {len(done)}/{len(refs)} done (running: {waiting}); "
                        f"{time.monotonic() - start:.0f} s", force=bool(ready))
    except KeyboardInterrupt:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    finally:
        line.done()
    out: list[tuple[str, dict[str, Any]]] = []
    for ref in refs:
        try:
            out.extend(ray.get(ref)["summaries"])
        except Exception as exc:  # noqa: BLE001 - a job's error, or its worker's death: one line, others stopped
            for other in refs:
                ray.cancel(other, force=True)
            cause = getattr(exc, "cause", None)
            if isinstance(cause, KDCoreError):
                raise cause from None
            # The last line: Ray's RayTaskError text ends with the job's own exception.
            last = (str(cause or exc).strip().splitlines() or [type(exc).__name__])[-1]
            raise KDTuneError(f"{label}: the {pending[ref]} job failed: {last[:300]}") from None
    return out


def train_references(paths: StudyPaths, meta: StudyMeta, tables: StudyTables, options: RunOptions) -> None:
    """Train the mixed baseline and the teachers once, on the study's seeds, as two Ray tasks.

    The teachers go into the study's teacher cache, so the trials that share the base teacher settings
    never train them; the baseline gives every analysis its "student vs baseline" on equal terms.
    """
    done = run_jobs(paths, meta, [("baseline", None), ("teachers", None)],
                    label="training the references (mixed baseline, teachers)", options=options)
    rows = [row for method, summary in done for row in reference_rows(meta.name, method, summary)]
    tables.append("reference", rows)


def ablation_trials(paths: StudyPaths, meta: StudyMeta) -> list[Any]:
    """The trials whose ablations the study records: its best COMPLETE trial first, then, when the space
    samples ``kd.method``, the best COMPLETE trial of each method that learns from teachers (so that each
    method can be set against the same recipe without KD), each once; [] when nothing is COMPLETE."""
    study = load_optuna_study(paths, meta)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        return []
    out = [study.best_trial]
    space = meta.space(paths)
    if any(k.path == "kd.method" for k in space.knobs):
        pick = max if space.objective.mode == "max" else min
        for method in METHODS:
            mine = [t for t in complete if space.experiment(dict(t.params)).kd.method == method]
            if not mine:
                continue
            best = pick(mine, key=lambda t: (t.value, -t.number))  # ties: the earliest, as Optuna's best
            if best.number not in {t.number for t in out} and METHODS[method].uses_teachers(
                    space.experiment(dict(best.params)).kd):
                out.append(best)
    return out


def ablation_needed(paths: StudyPaths, meta: StudyMeta, tables: StudyTables) -> tuple[list[Any], bool]:
    """The trials whose ablation is to be trained, and whether the recorded ablations are replaced (one is of
    a trial no longer wanted: the best changed) rather than added to; ([], False) when nothing is to do."""
    if not meta.references:
        return [], False
    wanted = ablation_trials(paths, meta)
    recorded: set[int] = set()
    if ABLATION in tables.methods():
        ref = read_table(paths.root, "reference")
        recorded = {int(n) for n in ref.loc[ref["method"] == ABLATION, "trial_number"].dropna()}
    numbers = {t.number for t in wanted}
    if recorded - numbers:
        return wanted, True
    return [t for t in wanted if t.number not in recorded], False


def record_missing_ablation(paths: StudyPaths, meta: StudyMeta, options: RunOptions) -> str | None:
    """For a study whose trials are all done: train the ablations that are missing or of an older best."""
    tables = study_tables(paths, meta, meta.space(paths))
    if not ablation_needed(paths, meta, tables)[0]:
        return None
    handle = cluster.start(options.cluster)
    try:
        return record_ablation(paths, meta, tables, options)
    finally:
        handle.stop()


def record_ablation(paths: StudyPaths, meta: StudyMeta, tables: StudyTables, options: RunOptions) -> str | None:
    """Retrain the best COMPLETE trial, and each kd.method's best, without its KD term (unless recorded);
    a note if that fails.

    The rows of the study's best come first, as before there were several. A failure here (an ablation
    diverged, a worker died) is reported, never fatal: the trials are kept.
    """
    trials, replace = ablation_needed(paths, meta, tables)
    if not trials:
        return None
    numbers = ", ".join(str(t.number) for t in trials)
    try:
        done = run_jobs(paths, meta, [(ABLATION, dict(t.params)) for t in trials],
                        label=(f"ablation: trial{'s' if len(trials) > 1 else ''} {numbers} without "
                               f"{'their' if len(trials) > 1 else 'its'} KD term"), options=options)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - a reference that fails must not cost the study its trials
        return (f"the ablation of trial{'s' if len(trials) > 1 else ''} {numbers} failed: {one_line(exc)[:300]}; "
                "`kdtune resume` tries it again")
    rows = [row for t, (_, summary) in zip(trials, done) for row in reference_rows(meta.name, ABLATION, summary, t.number)]
    if replace:
        tables.replace_method(rows, ABLATION)
    else:
        tables.append("reference", rows)
    return None
