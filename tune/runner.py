"""Running a study: Ray Tune + PruneAwareOptunaSearch (TPE) + ASHA over the trainable.

The Optuna study in ``DIR/NAME/optuna.journal`` is the source of truth for what each trial became; the
outcome printed at the end is read back from it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tune.errors import KDTuneError
from tune.progress import ProgressLine
from tune.study import StudyMeta, StudyPaths, check_name, driver_lock, journal_storage
from tune.trainable import METRIC, STUDY_KEY, kd_trial


DEFAULT_REDUCTION_FACTOR = 2  # ASHA keeps the better half at its rung (see default_grace)


@dataclass(frozen=True)
class SearchSettings:
    """Everything ``kdtune search`` takes."""

    data: str
    space: str
    name: str
    storage: Path
    num_samples: int
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    address: str | None = None
    seed: int = 0
    grace_period: int | None = None  # None: two thirds of the student's evaluations (``default_grace``)
    reduction_factor: int = DEFAULT_REDUCTION_FACTOR
    max_t: int | None = None
    max_failures: int = 2
    tune_baseline: int = 0
    sampler: str = "tpe"

    def __post_init__(self) -> None:
        check_name(self.name)
        checks = [
            (self.num_samples >= 1, f"--num-samples must be >= 1, but got {self.num_samples}"),
            (self.max_concurrent is None or self.max_concurrent >= 1,
             f"--max-concurrent must be >= 1, but got {self.max_concurrent}"),
            (self.cpus_per_trial > 0, f"--cpus-per-trial must be > 0, but got {self.cpus_per_trial}"),
            (self.gpus_per_trial >= 0, f"--gpus-per-trial must be >= 0, but got {self.gpus_per_trial}"),
            (self.grace_period is None or self.grace_period >= 1,
             f"--grace-period must be >= 1, but got {self.grace_period}"),
            (self.reduction_factor >= 2, f"--reduction-factor must be >= 2, but got {self.reduction_factor}"),
            (self.max_t is None or self.max_t >= (self.grace_period or 1),
             f"`max_t >= grace_period` must hold, but got max_t={self.max_t}, grace_period={self.grace_period}"),
            (self.max_failures >= 0, f"--max-failures must be >= 0, but got {self.max_failures}"),
            (self.tune_baseline >= 0, f"--tune-baseline must be >= 0, but got {self.tune_baseline}"),
            (self.sampler in SAMPLERS, f"--sampler must be one of {list(SAMPLERS)}, but got {self.sampler!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise KDTuneError(message)
        if self.address is not None:
            from tune.cluster import split_address

            split_address(self.address)


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


def max_evaluations(space: Any) -> int:
    """The most evaluations (reports) any trial of ``space`` can make: ASHA's ``max_t``."""
    base = space.base
    knobs = {knob.path: knob for knob in space.knobs}
    epochs = max(base.student.epochs, int(max(knobs["student.epochs"].extremes())) if "student.epochs" in knobs else 0)
    method = knobs.get("kd.method")
    may_anneal = base.kd.method == "annealing" or (method is not None and "annealing" in method.choices)
    anneal = 0
    if may_anneal:
        # Phase 1 lasts kd.anneal_epochs: the knob's top when it is sampled, the fixed value when it is not.
        # A knob sampled whenever the method is annealing (no condition, or only that one) always replaces
        # the fixed value; under any other condition both can occur.
        knob = knobs.get("kd.anneal_epochs")
        if knob is None:
            anneal = base.kd.anneal_epochs
        elif all(c.path == "kd.method" and "annealing" in c.values for c in knob.when):
            anneal = int(max(knob.extremes()))
        else:
            anneal = max(int(max(knob.extremes())), base.kd.anneal_epochs)
    every = base.eval_every
    return math.ceil(epochs / every) + (math.ceil(anneal / every) if anneal else 0) + 2


def _tpe(seed: int) -> Any:
    import optuna

    return optuna.samplers.TPESampler(seed=seed)


def _random(seed: int) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


# The Optuna samplers a study can use: TPE (the point of the service) and random search (its yardstick).
SAMPLERS = {"tpe": _tpe, "random": _random}


