"""OptunaSearch that tells Optuna how a trial really ended.

Ray's stock OptunaSearch tells Optuna COMPLETE with the last reported value when ASHA stops a trial, so a
one-epoch score reaches TPE as if it were a finished trial's. Here:

- every evaluation is reported to the Optuna trial as an intermediate value at its number ``evaluation``
  (a result carries the evaluations since the previous one in ``evals``; see ``evaluations``), including
  those of the result on which the scheduler said STOP, which Tune passes to ``on_trial_complete`` only;
- a trial whose last result carries ``is_final=True`` (the trainable finished: last epoch, or its own early
  stopping) is told COMPLETE with that result's metric;
- any other end without error (ASHA stopped it, the experiment was stopped) is told PRUNED, and Optuna
  keeps its intermediate values;
- a trial that ended in error is told FAIL.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

METRICS = ("inner_acc", "inner_loss", "holdout_acc", "holdout_loss")  # seed means every evaluation carries
FINAL_KEY = "is_final"
EVAL_KEY = "evaluation"  # the number of the (last) evaluation a result stands for: Optuna's step, the epochs table's
# ASHA's time attribute: the number of that evaluation within the phase the objective measures (the method's
# last: annealing KD's phase 2), 0 during earlier phases, so every method is judged at the same point of its
# own schedule (``kdcore.evaluations_before_measured_phase``).
ASHA_KEY = "measured_evaluation"
EVALS_KEY = "evals"  # the evaluations a result carries (since the previous result), oldest first
AT_KEY = "at"  # when an evaluation was made, Unix seconds: the epochs table's ``ended_at``
STARTED_KEY = "started_at"  # when the trial started, Unix seconds
# What ASHA compares: the best seed-mean value of the objective the trial has reached so far, not its value
# at the rung: a stand-in (slightly optimistic: each seed keeps its own best epoch by loss) for what the
# trial would deliver if stopped there, since it keeps its best weights. See README "Selection and pruning".
SCHEDULER_KEY = "best_so_far"
# Result keys kept as Optuna user attributes: with them the Optuna study alone can rebuild a trial's
# Parquet rows, which is what lets ``kdtune resume`` make the tables agree with it after a crash.
RECORDED_KEYS = (
    "epoch", *METRICS, "inner_acc_std", "holdout_acc_std",
    "best_epoch", "epochs_run", "trial_seconds", "teacher_cache_hit", "node", "hostname", "device",
    "seeds", "seed_inner_acc", "seed_holdout_acc", "per_seed", "student_params", "params_detail", "head",
    "trial_error", "training_iteration", EVAL_KEY, AT_KEY, STARTED_KEY,
)
_log = logging.getLogger("kdtune")


def evaluations(result: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """``(evaluation number, metrics)`` for each evaluation a result carries, oldest first.

    A result from ``kd_trial`` carries a block of them in ``evals``; any other result stands for one
    evaluation, numbered by its ``evaluation`` key or else by Tune's ``training_iteration``.
    """
    block = result.get(EVALS_KEY)
    if block is not None:
        return [(int(e[EVAL_KEY]), e) for e in block if e.get(EVAL_KEY)]
    step = result.get(EVAL_KEY, result.get("training_iteration"))
    return [] if step is None else [(int(step), result)]


def trial_status(result: dict[str, Any] | None, error: bool, metric: str) -> str:
    """How a trial ended: COMPLETE (its own last result says so), ERROR, or PRUNED (stopped from outside).

    A trial that raised, or whose trainable reported ``trial_error`` (a loss that became NaN), is ERROR.
    """
    if error or (result and result.get("trial_error")):
        return "ERROR"
    if result and result.get(FINAL_KEY) and result.get(metric) is not None:
        return "COMPLETE"
    return "PRUNED"


_OPTUNA_STATE = {"COMPLETE": TrialState.COMPLETE, "PRUNED": TrialState.PRUNED, "ERROR": TrialState.FAIL}


class PruneAwareOptunaSearch(OptunaSearch):
    """OptunaSearch with truthful trial states (COMPLETE / PRUNED / FAIL) and intermediate values.

    It works on its base class's own state (``_ot_trials``, ``_ot_study``, ``_completed_trials``): Ray 2.60's
    OptunaSearch has no public hook for how a trial's end is told to Optuna, so a subclass is the way in.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_step: dict[str, int] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        params = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            ot_trial.set_user_attr("ray_trial_id", trial_id)
        return params

    def _batch(self) -> contextlib.AbstractContextManager[Any]:
        """The storage's block of writes appended at once (``tune.journal_storage``), where it has one."""
        batch = getattr(self._storage, "batch", None)
        return batch() if batch is not None else contextlib.nullcontext()

    def _report(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id not in self._ot_trials:
            return
        with self._batch():
            self._report_block(trial_id, result)

    def _report_block(self, trial_id: str, result: dict[str, Any]) -> None:
        for step, metrics in evaluations(result):
            value = metrics.get(self.metric)
            if value is None or step <= self._last_step.get(trial_id, 0):
                continue  # a retried trial reports its early steps again: keep the first value
            self._ot_trials[trial_id].report(float(value), step)
            self._last_step[trial_id] = step

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id not in self._completed_trials:
            self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if result:
            self._report(trial_id, result)
        state = _OPTUNA_STATE[trial_status(result, error, self.metric)]
        value = result.get(self.metric) if result and state == TrialState.COMPLETE else None
        ot_trial = self._ot_trials[trial_id]
        if self._ot_study is None:  # set up by OptunaSearch once it has a space; it always has one here
            return
        try:
            if result:
                with self._batch():
                    for key in RECORDED_KEYS:
                        if result.get(key) is not None:
                            ot_trial.set_user_attr(key, result[key])
            self._ot_study.tell(ot_trial, value, state=state)
        except Exception as exc:  # noqa: BLE001 - e.g. a NaN value; bookkeeping must never end the experiment
            _log.warning("could not tell Optuna the end of trial %s: %s", trial_id, exc)
        self._completed_trials.add(trial_id)
        self._last_step.pop(trial_id, None)

    def optuna_number(self, trial_id: str) -> int | None:
        """The Optuna trial number behind a Tune trial id (None if this searcher never proposed it)."""
        ot_trial = self._ot_trials.get(trial_id)
        return None if ot_trial is None else int(ot_trial.number)
