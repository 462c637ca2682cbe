"""A table cell as a plain Python value: what the analysis reads out of pandas rows and Parquet lists.

Nullable columns hand back numpy scalars, ``pd.NA``, NaN for null and floats for integer knobs; list cells
come back as arrays. These functions turn each into the JSON value the summary holds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd


def plain(value: Any) -> Any:
    """A plain Python scalar, or None for null / NaN."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def text(value: Any) -> str | None:
    """A cell as a string, or None for null."""
    value = plain(value)
    return None if value is None else str(value)


def knob_value(value: Any, knob: Any) -> Any:
    """Undo what a nullable column did to a value: integer knobs read back as floats."""
    kind = getattr(knob, "kind", None)
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind == "categorical":
        for choice in knob.choices:
            if isinstance(choice, bool) == isinstance(value, bool) and choice == value:
                return choice
    return value


def list_cell(value: Any) -> list[Any] | None:
    """A list cell as a Python list (None elements for nulls and NaN); None for a null or absent cell."""
    if value is None or isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        return None
    return [plain(v) for v in value]


def first_list(values: pd.Series) -> list[Any] | None:
    """The first list cell of a column that holds one."""
    return next((c for c in map(list_cell, values) if c is not None), None)


def first_int(values: pd.Series) -> int | None:
    """The first numeric cell of a column, as an int."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    return int(v.iloc[0]) if len(v) else None


def seed_accuracies(rows: pd.DataFrame, column: str = "holdout_acc") -> dict[int, float]:
    """``{seed: accuracy}`` of seeds or reference rows (rows without a value left out)."""
    rows = rows[["seed", column]].dropna()
    return {int(s): float(a) for s, a in zip(rows["seed"], rows[column])}
