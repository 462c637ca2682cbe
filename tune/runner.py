"""Running a study: Ray Tune + PruneAwareOptunaSearch (TPE) + ASHA over the trainable, with the study's
references (``tune.reference``) before and after its trials.

The Optuna study in ``DIR/NAME/optuna.journal`` is the source of truth for what each trial became; the
outcome returned at the end is read back from it (``tune.outcome``).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from ray import tune

from search_spaces import SearchSpace
from tune import cluster, signals
from tune.errors import KDTuneError
from tune.outcome import SearchOutcome, best_value, counted, end_stale_trials, read_outcome
from tune.plan import (  # noqa: F401 - re-exported: the runner is where users look for them
    DEFAULT_REDUCTION_FACTOR,
    SAMPLER_NAMES,
    RunOptions,
    SearchSettings,
    default_grace,
    max_evaluations,
    plan_study,
)
from tune.progress import study_progress
from tune.recorder import ResultsRecorder
from tune.reference import record_ablation, references_missing, train_references
from tune.scheduler import RungASHA
from tune.searcher import ASHA_KEY, SCHEDULER_KEY, PruneAwareOptunaSearch
from tune.study import (
    StudyMeta,
    StudyPaths,
    create_study,
    ensure_optuna_study,
    journal_storage,
    load_optuna_study,
)
from tune.tables import study_tables
from tune.trainable import METRIC, STUDY_KEY, kd_trial

# The Optuna samplers a study can use (``tune.plan.SAMPLER_NAMES``, the CLI's --sampler): TPE (the point of
# the service) and random search (its yardstick).
SAMPLERS = {"tpe": lambda seed: optuna.samplers.TPESampler(seed=seed),
            "random": lambda seed: optuna.samplers.RandomSampler(seed=seed)}


def trial_slots(cpus: float, gpus: float, cpus_per_trial: float, gpus_per_trial: float,
                max_concurrent: int = 0) -> int:
    """How many trials the cluster runs at once: what its CPUs (and GPUs) hold, capped by ``max_concurrent``."""
    slots = math.floor(cpus / cpus_per_trial + 1e-9)
    if gpus_per_trial > 0:
        slots = min(slots, math.floor(gpus / gpus_per_trial + 1e-9))
    if max_concurrent:
        slots = min(slots, max_concurrent)
    return max(1, slots)


def _trial_dirname(trial: Any) -> str:
    return f"t_{trial.trial_id}"


def run_study(paths: StudyPaths, meta: StudyMeta, *, budget: int, sampler_seed: int, options: RunOptions,
              new: bool = False, write_meta: bool = False, trainable: Callable[[dict[str, Any]], None] = kd_trial,
              callbacks: Sequence[tune.Callback] = ()) -> SearchOutcome:
    """Start (or join) Ray and run ``budget`` more trials of the study with TPE + ASHA; read the outcome back.

    With ``new``, the study folder is created (whole: ``tune.study.create_study``) only once Ray is up
    and can hold a trial, so a search that fails before it starts leaves nothing behind, and one stopped
    at any later moment is resumable. Without it, the caller holds the driver lock (``kdtune resume``
    reconciles the study under it first). ``write_meta`` (``resume --more``): ``meta`` changed, and is
    written at that same point, so a resume that cannot start changes nothing.
    ``meta.references``: train the mixed baseline and the teachers first (unless recorded) and, once the
    trials are done, the ablation of the best trial (off for the CE-only baseline search).
    A Ctrl-C or SIGTERM at any point ends the run as interrupted: trials left RUNNING are ended, the
    tables compacted, and ``kdtune resume`` continues from there.
    ``trainable`` and ``callbacks`` are seams for ``bench/driver_scale.py``: a trainable that trains nothing
    (reporting what ``kd_trial`` reports), and callbacks that meter the driver beside the study's own.
    """
    space = meta.space(paths)
    direction = space.objective.direction
    handle = cluster.start(options.cluster)
    started = time.monotonic()
    interrupted = False
    note: str | None = None
    tables: Any = None
    try:
        if meta.cpus_per_trial > handle.cpus or meta.gpus_per_trial > handle.gpus:
            raise KDTuneError(
                f"impossible resource request: each trial asks for {meta.cpus_per_trial:g} CPU and "
                f"{meta.gpus_per_trial:g} GPU, but the cluster has {handle.cpus:g} CPU and {handle.gpus:g} GPU"
            )
        with create_study(paths, meta, direction) if new else contextlib.nullcontext():
            try:
                if write_meta:
                    meta.write(paths)
                if not new:  # a new study's attributes were written with it
                    ensure_optuna_study(paths, meta, direction)
                options.say(f"study {paths.root}: {budget} trial{'s' if budget != 1 else ''} to run on "
                            f"{handle.cpus:g} CPU{'s' if handle.cpus != 1 else ''}"
                            + (f" and {handle.gpus:g} GPU" if handle.gpus else "")
                            + f"; follow it with `kdtune analyse {paths.root}`")
                tables = study_tables(paths, meta, space)
                tables.write_metadata()
                if references_missing(meta, tables):
                    train_references(paths, meta, tables, options)
                tuner = _build_tuner(paths, meta, space, tables, budget=budget, sampler_seed=sampler_seed,
                                     options=options, trainable=trainable, callbacks=callbacks)
                # Tune starts one pending trial at a time for a searcher like ours: a cluster of N slots would
                # fill one trial per controller step. A user's own setting wins.
                os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(trial_slots(
                    handle.cpus, handle.gpus, meta.cpus_per_trial, meta.gpus_per_trial, meta.max_concurrent)))
                sigint = signal.getsignal(signal.SIGINT)
                try:
                    tuner.fit()
                finally:  # Tune leaves its handler installed when no signal came: a later Ctrl-C would do nothing
                    signal.signal(signal.SIGINT, sigint)
                # Tune's own SIGINT handler makes fit() return: the ablation waits for a study that is done.
                interrupted = signals.terminated()
                if not interrupted and meta.references and counted(paths, meta) >= meta.num_samples:
                    note = record_ablation(paths, meta, tables, options)
            except KeyboardInterrupt:
                interrupted = True
            if interrupted or counted(paths, meta) < meta.num_samples:
                # Stopped early: Tune does not tell the searcher about trials it cut off, and their workers
                # are gone, so end them here rather than leave them RUNNING; `kdtune resume` re-runs them.
                end_stale_trials(load_optuna_study(paths, meta), paths)
            if tables is not None:
                tables.compact()
    finally:
        handle.stop()
    outcome = read_outcome(paths, meta)
    outcome.interrupted = interrupted or outcome.trials["total"] < meta.num_samples
    outcome.seconds = time.monotonic() - started
    if note:
        outcome.extra["note"] = note
    return outcome


def _build_tuner(paths: StudyPaths, meta: StudyMeta, space: SearchSpace, tables: Any, *, budget: int,
                 sampler_seed: int, options: RunOptions,
                 trainable: Callable[[dict[str, Any]], None] = kd_trial,
                 callbacks: Sequence[tune.Callback] = ()) -> tune.Tuner:
    mode = space.objective.mode
    searcher = PruneAwareOptunaSearch(
        space=space.sample, metric=space.objective.metric, mode=mode,
        sampler=SAMPLERS[meta.sampler](sampler_seed), study_name=meta.name,
        storage=journal_storage(paths),
    )
    scheduler = RungASHA(time_attr=ASHA_KEY, metric=SCHEDULER_KEY, mode=mode, max_t=meta.max_t,
                         grace_period=meta.grace_period, reduction_factor=meta.reduction_factor)
    resources = {"cpu": meta.cpus_per_trial, "gpu": meta.gpus_per_trial}
    knobs = [k.path for k in space.knobs]
    return tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space={STUDY_KEY: str(paths.root)},
        # No metric here: the searcher optimises the objective, ASHA compares its best value so far.
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler,
            num_samples=budget, max_concurrent_trials=meta.max_concurrent or None,
            reuse_actors=True, trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=meta.name, storage_path=str(paths.storage), verbose=0,
            callbacks=[ResultsRecorder(tables, searcher, meta.name, space.objective.metric, knobs, paths.root),
                       study_progress(budget, options, knobs, searcher.optuna_number, METRIC,
                                      best_value(load_optuna_study(paths, meta), METRIC)), *callbacks],
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
        ),
    )
