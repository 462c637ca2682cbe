"""Running a study: Ray Tune + PruneAwareOptunaSearch (TPE) + ASHA over the trainable.

The Optuna study in ``DIR/NAME/optuna.journal`` is the source of truth for what each trial became; the
outcome printed at the end is read back from it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tune import signals
from tune.errors import KDTuneError
from tune.plan import (  # noqa: F401 - re-exported: the runner is where users look for them
    DEFAULT_REDUCTION_FACTOR,
    RunOptions,
    SearchSettings,
    default_grace,
    max_evaluations,
    plan_study,
)
from tune.progress import ProgressLine
from tune.study import (
    StudyMeta,
    StudyPaths,
    create_study,
    driver_lock,
    ensure_optuna_study,
    journal_storage,
    load_optuna_study,
)
from tune.trainable import METRIC, STUDY_KEY, kd_trial


@dataclass
class SearchOutcome:
    """What a finished (or stopped) study holds, read from its Optuna study."""

    study_dir: str
    trials: dict[str, int]
    best: dict[str, Any] | None
    interrupted: bool = False
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"study": self.study_dir, "trials": self.trials, "best": self.best,
               "interrupted": self.interrupted, "seconds": round(self.seconds, 2)}
        if "tuned_baseline" in self.extra:
            out["tuned_baseline"] = self.extra["tuned_baseline"]
        return out


def _tpe(seed: int) -> Any:
    import optuna

    return optuna.samplers.TPESampler(seed=seed)


def _random(seed: int) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


# The Optuna samplers a study can use: TPE (the point of the service) and random search (its yardstick).
SAMPLERS = {"tpe": _tpe, "random": _random}


def _trial_dirname(trial: Any) -> str:
    return f"t_{trial.trial_id}"


def _describe_trial(trial: Any, status: str, result: dict[str, Any], knobs: list[str], number: int | None) -> str:
    """The ``--verbose`` line of a finished trial: number, state, score, seconds, key parameters."""
    value = result.get(METRIC)
    score = f"inner acc {100 * value:.2f} %" if isinstance(value, float) and math.isfinite(value) else "no score"
    holdout = result.get("holdout_acc")
    if status == "COMPLETE" and isinstance(holdout, float):
        score += f", holdout {100 * holdout:.2f} %"
    seconds = result.get("trial_seconds", result.get("time_total_s"))
    took = f"{seconds:.0f} s" if isinstance(seconds, (int, float)) else "-"
    config = trial.config or {}
    params = ", ".join(f"{k}={config[k]:.3g}" if isinstance(config[k], float) else f"{k}={config[k]}"
                       for k in knobs if k in config)
    label = f"trial {number}" if number is not None else f"trial {trial.trial_id}"
    return f"{label} {status}: {score}; {took}; {params}"


def _make_progress_callback(total: int, options: RunOptions, knobs: list[str], number_of: Any) -> Any:
    from ray import tune

    from tune.searcher import trial_status

    class Progress(tune.Callback):
        """One status line (trials done / running / pruned / failed, the best so far, time and ETA) and,
        with ``--verbose``, a line per finished trial."""

        def __init__(self) -> None:
            self.line = ProgressLine(options.stream, enabled=not options.quiet)
            self.ends: Counter[str] = Counter()
            self.best: float | None = None
            self.start = time.monotonic()

        def _show(self, trials: list[Any], force: bool = False, ended: Any = None) -> None:
            # A trial that is ending may still say RUNNING while its callbacks run: not counted.
            running = sum(1 for t in trials if t.status == "RUNNING" and t is not ended)
            best = f"{100 * self.best:.2f} %" if self.best is not None else "-"
            done, elapsed = sum(self.ends.values()), time.monotonic() - self.start
            # Wall time per finished trial so far (concurrency included) times the trials left.
            eta = f", ETA {_clock(elapsed / done * (total - done))}" if 0 < done < total else ""
            self.line.update(
                f"trials {done}/{total} done: {self.ends['complete']} complete, "
                f"{self.ends['pruned']} pruned, {self.ends['error']} error; {running} running; "
                f"best inner acc {best}; {_clock(elapsed)}{eta}", force=force)

        def _ended(self, trials: list[Any], trial: Any, status: str) -> None:
            self.ends[status.lower()] += 1
            if options.verbose:
                self.line.note(_describe_trial(trial, status, trial.last_result or {}, knobs,
                                               number_of(trial.trial_id)))
            self._show(trials, force=True, ended=trial)

        def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any) -> None:
            self._show(trials)

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            # The same rule the searcher tells Optuna by: a NaN loss ends the trial without raising, as ERROR.
            result = trial.last_result or {}
            status = trial_status(result, False, METRIC)
            value = result.get(METRIC)
            if status == "COMPLETE" and value is not None and (self.best is None or value > self.best):
                self.best = float(value)
            self._ended(trials, trial, status)

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self._ended(trials, trial, "ERROR")

        def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
            self._show(trials, force=True)
            self.line.done()

    return Progress()


def _clock(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``: a duration as a person reads it."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def read_outcome(paths: StudyPaths, meta: StudyMeta) -> SearchOutcome:
    """Counts by state and the best COMPLETE trial, from the Optuna study (the source of truth)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=meta.name, storage=journal_storage(paths))
    trials = study.get_trials(deepcopy=False)
    counts = trial_counts(trials)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = None
    if complete:
        bt = study.best_trial
        attrs = bt.user_attrs
        best = {"number": bt.number, "params": bt.params, "inner_acc_mean": attrs.get("inner_acc", bt.value),
                "inner_acc_std": attrs.get("inner_acc_std"), "holdout_acc_mean": attrs.get("holdout_acc"),
                "holdout_acc_std": attrs.get("holdout_acc_std"), "best_epoch_mean": attrs.get("best_epoch")}
    return SearchOutcome(str(paths.root), counts, best)


