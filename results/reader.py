"""Reading a study's tables (pandas), with or without Ray installed, while it runs or after."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from results.errors import ResultsError
from results.schema import TABLES
from results.writer import META_FILE, table_path


def results_dir(study_dir: str | Path) -> Path:
    return Path(study_dir) / "results"


def read_table(study_dir: str | Path, table: str) -> pd.DataFrame:
    """One table as a DataFrame; an empty frame if the study has no rows in it yet."""
    if table not in TABLES:
        raise ResultsError(f"unknown table {table!r}; the tables are {list(TABLES)}")
    path = table_path(results_dir(study_dir), table)
    if not path.exists():
        return pd.DataFrame()
    try:
        return pq.read_table(path).to_pandas()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a damaged file
        raise ResultsError(f"{path} is not a readable Parquet table ({exc})") from None


def read_metadata(study_dir: str | Path) -> dict[str, Any]:
    path = results_dir(study_dir) / META_FILE
    if not path.exists():
        raise ResultsError(f"{study_dir} has no results yet (no {path.relative_to(Path(study_dir))})")
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except ValueError as exc:
        raise ResultsError(f"{path} is damaged ({exc})") from None
    return data
