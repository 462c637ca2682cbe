"""A study's references, trained as Ray work with one trial's resources: the fixed mixed baseline and the
teachers (once per study, before any trial), and the ablation of the best configuration (after the trials).

The ablation is the study's best configuration retrained without its distillation term (Hinton KD with
alpha = 0; for annealing KD, phase 2 alone), same recipe, same seeds and folds: the one comparison that
isolates what distillation adds. Every job sets ``torch.set_num_threads`` to the CPUs it was given, so the
references never oversubscribe the cores the way training in the driver's threads did.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kdcore import KDCoreError
from results.schema import class_acc_cell
from tune.errors import KDTuneError
from tune.plan import RunOptions
from tune.progress import ProgressLine
from tune.study import StudyMeta, StudyPaths

ABLATION = "ablation"


def _job(study_dir: str, what: str, params: dict[str, Any] | None, threads: int, use_gpu: bool) -> dict[str, Any]:
    """One reference, in a Ray worker: ``baseline``, ``teachers`` or ``ablation`` (of ``params``)."""
    import dataclasses

    import torch

    import kdcore
    from kdcore import TeacherCache, prepare, train_baseline, train_student
    from search_spaces import parse_space

    torch.set_num_threads(max(1, threads))
    paths = StudyPaths(Path(study_dir))
    meta = StudyMeta.read(paths)
    space = parse_space(meta.space_text, source=f"{paths.meta}:space")
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


def reference_rows(study: str, method: str, summary: dict[str, Any], trial_number: int | None = None
                   ) -> list[dict[str, Any]]:
    """The reference-table rows of one method: one per seed, with the method's parameter count and classes
    (``FitResult.summary``; null when the summary has none: a tuned baseline's per-seed rows, an older
    kdcore's teacher cache) and each seed's holdout accuracy per class, in the order of those classes."""
    params = summary.get("params")
    classes = summary.get("classes")
    return [{"study": study, "method": method, "seed": s["seed"], "trial_number": trial_number,
             "inner_acc": s["inner_acc"], "holdout_acc": s["holdout_acc"], "inner_loss": s["inner_loss"],
             "holdout_loss": s["holdout_loss"], "best_epoch": s["best_epoch"],
             "params": None if params is None else int(params),
             "classes": None if classes is None else [int(c) for c in classes],
             "holdout_class_acc": class_acc_cell(s.get("holdout_class_acc"))} for s in summary["per_seed"]]


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
            last = (str(cause or exc).strip().splitlines() or [type(exc).__name__])[-1]
            raise KDTuneError(f"{label}: the {pending[ref]} job failed: {last[:300]}") from None
    return out


CE_BASELINE = "ce-baseline"  # the folder (and Optuna study) of a study's CE-only baseline search
TUNED_BASELINE = "tuned_baseline"


def tuned_baseline(paths: StudyPaths, meta: StudyMeta, options: RunOptions) -> Any:
    """The CE-only search of ``meta.tune_baseline`` trials: the study's space without its KD knobs, the same
    sampler seed, ASHA and resources, run as a study of its own in ``DIR/NAME/ce-baseline`` (resumed if it
    exists); its best trial's seeds become the ``tuned_baseline`` rows of the study's reference table."""
    import dataclasses

    import optuna

    from search_spaces import parse_space
    from tune.resume import resume
    from tune.runner import _study_tables, journal_storage, max_evaluations, run_study

    space = parse_space(meta.space_text, source=f"{paths.meta}:space")
    nested = StudyPaths(paths.root / CE_BASELINE)
    if nested.meta.is_file():
        outcome = resume(nested.root, options=options)
    else:
        ce = space.without_kd()
        max_t = max_evaluations(ce)
        nested_meta = dataclasses.replace(
            meta, name=CE_BASELINE, space_name=ce.name, space_text=ce.source_text, num_samples=meta.tune_baseline,
            max_t=max_t, grace_period=min(meta.grace_period, max_t), references=False, tune_baseline=0)
        options.say(f"tuned baseline: a CE-only search of {meta.tune_baseline} trials in {nested.root}")
        outcome = run_study(nested, nested_meta, budget=meta.tune_baseline, sampler_seed=meta.seed,
                            options=options, new=True)
    nested_meta = StudyMeta.read(nested)
    study = optuna.load_study(study_name=nested_meta.name, storage=journal_storage(nested))
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if complete and study.best_trial.user_attrs.get("per_seed"):
        best = study.best_trial
        tables = _study_tables(paths, meta, space)
        summary = _tuned_summary(best.user_attrs, meta.task)
        tables.replace_method(reference_rows(meta.name, TUNED_BASELINE, summary, best.number), TUNED_BASELINE)
    return outcome


def _tuned_summary(attrs: dict[str, Any], task: dict[str, Any] | None) -> dict[str, Any]:
    """What ``reference_rows`` needs of the CE-only search's best trial, from its Optuna user attributes: the
    per-seed rows, the student's size (None when an older kdtune ran that search) and its classes, every
    class of the task (a CE-only student has C outputs; C from the per-class lists when the task is not
    recorded, None when neither is)."""
    per_seed = attrs["per_seed"]
    n_classes = task.get("n_classes") if isinstance(task, dict) else None
    if not isinstance(n_classes, int):
        lengths = {len(s.get("holdout_class_acc") or []) for s in per_seed}
        n_classes = lengths.pop() if len(lengths) == 1 and 0 not in lengths else None
    return {"per_seed": per_seed, "params": attrs.get("student_params"),
            "classes": None if n_classes is None else list(range(n_classes))}