def default_grace(space: Any) -> int:
    """ASHA's (only) rung: two thirds of the evaluations of the space's fixed student epochs.

    Measured (``bench/selection.py``, README "Selection and pruning, measured"): Ray's rungs at 20, 60 and
    180 of 200 evaluations stopped 4.1 of a 48-trial study's final top 5 (cyclic and one-cycle schedules
    improve late); a third of the run still lost 2.3; one rung at two thirds, keeping the better half
    (``DEFAULT_REDUCTION_FACTOR``) by best-so-far values, lost 0.3 and ran 80 % of the evaluations.
    """
    base = space.base
    return max(1, 2 * math.ceil(base.student.epochs / base.eval_every) // 3)



def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(dist) for name, dist in
            (("kdtune", "kdtune"), ("torch", "torch"), ("ray", "ray"), ("optuna", "optuna"))}


def plan_study(settings: SearchSettings) -> tuple[StudyPaths, StudyMeta]:
    """Validate every input and describe the study; writes nothing (``run_study`` writes once Ray is up)."""
    from kdcore import data as kdata
    from search_spaces import SpaceError, load_space

    paths = StudyPaths(settings.storage.expanduser().resolve() / settings.name)
    if paths.root.exists() and any(paths.root.iterdir()):
        raise KDTuneError(f"study {paths.root} already exists; continue it with `kdtune resume {paths.root}` "
                          "or choose another --name")
    if paths.storage.exists() and not paths.storage.is_dir():
        raise KDTuneError(f"--storage {paths.storage} is a file, not a folder")
    space = load_space(settings.space)
    if settings.tune_baseline:
        try:
            space.without_kd()
        except SpaceError as exc:
            raise KDTuneError(f"--tune-baseline {settings.tune_baseline}: the space without its kd.* knobs is no "
                              f"search space ({exc})") from None
    spec = settings.data if settings.data.startswith("builtin:") else str(Path(settings.data).resolve())
    dataset = kdata.load(spec)
    max_t = settings.max_t or max_evaluations(space)
    meta = StudyMeta(
        name=settings.name, data=spec, data_source=dataset.source, fingerprint=dataset.fingerprint(),
        space_name=space.name, space_text=space.source_text, num_samples=settings.num_samples,
        seed=settings.seed, max_t=max_t, grace_period=min(settings.grace_period or default_grace(space), max_t),
        reduction_factor=settings.reduction_factor, cpus_per_trial=settings.cpus_per_trial,
        gpus_per_trial=settings.gpus_per_trial, max_concurrent=settings.max_concurrent or 0,
        versions=_versions(), tune_baseline=settings.tune_baseline, sampler=settings.sampler,
    )
    return paths, meta


def _trial_dirname(trial: Any) -> str:
    return f"t_{trial.trial_id}"


def _make_progress_callback(total: int, stream: TextIO | None, quiet: bool) -> Any:
    from ray import tune

    from tune.searcher import trial_status

    class Progress(tune.Callback):
        """One compact status line: trials done / running / pruned / failed and the best so far."""

        def __init__(self) -> None:
            self.line = ProgressLine(stream, enabled=not quiet)
            self.ends: Counter[str] = Counter()
            self.best: float | None = None
            self.start = time.monotonic()

        def _show(self, trials: list[Any], force: bool = False, ended: Any = None) -> None:
            # A trial that is ending may still say RUNNING while its callbacks run: not counted.
            running = sum(1 for t in trials if t.status == "RUNNING" and t is not ended)
            best = f"{100 * self.best:.2f} %" if self.best is not None else "-"
            self.line.update(
                f"trials {sum(self.ends.values())}/{total} done: {self.ends['complete']} complete, "
                f"{self.ends['pruned']} pruned, {self.ends['error']} error; {running} running; "
                f"best inner acc {best}; {time.monotonic() - self.start:.0f} s", force=force)

        def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any) -> None:
            self._show(trials)

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            # The same rule the searcher tells Optuna by: a NaN loss ends the trial without raising, as ERROR.
            result = trial.last_result or {}
            status = trial_status(result, False, METRIC)
            self.ends[status.lower()] += 1
            value = result.get(METRIC)
            if status == "COMPLETE" and value is not None and (self.best is None or value > self.best):
                self.best = float(value)
            self._show(trials, force=True, ended=trial)

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self.ends["error"] += 1
            self._show(trials, force=True, ended=trial)

        def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
            self._show(trials, force=True)
            self.line.done()

    return Progress()


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


