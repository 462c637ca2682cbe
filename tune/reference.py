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
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Job:
    """One reference to train as a Ray task: ``what`` is ``baseline``, ``teachers`` (those of ``teachers``, by
    index; None: every teacher, one after another, as a study of an older kdtune recorded no task) or
    ``ablation`` (of ``params``); ``name`` is what the progress line and an error call it."""

    name: str
    what: str
    params: dict[str, Any] | None = None
    teachers: tuple[int, ...] | None = None


@dataclass(frozen=True)
class JobOutput:
    """What a job gave: its references' summaries (name, summary), the teachers it trained rather than
    found in the cache, its seconds, and the Ray task and worker it ran in (``task_id``, ``pid``, ``node``)."""

    name: str
    summaries: list[tuple[str, dict[str, Any]]]
    trained: tuple[str, ...]
    seconds: float
    worker: dict[str, Any]


def _job(study_dir: str, job: Job, threads: int, use_gpu: bool) -> dict[str, Any]:
    """One reference job, in a Ray worker."""
    import dataclasses
    import os

    import ray
    import torch

    import kdcore
    from kdcore import TeacherCache, prepare, task_of, train_baseline, train_student

    torch.set_num_threads(max(1, threads))
    paths = StudyPaths(Path(study_dir))
    meta = StudyMeta.read(paths)
    space = meta.space(paths)
    config = space.base if job.params is None else space.experiment(job.params)
    device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
    dataset = kdcore.load_data(meta.data)
    prep = prepare(dataset, config, device)
    start = time.perf_counter()
    trained: list[str] = []
    if job.what == "baseline":
        summaries = [("baseline", train_baseline(prep, config).summary())]
        trained = ["baseline"]
    elif job.what == "teachers":
        indices = range(len(task_of(prep, config).teachers)) if job.teachers is None else job.teachers
        parts = TeacherCache(paths.teachers).train_parts(prep, config, dataset.fingerprint(), list(indices))
        summaries = [(f"teacher_{p.index}", p.summary) for p in parts]
        trained = [f"teacher_{p.index}" for p in parts if p.trained]
    elif job.what == ABLATION:
        config = dataclasses.replace(config, kd=config.kd.without_kd())
        summaries = [(ABLATION, train_student(prep, config, None).summary())]
        trained = [ABLATION]
    else:
        raise ValueError(f"unknown reference job {job.what!r}")
    worker: dict[str, Any] = {"task_id": None, "node": None, "pid": os.getpid()}
    if ray.is_initialized():  # in a Ray task (a test may call the job in its own process)
        context = ray.get_runtime_context()
        worker.update(task_id=context.get_task_id(), node=context.get_node_id())
    return {"summaries": summaries, "trained": trained, "seconds": time.perf_counter() - start, "worker": worker}


def run_jobs(paths: StudyPaths, meta: StudyMeta, jobs: list[Job], *, label: str, options: RunOptions,
             on_done: Callable[[JobOutput], None] | None = None) -> list[JobOutput]:
    """Run reference jobs as Ray tasks (in parallel where the cluster has room) with a clock on stderr; their
    outputs in the order of ``jobs``, each handed to ``on_done`` as it finishes.

    The first job that fails stops the others and is one line (its own error when kdcore raised it)."""
    import ray

    line = ProgressLine(options.stream, enabled=not options.quiet)
    task = ray.remote(num_cpus=meta.cpus_per_trial, num_gpus=meta.gpus_per_trial, max_retries=2)(_job)
    threads = max(1, int(meta.cpus_per_trial))
    pending = {task.remote(str(paths.root), job, threads, meta.gpus_per_trial > 0): job for job in jobs}
    refs = list(pending)
    start = time.monotonic()
    outputs: dict[Any, JobOutput] = {}
    try:
        while len(outputs) < len(refs):
            ready, _ = ray.wait([r for r in refs if r not in outputs], timeout=0.5)
            for ref in ready:
                try:
                    got = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a job's error, or its worker's death: one line, others stopped
                    for other in refs:
                        if other not in outputs and other is not ref:
                            ray.cancel(other, force=True)
                    raise _failure(exc, label, pending[ref].name) from None
                outputs[ref] = JobOutput(pending[ref].name, [tuple(s) for s in got["summaries"]],  # type: ignore[misc]
                                         tuple(got["trained"]), got["seconds"], got["worker"])
                if on_done is not None:
                    on_done(outputs[ref])
            running = ", ".join(pending[r].name for r in refs if r not in outputs) or "-"
            line.update(f"{label}: {len(outputs)}/{len(refs)} done (running: {running}); "
                        f"{time.monotonic() - start:.0f} s", force=bool(ready))
    except KeyboardInterrupt:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    finally:
        line.done()
    return [outputs[ref] for ref in refs]


