"""How the typed summary of an analysis becomes the JSON of ``kdtune analyse --json``: the one converter.

A dataclass becomes an object of its fields, in order; a type with a ``to_dict`` (the paired test, the
importance) is converted by it; a field marked ``FLATTEN`` spreads its object's keys into its parent's; one
marked ``NOT_IN_JSON`` is only for rendering. NaN and infinities become null, numpy scalars plain numbers,
tuples lists, paths strings.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

FLATTEN = {"flatten": True}  # field(metadata=FLATTEN): its object's keys become the parent's
NOT_IN_JSON = {"json": False}  # field(metadata=NOT_IN_JSON): kept for rendering, left out of the JSON


def to_json(value: Any) -> Any:
    """``value`` as plain JSON types (see the module's docstring)."""
    if hasattr(value, "to_dict") and not isinstance(value, (type, pd.DataFrame, pd.Series)):
        return to_json(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            if f.metadata.get("json", True) is False:
                continue
            item = to_json(getattr(value, f.name))
            if f.metadata.get("flatten"):
                out.update(item or {})
            else:
                out[f.name] = item
        return out
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value
