"""The Tune callback that turns trial results into the study's Parquet rows as each trial ends."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from ray import tune

from results.schema import param_column, param_type
from results.writer import StudyTables
from tune.searcher import PruneAwareOptunaSearch, trial_status


def space_param_types(space: Any) -> list[tuple[str, Any]]:
    """(knob path, arrow type) for every knob of a search space, in order."""
    return [(k.path, param_type(k.kind, getattr(k, "choices", ()))) for k in space.knobs]


def _error_message(trial: Any) -> str:
    """The last line of the trial's traceback (the exception and its message)."""
    path = getattr(trial, "error_file", None) or getattr(trial, "local_path", None)
    try:
        if path and Path(path).is_file():
            lines = [ln for ln in Path(path).read_text().strip().splitlines() if ln.strip()]
            if lines:
                return lines[-1].strip()[:2000]
    except OSError:
        pass
    error = trial.get_error() if hasattr(trial, "get_error") else None
    return str(error).strip().splitlines()[-1][:2000] if error else "the trial failed (no message recorded)"


def _num(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


class ResultsRecorder(tune.Callback):
    """Collects each trial's per-evaluation results and writes its rows when it ends (COMPLETE, PRUNED, ERROR)."""

    def __init__(self, tables: StudyTables, searcher: PruneAwareOptunaSearch, study: str, metric: str,
                 knobs: list[str]) -> None:
        self.tables = tables
        self.searcher = searcher
        self.study = study
        self.metric = metric
        self.knobs = knobs
        self._epochs: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any) -> None:
        rows = self._epochs[trial.trial_id]
        step = int(result.get("training_iteration", 0))
        while rows and rows[-1]["iteration"] >= step:  # a retried trial starts over
            rows.pop()
        rows.append(self._epoch_row(trial.trial_id, result))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._record(trial, error=False)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._record(trial, error=True)

    def _ids(self, trial_id: str) -> dict[str, Any]:
        return {"study": self.study, "trial_id": trial_id, "number": self.searcher.optuna_number(trial_id)}

    def _epoch_row(self, trial_id: str, result: dict[str, Any]) -> dict[str, Any]:
        return {**self._ids(trial_id), "iteration": int(result.get("training_iteration", 0)),
                "epoch": int(result.get("epoch", 0)),
                **{f"{m}_mean": _num(result.get(m)) for m in ("inner_acc", "inner_loss", "holdout_acc",
                                                              "holdout_loss")}}

    def _record(self, trial: Any, *, error: bool) -> None:
        result = dict(trial.last_result or {})
        tid = trial.trial_id
        epochs = self._epochs.pop(tid, [])
        status = trial_status(result, error, self.metric)
        if status == "COMPLETE" and epochs:
            # The final result carries the selected (best-weights) metrics; the curve keeps the last evaluation.
            epochs[-1] = {**epochs[-1], **{f"{m}_mean": _num(result.get(f"last_{m}", epochs[-1][f"{m}_mean"]))
                                           for m in ("inner_acc", "inner_loss", "holdout_acc", "holdout_loss")}}
        config = trial.config or {}
        row: dict[str, Any] = {**self._ids(tid), "status": status,
                               "error": _error_message(trial) if error else None}
        row.update({param_column(path): config.get(path) for path in self.knobs})
        row.update({
            "inner_acc_mean": _num(result.get("inner_acc")), "inner_acc_std": _num(result.get("inner_acc_std")),
            "holdout_acc_mean": _num(result.get("holdout_acc")),
            "holdout_acc_std": _num(result.get("holdout_acc_std")),
            "inner_loss_mean": _num(result.get("inner_loss")), "holdout_loss_mean": _num(result.get("holdout_loss")),
            "best_epoch": _num(result.get("best_epoch")),
            "epochs_run": int(result["epoch"]) if "epoch" in result else None,
            "iterations": int(result.get("training_iteration", 0)) or None,
            "wall_seconds": _num(result.get("trial_seconds", result.get("time_total_s"))),
            "teacher_cache_hit": result.get("teacher_cache_hit"),
            "node": result.get("node"), "hostname": result.get("hostname"), "device": result.get("device"),
        })
        if status != "COMPLETE" and row["inner_acc_std"] is None and result.get("seed_inner_acc"):
            for key, values in (("inner_acc_std", result["seed_inner_acc"]),
                                ("holdout_acc_std", result.get("seed_holdout_acc") or [])):
                row[key] = _sample_std(values)
        self.tables.record_trial(row, epochs, self._seed_rows(tid, result))

    def _seed_rows(self, trial_id: str, result: dict[str, Any]) -> list[dict[str, Any]]:
        ids = self._ids(trial_id)
        if result.get("per_seed"):
            return [{**ids, "seed": s["seed"], "inner_acc": s["inner_acc"], "holdout_acc": s["holdout_acc"],
                     "inner_loss": s["inner_loss"], "holdout_loss": s["holdout_loss"],
                     "best_epoch": s["best_epoch"]} for s in result["per_seed"]]
        seeds = result.get("seeds") or []
        inner, holdout = result.get("seed_inner_acc") or [], result.get("seed_holdout_acc") or []
        return [{**ids, "seed": s, "inner_acc": inner[i] if i < len(inner) else None,
                 "holdout_acc": holdout[i] if i < len(holdout) else None,
                 "inner_loss": None, "holdout_loss": None, "best_epoch": None} for i, s in enumerate(seeds)]


def _sample_std(values: list[float]) -> float | None:
    if len(values) < 2:
        return 0.0 if values else None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
