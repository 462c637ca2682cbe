"""Turning trial results into the study's Parquet rows: live (a Tune callback) or from the Optuna study.

``trial_rows`` is the one place a row is made. The callback feeds it each trial's last result as the trial
ends; ``rows_from_optuna`` feeds it what the searcher stored on the Optuna trial (``RECORDED_KEYS``), which
is how ``kdtune resume`` rebuilds the rows of a trial that Optuna saw end but the driver died before writing.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from ray import tune

from results.schema import class_acc_cell, param_column
from results.writer import StudyTables
from tune.searcher import (
    AT_KEY,
    EVAL_KEY,
    METRICS,
    STARTED_KEY,
    PruneAwareOptunaSearch,
    evaluations,
    trial_status,
)
from tune.trial_log import TrialLog


def _num(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _sample_std(values: list[float]) -> float | None:
    """Sample std (ddof=1) over seeds; None below two seeds (one seed has no spread: kdtune's one rule,
    ``results.stats.sample_std``)."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def utc(seconds: Any) -> dt.datetime | None:
    """Unix seconds as an aware UTC datetime (None stays None)."""
    return None if seconds is None else dt.datetime.fromtimestamp(float(seconds), dt.UTC)


def epoch_row(ids: dict[str, Any], step: int, metrics: dict[str, Any], started_at: dt.datetime | None
              ) -> dict[str, Any]:
    """The epochs-table row of one evaluation (``iteration`` is its number, 1, 2, ...); it spans the time
    from ``started_at`` (the previous evaluation, or the trial's start) to its own ``at``."""
    return {**ids, "iteration": step, "epoch": int(metrics.get("epoch", 0)),
            **{f"{m}_mean": _num(metrics.get(m)) for m in METRICS},
            "started_at": started_at, "ended_at": utc(metrics.get(AT_KEY))}


