"""Reading a study's tables (pandas), with or without Ray installed, while it runs or after.

Each table ``results/<table>.parquet`` is a symlink to a folder of Parquet files (see ``results.writer``),
or, in a study of an older kdtune, one Parquet file; both read here. A table is read from the one generation
folder its symlink points to at the moment of reading, so the rows come from one snapshot: each row once,
never half of a write, whatever the writer is doing. Other tools read the same folder::

    pd.read_parquet("DIR/NAME/results/trials.parquet")
    pyarrow.dataset.dataset("DIR/NAME/results/trials.parquet")
    duckdb.sql("FROM 'DIR/NAME/results/trials.parquet/*.parquet'")
    polars.read_parquet("DIR/NAME/results/trials.parquet/*.parquet")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from results.errors import ResultsError
from results.schema import TABLES
from results.writer import LEGACY_META_FILE, META_FILE, dangling_message, table_path

_TRIES = 3  # the writer keeps superseded generations a while (KEEP_SUPERSEDED_S): a retry reads a kept one


def results_dir(study_dir: str | Path) -> Path:
    return Path(study_dir) / "results"


def read_table(study_dir: str | Path, table: str) -> pd.DataFrame:
    """One table as a DataFrame; an empty frame if the study has no rows in it yet."""
    if table not in TABLES:
        raise ResultsError(f"unknown table {table!r}; the tables are {list(TABLES)}")
    path = table_path(results_dir(study_dir), table)
    for _ in range(_TRIES):
        if not path.exists():
            if path.is_symlink():
                raise ResultsError(dangling_message(path))
            return pd.DataFrame()
        source = path.resolve()  # one generation, even if the writer swaps the symlink meanwhile
        try:
            return pq.read_table(source).to_pandas()
        except FileNotFoundError as exc:
            if path.resolve() == source:  # a file went missing, not a generation swap
                raise ResultsError(f"{path} is not a readable Parquet table ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a damaged file
            raise ResultsError(f"{path} is not a readable Parquet table ({exc})") from None
    raise ResultsError(f"{path} changed {_TRIES} times while being read (the study is compacting); "
                       "read it again")

def metadata_path(study_dir: str | Path) -> Path:
    """``results/_study.json``, or an older kdtune's ``results/study.json`` when only that exists."""
    new = results_dir(study_dir) / META_FILE
    legacy = results_dir(study_dir) / LEGACY_META_FILE
    return legacy if not new.exists() and legacy.exists() else new


def read_metadata(study_dir: str | Path) -> dict[str, Any]:
    path = metadata_path(study_dir)
    if not path.exists():
        raise ResultsError(f"{study_dir} has no results yet (no {path.relative_to(Path(study_dir))})")
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except ValueError as exc:
        raise ResultsError(f"{path} is damaged ({exc})") from None
    return data
