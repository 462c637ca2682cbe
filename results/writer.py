"""Writing a study's tables: one Parquet file per table, replaced atomically on every append.

Each append reads the table, adds the rows, writes a temporary file beside it and renames it into place,
so a reader (or a study killed at any moment) only ever sees a complete file holding every trial recorded
so far, and there is never a part and its compacted copy side by side. A trial written again (a retried or
resumed trial) replaces its earlier rows, so ids stay unique. Trials are written last: a trial that
appears in ``trials`` always has its ``epochs`` and ``seeds`` rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kdcore.atomic_file import replacing, write_atomic
from results.errors import ResultsError
from results.schema import METADATA_KEY, fixed_schema, trials_schema

META_FILE = "study.json"


def table_path(results_dir: Path, table: str) -> Path:
    return results_dir / f"{table}.parquet"


class StudyTables:
    """The tables of one study under ``results_dir``; only the driver of the study writes them."""

    def __init__(self, results_dir: str | Path, params: Sequence[tuple[str, pa.DataType]],
                 metadata: dict[str, Any]) -> None:
        self.root = Path(results_dir)
        self.metadata = metadata
        self.schemas = {"trials": trials_schema(list(params))}
        for table in ("epochs", "seeds", "reference"):
            self.schemas[table] = fixed_schema(table)
        meta_bytes = json.dumps(metadata, sort_keys=True, default=str).encode()
        self._kv = {METADATA_KEY: meta_bytes}

    def write_metadata(self) -> None:
        """The study's metadata as a small JSON beside the tables (also inside every Parquet file)."""
        write_atomic(self.root / META_FILE,
                      json.dumps(self.metadata, indent=2, sort_keys=True, default=str).encode())

    def append(self, table: str, rows: list[dict[str, Any]], *, replace_trial: str | None = None) -> None:
        """Add ``rows`` to ``table``; with ``replace_trial``, first drop that trial's earlier rows."""
        new = self._table(table, rows)
        path = table_path(self.root, table)
        if path.exists():
            old = pq.read_table(path)
            if replace_trial is not None and "trial_id" in old.column_names:
                old = old.filter(pc.not_equal(old["trial_id"], replace_trial))
            new = pa.concat_tables([self._conform(old, table), new])
        self._write(path, new)

    def _table(self, table: str, rows: list[dict[str, Any]]) -> pa.Table:
        schema = self.schemas[table]
        text = {f.name for f in schema if pa.types.is_string(f.type)}
        # A categorical knob of mixed choices (e.g. [64, "auto"]) is a string column: store its text.
        rows = [{k: (str(v) if k in text and v is not None and not isinstance(v, str) else v)
                 for k, v in row.items()} for row in rows]
        try:
            return pa.Table.from_pylist(rows, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ResultsError(f"rows for table {table!r} do not fit its schema: {exc}") from None

    def _conform(self, old: pa.Table, table: str) -> pa.Table:
        """Rows already on disk in this table's schema; a column an older kdtune did not write is null."""
        schema = self.schemas[table]
        if old.schema == schema:
            return old
        columns = [old[f.name] if f.name in old.column_names else pa.nulls(old.num_rows, f.type) for f in schema]
        try:
            return pa.Table.from_arrays(columns, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return pa.Table.from_arrays([c.cast(f.type) for c, f in zip(columns, schema)], schema=schema)

    def replace_method(self, rows: list[dict[str, Any]], method: str) -> None:
        """Replace every reference row of ``method`` with ``rows`` (the ablation when the best trial changes)."""
        path = table_path(self.root, "reference")
        old = pq.read_table(path) if path.exists() else self.schemas["reference"].empty_table()
        old = old.filter(pc.not_equal(old["method"], method)) if old.num_rows else old
        self._write(path, pa.concat_tables([self._conform(old, "reference"), self._table("reference", rows)]))

    def methods(self) -> set[str]:
        """The reference methods recorded so far."""
        path = table_path(self.root, "reference")
        return set(pq.read_table(path, columns=["method"])["method"].to_pylist()) if path.exists() else set()

    def drop_trials(self, trial_ids: set[str]) -> None:
        """Remove every row of these trials from every per-trial table (trials first, then its details)."""
        if not trial_ids:
            return
        for table in ("trials", "epochs", "seeds"):
            path = table_path(self.root, table)
            if path.exists():
                old = pq.read_table(path)
                keep = pc.invert(pc.is_in(old["trial_id"], value_set=pa.array(sorted(trial_ids))))
                self._write(path, old.filter(keep))

    def trial_ids(self) -> set[str]:
        path = table_path(self.root, "trials")
        return set(pq.read_table(path, columns=["trial_id"])["trial_id"].to_pylist()) if path.exists() else set()

    def has_rows(self, table: str) -> bool:
        path = table_path(self.root, table)
        return path.exists() and pq.read_metadata(path).num_rows > 0

    def record_trial(self, trial: dict[str, Any], epochs: list[dict[str, Any]], seeds: list[dict[str, Any]]) -> None:
        """One finished trial: its epoch and seed rows first, then its trial row."""
        tid = trial["trial_id"]
        self.append("epochs", epochs, replace_trial=tid)
        self.append("seeds", seeds, replace_trial=tid)
        self.append("trials", [trial], replace_trial=tid)

    def _write(self, path: Path, table: pa.Table) -> None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **self._kv})
        with replacing(path) as tmp:
            pq.write_table(table, tmp)