def _counted(paths: StudyPaths, meta: StudyMeta) -> int:
    import optuna

    study = optuna.load_study(study_name=meta.name, storage=journal_storage(paths))
    return trial_counts(study.get_trials(deepcopy=False))["total"]


def is_interrupted(trial: Any) -> bool:
    """A trial ``kdtune resume`` found RUNNING after a crash and ended as FAIL (its parameters re-run)."""
    return bool(trial.user_attrs.get("interrupted"))


def end_stale_trials(study: Any) -> list[int]:
    """End RUNNING trials as FAIL (interrupted) and enqueue their parameters to run again."""
    from optuna.trial import TrialState

    storage = study._storage
    stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    for t in stale:
        storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        if t.params:
            study.enqueue_trial(t.params, user_attrs={"rerun_of": t.number}, skip_if_exists=False)
    return [t.number for t in stale]


def trial_counts(trials: list[Any]) -> dict[str, int]:
    """Trials by state; ``total`` counts those that ended (COMPLETE, PRUNED, FAIL), which the budget counts.

    Trials found RUNNING after a crash are counted apart as INTERRUPTED: they do not use the budget.
    """
    counts: Counter[str] = Counter()
    for t in trials:
        counts["INTERRUPTED" if is_interrupted(t) else t.state.name] += 1
    total = counts["COMPLETE"] + counts["PRUNED"] + counts["FAIL"]
    return {"total": total, **{k: v for k, v in sorted(counts.items()) if v}}


