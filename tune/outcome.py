"""What a study's Optuna study says about its trials: counts by state, the best trial, and the trials a
stopped driver left RUNNING (ended here as interrupted, their parameters queued to run again).

The Optuna study in ``DIR/NAME/optuna.journal`` is the source of truth for what each trial became; the
outcome printed at the end of a search or resume is read back from it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import TrialState

from tune.study import StudyMeta, StudyPaths, journal_storage, load_optuna_study


@dataclass
class SearchOutcome:
    """What a finished (or stopped) study holds, read from its Optuna study."""

    study_dir: str
    trials: dict[str, int]
    best: dict[str, Any] | None
    interrupted: bool = False
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    budget: int | None = None  # the study's num_samples: what ``trials["total"]`` counts against

    def to_dict(self) -> dict[str, Any]:
        out = {"study": self.study_dir, "trials": self.trials, "best": self.best,
               "interrupted": self.interrupted, "seconds": round(self.seconds, 2), "budget": self.budget}
        if "tuned_baseline" in self.extra:
            out["tuned_baseline"] = self.extra["tuned_baseline"]
        return out


def read_outcome(paths: StudyPaths, meta: StudyMeta) -> SearchOutcome:
    """Counts by state and the best COMPLETE trial, from the Optuna study (the source of truth)."""
    study = load_optuna_study(paths, meta)
    trials = study.get_trials(deepcopy=False)
    counts = trial_counts(trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = None
    if complete:
        bt = study.best_trial
        attrs = bt.user_attrs
        best = {"number": bt.number, "params": bt.params, "inner_acc_mean": attrs.get("inner_acc", bt.value),
                "inner_acc_std": attrs.get("inner_acc_std"), "holdout_acc_mean": attrs.get("holdout_acc"),
                "holdout_acc_std": attrs.get("holdout_acc_std"), "best_epoch_mean": attrs.get("best_epoch")}
    return SearchOutcome(str(paths.root), counts, best, budget=meta.num_samples)


def best_value(study: Any, key: str = "inner_acc") -> float | None:
    """The highest ``key`` (a COMPLETE trial's recorded seed mean, else its value) over every COMPLETE trial
    of the Optuna study, earlier runs included: what the status line starts from on resume."""
    values = [t.user_attrs.get(key, t.value) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    values = [float(v) for v in values if isinstance(v, (int, float))]
    return max(values) if values else None


def counted(paths: StudyPaths, meta: StudyMeta) -> int:
    """How many trials of the study used its budget so far (``trial_counts``' total)."""
    return trial_counts(load_optuna_study(paths, meta).get_trials(deepcopy=False))["total"]


def is_interrupted(trial: Any) -> bool:
    """A trial ``kdtune resume`` found RUNNING after a crash and ended as FAIL (its parameters re-run)."""
    return bool(trial.user_attrs.get("interrupted"))


def end_stale_trials(study: Any, paths: StudyPaths) -> list[int]:
    """End the RUNNING trials of ``study`` (the one in ``paths``) as FAIL (interrupted) and enqueue their
    parameters to run again.

    Optuna's ``Study`` can neither set a finished trial's user attribute nor end a trial without a sampler
    callback and a log line per trial, so this goes through the study's storage API (``BaseStorage``), on a
    storage of its own over the same journal.

    A driver killed while Optuna was recording a trial's suggestions (one journal write per knob) leaves a
    trial with only its first knobs: those are enqueued, and the sampler draws the rest when it reruns; one
    killed before its first knob holds nothing to rerun.
    """
    storage = journal_storage(paths)
    study_id = storage.get_study_id_from_name(study.study_name)
    stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    for t in stale:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, "interrupted", True)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
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
