"""A study's tables and metadata, read from ``DIR/NAME/results`` for the analysis (no Ray, no journal).

Works on a running, interrupted or finished study: every table may be partial, hold only PRUNED trials, or
hold no rows at all; a column an older kdtune did not write reads as all-null, and the sections built on it
say "not recorded". Accuracies stay fractions in 0..1 here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from results.asha import AshaSettings
from results.errors import ResultsError
from results.reader import metadata_path, read_metadata, read_table, results_dir
from results.schema import TABLES, param_column
from results.writer import table_path

STUDY_FILE = "study.json"  # the study's own record beside results/ (written by tune.study; read here as JSON)
DEFAULT_OBJECTIVE = {"metric": "inner_acc", "mode": "max"}

# Columns a study of an older kdtune may lack (student_params, projector_params, head, holdout_class_acc,
# params, classes) read as all-null here, and the sections built on them say "not recorded".
_TRIAL_COLUMNS = ("trial_id", "number", "status", "inner_acc_mean", "inner_acc_std", "holdout_acc_mean",
                  "holdout_acc_std", "inner_loss_mean", "holdout_loss_mean", "best_epoch", "epochs_run",
                  "iterations", "student_params", "projector_params", "head")
_EPOCH_COLUMNS = ("trial_id", "number", "iteration", "epoch", "inner_acc_mean", "holdout_acc_mean")
_SEED_COLUMNS = ("trial_id", "seed", "inner_acc", "holdout_acc", "holdout_class_acc")
_REFERENCE_COLUMNS = ("method", "seed", "trial_number", "inner_acc", "holdout_acc", "params", "classes",
                      "holdout_class_acc")


@dataclass(frozen=True)
class StudyData:
    """A study's tables and metadata as read from ``DIR/NAME/results`` (tables may be empty)."""

    root: Path
    name: str
    metadata: dict[str, Any]
    trials: pd.DataFrame
    epochs: pd.DataFrame
    seeds: pd.DataFrame
    reference: pd.DataFrame
    tables: dict[str, Path]
    asha: AshaSettings | None = None
    planned: int | None = None
    space: Any = None  # search_spaces.SearchSpace, or None when the stored space text no longer parses
    notes: list[str] = field(default_factory=list)

    @property
    def objective(self) -> dict[str, str]:
        objective = self.metadata.get("objective") or {}
        return {"metric": str(objective.get("metric", DEFAULT_OBJECTIVE["metric"])),
                "mode": str(objective.get("mode", DEFAULT_OBJECTIVE["mode"]))}

    @property
    def objective_column(self) -> str:
        return f"{self.objective['metric']}_mean"

    @property
    def maximize(self) -> bool:
        return self.objective["mode"] != "min"

    def param_columns(self) -> dict[str, str]:
        """``{column: knob path}`` for every parameter column of the trials table, in knob order."""
        present = [c for c in self.trials.columns if str(c).startswith("param_")]
        known = {param_column(k.path): k.path for k in self.space.knobs} if self.space is not None else {}
        ordered = [c for c in known if c in present] + [c for c in present if c not in known]
        return {c: known.get(c, c.removeprefix("param_").replace("__", ".")) for c in ordered}


def load_study(study_dir: str | os.PathLike[str]) -> StudyData:
    """Read every table of the study at ``study_dir``; ResultsError if it is not a study with tables."""
    root = Path(study_dir).expanduser()
    if not root.is_dir():
        raise ResultsError(f"no study at {root} (not a folder); give the study folder DIR/NAME")
    if root.name == "results" and not results_dir(root).is_dir() and metadata_path(root.parent).is_file():
        raise ResultsError(f"{root} is the tables folder of a study; give the study folder {root.parent}")
    if not results_dir(root).is_dir():
        raise ResultsError(f"{root} is not a kdtune study with results (no results/ folder in it); "
                           "give the study folder DIR/NAME that `kdtune search` created")
    metadata = read_metadata(root)
    root = root.resolve()
    paths = {t: table_path(results_dir(root), t) for t in TABLES}
    tables = {t: p for t, p in paths.items() if p.exists()}  # a folder, or an older kdtune's file
    if not tables:
        raise ResultsError(f"{root} has no tables yet (no table in {results_dir(root)}); "
                           "the study has recorded nothing so far")
    frames = {t: read_table(root, t) for t in TABLES}
    notes: list[str] = []
    space = _parse_space(metadata.get("space"), notes)
    asha, planned = _study_record(root)
    study = StudyData(
        root=root, name=str(metadata.get("study") or root.name), metadata=metadata,
        trials=_with_columns(frames["trials"], _TRIAL_COLUMNS),
        epochs=_with_columns(frames["epochs"], _EPOCH_COLUMNS),
        seeds=_with_columns(frames["seeds"], _SEED_COLUMNS),
        reference=_with_columns(frames["reference"], _REFERENCE_COLUMNS),
        tables=tables, asha=asha, planned=planned, space=space, notes=notes,
    )
    if study.objective_column not in study.trials.columns:
        study.trials[study.objective_column] = np.nan
    return study


def _with_columns(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """The frame with every column the analysis reads (all-null where a missing table had none)."""
    frame = frame.copy()
    for column in columns:
        if column not in frame.columns:
            frame[column] = pd.Series(np.nan, index=frame.index, dtype="float64")
    return frame


def _parse_space(text: Any, notes: list[str]) -> Any:
    if not isinstance(text, str) or not text.strip():
        notes.append("the metadata holds no search space: knob names are read from the column names")
        return None
    from search_spaces import SpaceError, parse_space

    try:
        return parse_space(text, source="metadata:space")
    except SpaceError as exc:
        notes.append(f"the stored search space no longer parses ({exc}); knob names are read from the "
                     "column names and importance is not computed")
        return None


def _study_record(root: Path) -> tuple[AshaSettings | None, int | None]:
    """ASHA settings and the planned number of trials, from ``DIR/NAME/study.json`` when it is readable."""
    path = root / STUDY_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, None
    planned = record.get("num_samples")
    planned = int(planned) if isinstance(planned, int) and planned > 0 else None
    try:
        asha = AshaSettings(int(record["grace_period"]), int(record["reduction_factor"]),
                            int(record["max_t"]), record.get("asha_counts") or None)
    except (KeyError, TypeError, ValueError):
        return None, planned
    valid = asha.grace_period >= 1 and asha.reduction_factor >= 2 and asha.max_t >= asha.grace_period
    return (asha if valid else None), planned