def run_study(paths: StudyPaths, meta: StudyMeta, *, budget: int, sampler_seed: int, options: RunOptions,
              new: bool = False, write_meta: bool = False) -> SearchOutcome:
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
    """
    from search_spaces import parse_space
    from tune import cluster

    space = parse_space(meta.space_text, source=f"{paths.meta}:space")
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
                tables = _study_tables(paths, meta, space)
                tables.write_metadata()
                if meta.references and "baseline" not in tables.methods():
                    _train_reference(paths, meta, tables, options)
                tuner = _build_tuner(paths, meta, space, tables, budget=budget, sampler_seed=sampler_seed,
                                     options=options)
                # Tune logs "Trials did not complete" with every trial id; the progress line counts errors.
                logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
                sigint = signal.getsignal(signal.SIGINT)
                try:
                    tuner.fit()
                finally:  # Tune leaves its handler installed when no signal came: a later Ctrl-C would do nothing
                    signal.signal(signal.SIGINT, sigint)
                # Tune's own SIGINT handler makes fit() return: the ablation waits for a study that is done.
                interrupted = signals.terminated()
                if not interrupted and meta.references and _counted(paths, meta) >= meta.num_samples:
                    note = _record_ablation(paths, meta, tables, options)
            except KeyboardInterrupt:
                interrupted = True
            if interrupted or _counted(paths, meta) < meta.num_samples:
                # Stopped early: Tune does not tell the searcher about trials it cut off, and their workers
                # are gone, so end them here rather than leave them RUNNING; `kdtune resume` re-runs them.
                end_stale_trials(load_optuna_study(paths, meta))
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


def _study_tables(paths: StudyPaths, meta: StudyMeta, space: Any) -> Any:
    from results.writer import StudyTables
    from tune.recorder import space_param_types

    base = space.base
    metadata = {
        "study": meta.name, "data": meta.data, "data_source": meta.data_source, "fingerprint": meta.fingerprint,
        "space_name": meta.space_name, "space": meta.space_text, "protocol": base.protocol,
        "protocol_note": ("seed protocol: checkpoints selected on the given validation set, which is also "
                          "reported as holdout (as published): holdout figures are optimistic")
        if base.protocol == "seed" else (
            f"honest protocol: each seed selects on its own of {base.n_folds} folds of the training set; "
            "holdout never chooses" if base.inner == "folds" else
            "honest protocol: selection on an inner split of the training set; holdout never chooses"),
        "seeds": list(base.seeds), "inner": base.inner, "inner_fraction": base.inner_fraction,
        "fold_start": base.fold_start, "split_seed": base.split_seed,
        "objective": space.objective.to_dict(), "versions": meta.versions,
        "task": meta.task, "models": _models(meta, space),
    }
    return StudyTables(paths.results, space_param_types(space), metadata)


def _models(meta: StudyMeta, space: Any) -> dict[str, Any] | None:
    """The baseline's, the teacher's and the student's fixed model spec with its trainable parameters for
    the data's input shape (results.schema, "models"); None for a study planned by an older kdtune."""
    if meta.task is None or meta.input_shape is None:
        return None
    from kdcore import parameter_count, resolve_task

    base, shape = space.base, tuple(meta.input_shape)
    n_classes = int(meta.task["n_classes"])
    task = resolve_task(base.task, base.teacher, n_classes, int(meta.task["n_groups"]))
    out: dict[str, Any] = {name: {**getattr(base, name).model_spec.to_dict(),
                                  "params": parameter_count(getattr(base, name).model_spec, shape, n_classes)}
                           for name in ("baseline", "student")}
    out["teacher"] = {**base.teacher.model_spec.to_dict(),
                      "params": [parameter_count(t.fit.model_spec, shape, len(t.classes)) for t in task.teachers]}
    return {name: out[name] for name in ("baseline", "teacher", "student")}


def _train_reference(paths: StudyPaths, meta: StudyMeta, tables: Any, options: RunOptions) -> None:
    """Train the mixed baseline and the teachers once, on the study's seeds, as two Ray tasks.

    The teachers go into the study's teacher cache, so the trials that share the base teacher settings
    never train them; the baseline gives every analysis its "student vs baseline" on equal terms.
    """
    from tune.reference import reference_rows, run_jobs

    done = run_jobs(paths, meta, [("baseline", None), ("teachers", None)],
                    label="training the references (mixed baseline, teachers)", options=options)
    rows = [row for method, summary in done for row in reference_rows(meta.name, method, summary)]
    tables.append("reference", rows)


def ablation_needed(paths: StudyPaths, meta: StudyMeta, tables: Any) -> Any:
    """The best COMPLETE trial if its ablation is not recorded yet (None when there is nothing to do)."""
    import optuna

    from results.reader import read_table
    from tune.reference import ABLATION

    if not meta.references:
        return None
    study = optuna.load_study(study_name=meta.name, storage=journal_storage(paths))
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return None
    best = study.best_trial
    if ABLATION in tables.methods():
        ref = read_table(paths.root, "reference")
        numbers = ref.loc[ref["method"] == ABLATION, "trial_number"].tolist()
        if numbers and all(n == best.number for n in numbers):
            return None
    return best