def run_study(paths: StudyPaths, meta: StudyMeta, *, budget: int, sampler_seed: int, address: str | None,
              max_failures: int, stream: TextIO | None = None, quiet: bool = False, new: bool = False,
              write_meta: bool = False) -> SearchOutcome:
    """Start (or join) Ray and run ``budget`` more trials of the study with TPE + ASHA; read the outcome back.

    With ``new``, the study folder is created only once Ray is up and can hold a trial (so a search that
    fails before it starts leaves nothing behind), under the driver lock. Without it, the caller holds
    the lock (``kdtune resume`` reconciles the study under it first). ``write_meta`` (``resume --more``):
    ``meta`` changed, and is written at that same point, so a resume that cannot start changes nothing.
    ``meta.references``: train the mixed baseline and the teachers first (unless recorded) and, once the
    trials are done, the ablation of the best trial (off for the CE-only baseline search).
    """
    from search_spaces import parse_space
    from tune import cluster

    handle = cluster.start(address)
    started = time.monotonic()
    interrupted = False
    note: str | None = None
    try:
        if meta.cpus_per_trial > handle.cpus or meta.gpus_per_trial > handle.gpus:
            raise KDTuneError(
                f"impossible resource request: each trial asks for {meta.cpus_per_trial:g} CPU and "
                f"{meta.gpus_per_trial:g} GPU, but the cluster has {handle.cpus:g} CPU and {handle.gpus:g} GPU"
            )
        with driver_lock(paths) if new else contextlib.nullcontext():
            if new or write_meta:
                meta.write(paths)
            space = parse_space(meta.space_text, source=f"{paths.meta}:space")
            tables = _study_tables(paths, meta, space)
            tables.write_metadata()
            if meta.references and "baseline" not in tables.methods():
                _train_reference(paths, meta, tables, stream=stream, quiet=quiet)
            tuner = _build_tuner(paths, meta, space, tables, budget=budget, sampler_seed=sampler_seed,
                                 max_failures=max_failures, stream=stream, quiet=quiet)
            # Tune logs "Trials did not complete" with every trial id; the progress line already counts errors.
            logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
            try:
                tuner.fit()
                # Tune's own SIGINT handler makes fit() return: the ablation waits for a study that is done.
                if meta.references and _counted(paths, meta) >= meta.num_samples:
                    note = _record_ablation(paths, meta, tables, stream=stream, quiet=quiet)
            except KeyboardInterrupt:
                interrupted = True
    finally:
        handle.stop()
    if interrupted or _counted(paths, meta) < meta.num_samples:
        # Stopped early (Ctrl-C): Tune does not tell the searcher about trials it cut off, and their workers
        # are gone now, so end them here rather than leave them RUNNING; `kdtune resume` re-runs them.
        import optuna

        end_stale_trials(optuna.load_study(study_name=meta.name, storage=journal_storage(paths)))
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
    }
    return StudyTables(paths.results, space_param_types(space), metadata)


def _train_reference(paths: StudyPaths, meta: StudyMeta, tables: Any, *, stream: TextIO | None,
                     quiet: bool) -> None:
    """Train the mixed baseline and the teachers once, on the study's seeds, as two Ray tasks.

    The teachers go into the study's teacher cache, so the trials that share the base teacher settings
    never train them; the baseline gives every analysis its "student vs baseline" on equal terms.
    """
    from tune.reference import reference_rows, run_jobs

    done = run_jobs(paths, meta, [("baseline", None), ("teachers", None)],
                    label="training the references (mixed baseline, teachers)", stream=stream, quiet=quiet)
    rows = [row for method, summary in done for row in reference_rows(meta.name, method, summary)]
    tables.append("reference", rows)