def _failure(exc: Exception, label: str, name: str) -> Exception:
    """The one-line error of a failed job: kdcore's own, or the last line of what Ray reports."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, KDCoreError):
        return cause
    # The last line: Ray's RayTaskError text ends with the job's own exception.
    last = (str(cause or exc).strip().splitlines() or [type(exc).__name__])[-1]
    return KDTuneError(f"{label}: the {name} job failed: {last[:300]}")


def reference_jobs(meta: StudyMeta, recorded: set[str]) -> list[Job]:
    """The study's references not yet in its tables: the baseline, and each teacher that trains as its own
    task, beside one task that evaluates the loaded (checkpoint) teachers; a study of an older kdtune, which
    recorded no task, trains its teachers in one task."""
    jobs = [] if "baseline" in recorded else [Job("baseline", "baseline")]
    if meta.task is None:
        if not any(m.startswith("teacher_") for m in recorded):
            jobs.append(Job("teachers", "teachers"))
        return jobs
    teachers = [(k, t.get("checkpoint")) for k, t in enumerate(meta.task["teachers"])
                if f"teacher_{k}" not in recorded]
    jobs += [Job(f"teacher_{k}", "teachers", teachers=(k,)) for k, checkpoint in teachers if checkpoint is None]
    loaded = tuple(k for k, checkpoint in teachers if checkpoint is not None)
    if loaded:
        jobs.append(Job("loaded " + ", ".join(f"teacher_{k}" for k in loaded), "teachers", teachers=loaded))
    return jobs


def references_missing(meta: StudyMeta, tables: StudyTables) -> bool:
    """Whether the study's baseline or one of its teachers is not recorded yet (``train_references``)."""
    return meta.references and bool(reference_jobs(meta, tables.methods()))


def train_references(paths: StudyPaths, meta: StudyMeta, tables: StudyTables,
                     options: RunOptions) -> list[JobOutput]:
    """Train the mixed baseline and the teachers once, on the study's seeds, each its own Ray task with a
    trial's resources; those already recorded (a study stopped during this phase) are not trained again.

    The teachers go into the study's teacher cache, so the trials that share the base teacher settings
    never train them; the baseline gives every analysis its "student vs baseline" on equal terms. Each
    job's rows are recorded as it finishes, and a teacher whose task finished is kept in the cache as its
    part, so that after a failure a resume trains only what is missing. Returns the jobs' outputs.
    """
    jobs = reference_jobs(meta, tables.methods())
    if not jobs:
        return []

    def record(done: JobOutput) -> None:
        tables.append("reference", [row for method, summary in done.summaries
                                    for row in reference_rows(meta.name, method, summary)])

    return run_jobs(paths, meta, jobs, label="training the references (mixed baseline, teachers)",
                    options=options, on_done=record)


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
        done = run_jobs(paths, meta, [Job(ABLATION, ABLATION, dict(t.params)) for t in trials],
                        label=(f"ablation: trial{'s' if len(trials) > 1 else ''} {numbers} without "
                               f"{'their' if len(trials) > 1 else 'its'} KD term"), options=options)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - a reference that fails must not cost the study its trials
        return (f"the ablation of trial{'s' if len(trials) > 1 else ''} {numbers} failed: {one_line(exc)[:300]}; "
                "`kdtune resume` tries it again")
    rows = [row for t, out in zip(trials, done) for _, summary in out.summaries
            for row in reference_rows(meta.name, ABLATION, summary, t.number)]
    if replace:
        tables.replace_method(rows, ABLATION)
    else:
        tables.append("reference", rows)
    return None