def record_missing_ablation(paths: StudyPaths, meta: StudyMeta, options: RunOptions) -> str | None:
    """For a study whose trials are all done: train the ablation if it is missing or of an older best."""
    from search_spaces import parse_space
    from tune import cluster

    tables = _study_tables(paths, meta, parse_space(meta.space_text, source=f"{paths.meta}:space"))
    if ablation_needed(paths, meta, tables) is None:
        return None
    handle = cluster.start(options.cluster)
    try:
        return _record_ablation(paths, meta, tables, options)
    finally:
        handle.stop()


def _record_ablation(paths: StudyPaths, meta: StudyMeta, tables: Any, options: RunOptions) -> str | None:
    """Retrain the best COMPLETE trial without its KD term (unless its ablation is recorded); a note if not.

    A failure here (the ablation diverged, a worker died) is reported, never fatal: the trials are kept.
    """
    from tune.reference import ABLATION, reference_rows, run_jobs

    best = ablation_needed(paths, meta, tables)
    if best is None:
        return None
    try:
        done = run_jobs(paths, meta, [(ABLATION, dict(best.params))],
                        label=f"ablation: best trial {best.number} without its KD term", options=options)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - a reference that fails must not cost the study its trials
        last = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        return f"the ablation of trial {best.number} failed: {last[:300]}; `kdtune resume` tries it again"
    tables.replace_method(reference_rows(meta.name, ABLATION, done[0][1], best.number), ABLATION)
    return None


def _build_tuner(paths: StudyPaths, meta: StudyMeta, space: Any, tables: Any, *, budget: int, sampler_seed: int,
                 options: RunOptions) -> Any:
    import optuna
    from ray import tune

    from tune.recorder import ResultsRecorder
    from tune.scheduler import RungASHA
    from tune.searcher import EVAL_KEY, SCHEDULER_KEY, PruneAwareOptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    mode = space.objective.mode
    searcher = PruneAwareOptunaSearch(
        space=space.sample, metric=space.objective.metric, mode=mode,
        sampler=SAMPLERS[meta.sampler](sampler_seed), study_name=meta.name,
        storage=journal_storage(paths),
    )
    scheduler = RungASHA(time_attr=EVAL_KEY, metric=SCHEDULER_KEY, mode=mode, max_t=meta.max_t,
                         grace_period=meta.grace_period, reduction_factor=meta.reduction_factor)
    resources = {"cpu": meta.cpus_per_trial, "gpu": meta.gpus_per_trial}
    knobs = [k.path for k in space.knobs]
    return tune.Tuner(
        tune.with_resources(kd_trial, resources),
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
                       _make_progress_callback(budget, options, knobs, searcher.optuna_number)],
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
        ),
    )


def search(paths: StudyPaths, meta: StudyMeta, options: RunOptions) -> SearchOutcome:
    """``kdtune search`` of a planned study (``tune.plan.plan_study``): create its folder, then run it."""
    outcome = run_study(paths, meta, budget=meta.num_samples, sampler_seed=meta.seed, options=options, new=True)
    return with_tuned_baseline(outcome, paths, meta, options)


def with_tuned_baseline(outcome: SearchOutcome, paths: StudyPaths, meta: StudyMeta,
                        options: RunOptions) -> SearchOutcome:
    """Run (or finish) the study's CE-only baseline search once its own trials are all done."""
    if meta.tune_baseline <= 0 or outcome.interrupted:
        return outcome
    from tune.reference import tuned_baseline

    try:
        with driver_lock(paths):  # it writes this study's reference table
            base = tuned_baseline(paths, meta, options)
    except KeyboardInterrupt:
        outcome.interrupted = True
        return outcome
    outcome.interrupted = base.interrupted
    outcome.extra["tuned_baseline"] = base.to_dict()
    outcome.seconds += base.seconds
    return outcome