def ablation_needed(paths: StudyPaths, meta: StudyMeta, tables: Any) -> Any:
    """The best COMPLETE trial if its ablation is not recorded yet (None when there is nothing to do)."""
    import optuna
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from results.writer import table_path
    from tune.reference import ABLATION

    if not meta.references:
        return None
    study = optuna.load_study(study_name=meta.name, storage=journal_storage(paths))
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return None
    best = study.best_trial
    if ABLATION in tables.methods():
        ref = pq.read_table(table_path(paths.results, "reference"), columns=["method", "trial_number"])
        numbers = ref.filter(pc.equal(ref["method"], ABLATION))["trial_number"].to_pylist()
        if numbers and all(n == best.number for n in numbers):
            return None
    return best


def record_missing_ablation(paths: StudyPaths, meta: StudyMeta, *, address: str | None, stream: TextIO | None,
                            quiet: bool) -> str | None:
    """For a study whose trials are all done: train the ablation if it is missing or of an older best."""
    from search_spaces import parse_space
    from tune import cluster

    tables = _study_tables(paths, meta, parse_space(meta.space_text, source=f"{paths.meta}:space"))
    if ablation_needed(paths, meta, tables) is None:
        return None
    handle = cluster.start(address)
    try:
        return _record_ablation(paths, meta, tables, stream=stream, quiet=quiet)
    finally:
        handle.stop()


def _record_ablation(paths: StudyPaths, meta: StudyMeta, tables: Any, *, stream: TextIO | None,
                     quiet: bool) -> str | None:
    """Retrain the best COMPLETE trial without its KD term (unless its ablation is recorded); a note if not.

    A failure here (the ablation diverged, a worker died) is reported, never fatal: the trials are kept.
    """
    from tune.reference import ABLATION, reference_rows, run_jobs

    best = ablation_needed(paths, meta, tables)
    if best is None:
        return None
    try:
        done = run_jobs(paths, meta, [(ABLATION, dict(best.params))],
                        label=f"ablation: best trial {best.number} without its KD term", stream=stream, quiet=quiet)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - a reference that fails must not cost the study its trials
        last = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        return f"the ablation of trial {best.number} failed: {last[:300]}; `kdtune resume` tries it again"
    tables.replace_method(reference_rows(meta.name, ABLATION, done[0][1], best.number), ABLATION)
    return None


def _build_tuner(paths: StudyPaths, meta: StudyMeta, space: Any, tables: Any, *, budget: int, sampler_seed: int,
                 max_failures: int, stream: TextIO | None, quiet: bool) -> Any:
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
            callbacks=[ResultsRecorder(tables, searcher, meta.name, space.objective.metric,
                                       [k.path for k in space.knobs]),
                       _make_progress_callback(budget, stream, quiet)],
            failure_config=tune.FailureConfig(max_failures=max_failures),
        ),
    )


def search(settings: SearchSettings, *, stream: TextIO | None = None, quiet: bool = False) -> SearchOutcome:
    """``kdtune search``: create the study folder, then run it."""
    paths, meta = plan_study(settings)
    outcome = run_study(paths, meta, budget=meta.num_samples, sampler_seed=meta.seed, address=settings.address,
                        max_failures=settings.max_failures, stream=stream, quiet=quiet, new=True)
    return with_tuned_baseline(outcome, paths, meta, address=settings.address, max_failures=settings.max_failures,
                               stream=stream, quiet=quiet)


def with_tuned_baseline(outcome: SearchOutcome, paths: StudyPaths, meta: StudyMeta, *, address: str | None,
                        max_failures: int, stream: TextIO | None, quiet: bool) -> SearchOutcome:
    """Run (or finish) the study's CE-only baseline search once its own trials are all done."""
    if meta.tune_baseline <= 0 or outcome.interrupted:
        return outcome
    from tune.reference import tuned_baseline

    try:
        with driver_lock(paths):  # it writes this study's reference table
            base = tuned_baseline(paths, meta, address=address, max_failures=max_failures, stream=stream,
                                  quiet=quiet)
    except KeyboardInterrupt:
        outcome.interrupted = True
        return outcome
    outcome.interrupted = base.interrupted
    outcome.extra["tuned_baseline"] = base.to_dict()
    outcome.seconds += base.seconds
    return outcome