def trial_rows(ids: dict[str, Any], status: str, error: str | None, params: dict[str, Any], knobs: list[str],
               result: dict[str, Any], epochs: list[dict[str, Any]]
               ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The trial row, its epoch rows and its seed rows, from the trial's last result."""
    epochs = list(epochs)
    if status == "COMPLETE" and epochs:
        # The final result carries the selected (best-weights) metrics; the curve keeps the last evaluation.
        epochs[-1] = {**epochs[-1], **{f"{m}_mean": _num(result.get(f"last_{m}", epochs[-1][f"{m}_mean"]))
                                       for m in METRICS}}
    row: dict[str, Any] = {**ids, "status": status, "error": error}
    row.update({param_column(path): params.get(path) for path in knobs})
    row.update({f"{m}_mean": _num(result.get(m)) for m in METRICS})
    row.update({
        "inner_acc_std": _num(result.get("inner_acc_std")), "holdout_acc_std": _num(result.get("holdout_acc_std")),
        "best_epoch": _num(result.get("best_epoch")),
        "epochs_run": int(result["epoch"]) if result.get("epoch") is not None else None,
        "iterations": int(result[EVAL_KEY] if EVAL_KEY in result else result.get("training_iteration") or 0) or None,
        "student_params": int(result["student_params"]) if result.get("student_params") is not None else None,
        "projector_params": _projector(result),
        "head": result.get("head"),
        "wall_seconds": _num(result.get("trial_seconds", result.get("time_total_s"))),
        "teacher_cache_hit": result.get("teacher_cache_hit"),
        "node": result.get("node"), "hostname": result.get("hostname"), "device": result.get("device"),
        "started_at": utc(result.get(STARTED_KEY)),
        "ended_at": utc(result.get(AT_KEY)) or (epochs[-1]["ended_at"] if epochs else None),
    })
    if row["inner_acc_std"] is None and result.get("seed_inner_acc"):
        row["inner_acc_std"] = _sample_std(result["seed_inner_acc"])
        row["holdout_acc_std"] = _sample_std(result.get("seed_holdout_acc") or [])
    if result.get("per_seed"):
        seeds = [{**ids, "seed": s["seed"], "inner_acc": s["inner_acc"], "holdout_acc": s["holdout_acc"],
                  "inner_loss": s["inner_loss"], "holdout_loss": s["holdout_loss"], "best_epoch": s["best_epoch"],
                  "holdout_class_acc": class_acc_cell(s.get("holdout_class_acc"))}
                 for s in result["per_seed"]]
    else:
        inner, holdout = result.get("seed_inner_acc") or [], result.get("seed_holdout_acc") or []
        seeds = [{**ids, "seed": s, "inner_acc": inner[i] if i < len(inner) else None,
                  "holdout_acc": holdout[i] if i < len(holdout) else None,
                  "inner_loss": None, "holdout_loss": None, "best_epoch": None}
                 for i, s in enumerate(result.get("seeds") or [])]
    return row, epochs, seeds


def _projector(result: dict[str, Any]) -> int | None:
    """SimKD's projector parameters from the result's ``params_detail`` (None for a method without one)."""
    detail = result.get("params_detail")
    value = detail.get("projector") if isinstance(detail, dict) else None
    return None if value is None else int(value)


OPTUNA_STATUS = {"COMPLETE": "COMPLETE", "PRUNED": "PRUNED", "FAIL": "ERROR"}


def rows_from_optuna(study: str, trial: Any, knobs: list[str]
                     ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Rebuild a finished Optuna trial's rows from its user attributes and intermediate values."""
    attrs = dict(trial.user_attrs)
    ids = {"study": study, "trial_id": attrs.get("ray_trial_id", f"optuna-{trial.number}"), "number": trial.number}
    status = OPTUNA_STATUS[trial.state.name]
    error = None
    if status == "ERROR":
        error = attrs.get("trial_error") or attrs.get("error") or "error message lost: the driver stopped first"
    epochs = [{**ids, "iteration": int(step), "epoch": None, "inner_acc_mean": float(value),
               "inner_loss_mean": None, "holdout_acc_mean": None, "holdout_loss_mean": None,
               "started_at": None, "ended_at": None}
              for step, value in sorted(trial.intermediate_values.items())]
    row, epochs, seeds = trial_rows(ids, status, error, dict(trial.params), knobs, attrs, epochs)
    # Optuna's own clock (naive local time) where the trainable's stamps were not kept.
    row["started_at"] = row["started_at"] or _aware(trial.datetime_start)
    row["ended_at"] = _aware(trial.datetime_complete) or row["ended_at"]
    return row, epochs, seeds


def _aware(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.astimezone()).astimezone(dt.UTC)


def _error_message(trial: Any) -> str:
    """The last line of the trial's traceback (the exception and its message)."""
    path = getattr(trial, "error_file", None)
    try:
        if path and Path(path).is_file():
            lines = [ln for ln in Path(path).read_text().strip().splitlines() if ln.strip()]
            if lines:
                return lines[-1].strip()[:2000]
    except OSError:
        pass
    return "the trial failed (no message recorded)"


class ResultsRecorder(tune.Callback):
    """Collects each trial's per-evaluation results and writes its rows when it ends (COMPLETE, PRUNED, ERROR)."""

    def __init__(self, tables: StudyTables, searcher: PruneAwareOptunaSearch, study: str, metric: str,
                 knobs: list[str], study_dir: Path) -> None:
        self.tables = tables
        self.study_dir = study_dir
        self.searcher = searcher
        self.study = study
        self.metric = metric
        self.knobs = knobs
        self._epochs: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def trial_dir(self, trial_id: str) -> Path:
        return self.study_dir / f"t_{trial_id}"

    def _ids(self, trial_id: str) -> dict[str, Any]:
        return {"study": self.study, "trial_id": trial_id, "number": self.searcher.optuna_number(trial_id)}

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any) -> None:
        rows = self._epochs[trial.trial_id]
        for step, metrics in evaluations(result):
            while rows and rows[-1]["iteration"] >= step:  # a retried trial starts over
                rows.pop()
            since = rows[-1]["ended_at"] if rows else utc(result.get(STARTED_KEY))
            rows.append(epoch_row(self._ids(trial.trial_id), step, metrics, since))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._record(trial, error=False)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._record(trial, error=True)

    def _record(self, trial: Any, *, error: bool) -> None:
        result = dict(trial.last_result or {})
        tid = trial.trial_id
        status = trial_status(result, error, self.metric)
        message = (result.get("trial_error") or _error_message(trial)) if status == "ERROR" else None
        params = {k: v for k, v in (trial.config or {}).items() if k in self.knobs}
        rows = trial_rows(self._ids(tid), status, message, params, self.knobs, result, self._epochs.pop(tid, []))
        self.tables.record_trial(*rows)
        log = TrialLog(self.trial_dir(tid))
        log.line(f"recorded by the driver as {status}" + (f": {message}" if message else "")
                 + f" (Optuna trial {rows[0]['number']}, {rows[0]['iterations'] or 0} evaluations)")
        log.close()
