"""Writing a study's tables: each table a folder of Parquet files, appended to at a cost that does not grow.

Layout of ``DIR/NAME/results/`` (``trials`` shown; ``epochs``, ``seeds`` and ``reference`` alike)::

    _study.json                    the study's metadata (also in every Parquet file, key ``kdtune.study``)
    trials.parquet -> .trials.g7   a symlink to the table's current generation
    .trials.g7/g7-compacted.parquet      every row up to the generation's start (maybe none)
    .trials.g7/g7-trial-<id>.parquet     one part per trial recorded since
    .trials.g6/                    the previous generation, kept for a reader that listed it before the swap
                                   (older ones stay a minute after they were superseded)

Recording a trial writes its part (a '.'-prefixed ``.tmp`` file renamed into place), so it costs the same
for the first trial and the ten-thousandth. In a live generation a file is only ever added or replaced
whole, never removed, and a trial's rows are in one file: its part, or the compacted file. Writing a trial
again (a retried or resumed trial) replaces its part; when its rows are in the compacted file instead, a
new generation without them is written and the symlink swapped (``os.replace``), as ``compact()`` and every
change to the small ``reference`` table do. Hence the reader guarantee: a reader that lists a generation
sees each row exactly once. Every file name carries its generation, so a reader that lists through the
symlink and opens a file after a swap gets FileNotFoundError (retry) rather than a mix of two generations;
``results.reader.read_table`` resolves the symlink and reads one generation. Trials are written last: a
trial in ``trials`` always has its ``epochs`` and ``seeds`` rows. pyarrow's dataset discovery skips names
that start with '.' or '_', so ``pyarrow.dataset.dataset("DIR/NAME/results")`` sees each table once.

A study written by an older kdtune (each table one Parquet file, metadata in ``study.json``) is read as it
is and turned into this layout on its first write. A table whose files lack columns this kdtune added
(``results.schema``) is read as it is too, and on its first write rewritten as a new generation in the full
schema, the new columns null, so that no generation mixes two schemas (pandas and DuckDB would read the
columns of one file only, polars refuses the folder).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from kdcore import replacing, write_atomic
from results.errors import ResultsError
from results.schema import METADATA_KEY, TABLES, fixed_schema, trials_schema

META_FILE = "_study.json"
KEEP_SUPERSEDED_S = 60.0  # a superseded generation (beyond the previous one) stays this long for readers
LEGACY_META_FILE = "study.json"  # an older kdtune's name, beside the tables (read, and removed on rewrite)
PER_TRIAL = ("trials", "epochs", "seeds")
_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def table_path(results_dir: Path, table: str) -> Path:
    """What readers open: a symlink to the current generation folder, or an older kdtune's single file."""
    return results_dir / f"{table}.parquet"


def part_name(generation: str, trial_id: str) -> str:
    """``g7-trial-<id>.parquet``; an id with characters unsafe in a file name gets a hash to stay unique."""
    safe = _SAFE.sub("_", trial_id)[:100]
    if safe != trial_id:
        safe += "~" + hashlib.sha1(trial_id.encode()).hexdigest()[:10]
    return f"{generation}-trial-{safe}.parquet"


def _compacted_name(generation: str) -> str:
    return f"{generation}-compacted.parquet"


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
        self._bulk: dict[Path, set[str]] = {}  # generation folder -> trial ids in its compacted file
        self._checked: set[Path] = set()  # generation folders known to hold only files of the full schema

    def write_metadata(self) -> None:
        """The study's metadata as ``_study.json`` beside the tables (also inside every Parquet file)."""
        write_atomic(self.root / META_FILE,
                     json.dumps(self.metadata, indent=2, sort_keys=True, default=str).encode())
        # An older kdtune's copy: a non-Parquet file among the tables that pyarrow's discovery would read.
        (self.root / LEGACY_META_FILE).unlink(missing_ok=True)

    def append(self, table: str, rows: list[dict[str, Any]], *, replace_trial: str | None = None) -> None:
        """Add ``rows`` to ``table``; with ``replace_trial``, first drop that trial's earlier rows."""
        new = self._table(table, rows)
        if table not in PER_TRIAL:
            self._new_generation(table, lambda old: pa.concat_tables([old, new]))
            return
        parts = self._by_trial(table, new)
        gen = self._generation(table)
        if replace_trial is not None:
            parts.setdefault(replace_trial, new.slice(0, 0))
            if replace_trial in self._bulk_ids(gen):
                # Rare (a trial retried or resumed after a compaction): dropping its rows from the compacted
                # file in place would leave a moment with none or two copies of them, so swap generations.
                self._new_generation(table, _without({replace_trial}), parts)
                return
        for tid, part in parts.items():
            path = gen / part_name(_number(gen), tid)
            exists = path.exists()
            if tid != replace_trial and exists:
                part = pa.concat_tables([self._conform(pq.read_table(path), table), part])
            elif not exists and part.num_rows == 0:
                continue
            self._write(path, part)

    def record_trial(self, trial: dict[str, Any], epochs: list[dict[str, Any]], seeds: list[dict[str, Any]]) -> None:
        """One finished trial: its epoch and seed rows first, then its trial row."""
        tid = trial["trial_id"]
        self.append("epochs", epochs, replace_trial=tid)
        self.append("seeds", seeds, replace_trial=tid)
        self.append("trials", [trial], replace_trial=tid)

    def replace_method(self, rows: list[dict[str, Any]], method: str) -> None:
        """Replace every reference row of ``method`` with ``rows`` (the ablation when the best trial changes)."""
        new = self._table("reference", rows)
        self._new_generation("reference", lambda old: pa.concat_tables(
            [old.filter(pc.not_equal(old["method"], method)), new]))

    def drop_trials(self, trial_ids: set[str]) -> None:
        """Remove every row of these trials from every per-trial table (trials first, then its details)."""
        if not trial_ids:
            return
        for table in PER_TRIAL:
            gen = self._existing(table)
            if gen is None:
                continue
            if trial_ids & self._bulk_ids(gen):
                self._new_generation(table, _without(trial_ids))
                continue
            for tid in trial_ids:
                path = gen / part_name(_number(gen), tid)
                if path.exists():  # emptied, not removed: a reader that listed it can still open it
                    self._write(path, self.schemas[table].empty_table())

    def compact(self) -> None:
        """Merge each table's files into one, in a new generation swapped in atomically.

        Reading a table of thousands of parts is slow: the runner calls this at the end of a study and on
        resume. A table already held in one file is left as it is.
        """
        for table in TABLES:
            gen = self._existing(table)
            if gen is not None and os.listdir(gen) != [_compacted_name(_number(gen))]:
                self._new_generation(table, lambda old: old)

    def methods(self) -> set[str]:
        """The reference methods recorded so far."""
        rows = self._read("reference", ["method"])
        return set(rows["method"].to_pylist()) if rows is not None else set()

    def trial_ids(self) -> set[str]:
        rows = self._read("trials", ["trial_id"])
        return set(rows["trial_id"].to_pylist()) if rows is not None else set()

    def has_rows(self, table: str) -> bool:
        path = table_path(self.root, table)
        if not path.exists():
            return False
        files = [path] if path.is_file() else _files(path.resolve())
        return any(pq.read_metadata(f).num_rows > 0 for f in files)

    # --- rows and files ---------------------------------------------------------------------------------

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

    def _by_trial(self, table: str, rows: pa.Table) -> dict[str, pa.Table]:
        """``rows`` split by trial id, in order of first appearance."""
        ids = rows["trial_id"].to_pylist()
        if None in ids:
            missing = ids.count(None)
            raise ResultsError(f"every row of table {table!r} needs a trial_id, but {missing} have none")
        unique = list(dict.fromkeys(ids))
        if len(unique) == 1:
            return {unique[0]: rows}
        return {tid: rows.filter(pc.equal(rows["trial_id"], tid)) for tid in unique}

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

    def _read(self, table: str, columns: list[str]) -> pa.Table | None:
        path = table_path(self.root, table)
        return pq.read_table(path.resolve(), columns=columns) if path.exists() else None

    def _write(self, path: Path, rows: pa.Table) -> None:
        rows = rows.replace_schema_metadata({**(rows.schema.metadata or {}), **self._kv})
        try:
            with replacing(path) as tmp:
                pq.write_table(rows, tmp)
        except OSError as exc:
            # pyarrow's error names neither the file nor (as an attribute) the errno: say which file failed,
            # keeping the errno, so the command line can name the path and the cause in one line.
            code = exc.errno or _errno_in(str(exc))
            if code is None or exc.filename:
                raise
            raise OSError(code, os.strerror(code), str(path)) from exc

    # --- generations ------------------------------------------------------------------------------------

    def _existing(self, table: str) -> Path | None:
        """The table's current generation folder (an older layout made one first); None before any write."""
        link = table_path(self.root, table)
        if link.is_symlink():
            if not link.exists():
                raise ResultsError(dangling_message(link))
            gen = self.root / os.readlink(link)
            # Written by an older kdtune (fewer columns): rewritten whole, so every file has the full schema.
            return gen if self._conformant(table, gen) else self._new_generation(table, lambda old: old)
        if link.is_file():  # an older kdtune's single file
            rows = self._conform(pq.read_table(link), table)
            return self._new_generation(table, lambda old: old, start=rows)
        if link.is_dir():  # a copy that followed the symlink
            return self._new_generation(table, lambda old: old, start=self._read_files(link, table))
        # Killed between a first generation and its symlink: that generation is complete.
        done = [g for g in self._generations(table) if (g / _compacted_name(_number(g))).exists()]
        if done:
            self._point(table, done[-1])
            return done[-1]
        return None

    def _conformant(self, table: str, gen: Path) -> bool:
        """Whether every file of a generation has the table's schema; checked once per generation and
        writer (the files this writer adds have it), so an append's cost stays independent of the study."""
        if gen in self._checked:
            return True
        schema = self.schemas[table]
        if all(pq.read_schema(f).remove_metadata() == schema for f in _files(gen)):
            self._checked.add(gen)
            return True
        return False

    def _generation(self, table: str) -> Path:
        gen = self._existing(table)
        return gen if gen is not None else self._new_generation(table, lambda old: old)

    def _bulk_ids(self, gen: Path) -> set[str]:
        """Trial ids in a generation's compacted file (read once per generation: the file never changes)."""
        if gen not in self._bulk:
            path = gen / _compacted_name(_number(gen))
            ids = pa.array([], pa.string())
            if path.exists():
                ids = pq.read_table(path, columns=["trial_id"])["trial_id"]
            self._bulk[gen] = set(pc.unique(ids).to_pylist())
        return self._bulk[gen]

    def _new_generation(self, table: str, change: Callable[[pa.Table], pa.Table],
                        parts: dict[str, pa.Table] | None = None, *, start: pa.Table | None = None) -> Path:
        """Write ``change(every row)`` as a new generation's compacted file, and ``parts``; swap it in.

        ``start``, the rows of an older layout, stands in for the current generation's rows.
        """
        link = table_path(self.root, table)
        if start is None and not link.is_symlink() and link.exists():
            self._existing(table)  # an older layout: adopt its rows first, never start from nothing
        previous = self.root / os.readlink(link) if link.is_symlink() else None
        if start is None:
            start = self._read_files(previous, table) if previous else self.schemas[table].empty_table()
        rows = change(start)
        gen = self._next_generation(table)
        gen.mkdir()
        self._write(gen / _compacted_name(_number(gen)), rows)
        for tid, part in (parts or {}).items():
            if part.num_rows:
                self._write(gen / part_name(_number(gen), tid), part)
        if "trial_id" in rows.column_names:
            self._bulk[gen] = set(pc.unique(rows["trial_id"]).to_pylist())
        self._checked.add(gen)
        self._point(table, gen)
        self._remove_old_generations(table, keep={gen, previous})
        return gen

    def _remove_old_generations(self, table: str, keep: set[Path | None]) -> None:
        """Delete what no reader needs: a generation never swapped in (numbered between the previous and
        the current one: a write killed before its swap) at once; one superseded before the previous one
        when ``KEEP_SUPERSEDED_S`` have passed since, so that a reader that resolved the symlink just
        before two quick swaps still finds its files (pyarrow reads a vanished folder as an empty table,
        without an error). Never ``keep`` (the current and the previous generation)."""
        current, previous = (max(int(_number(g)[1:]) for g in keep if g is not None),
                             min(int(_number(g)[1:]) for g in keep if g is not None))
        generations = self._generations(table)
        now = time.time()
        for old, newer in itertools.pairwise(generations):
            number = int(_number(old)[1:])
            if old in keep or number > current:
                continue
            if number < previous:
                try:
                    superseded = (newer / _compacted_name(_number(newer))).stat().st_mtime
                except OSError:
                    continue
                if now - superseded <= KEEP_SUPERSEDED_S:
                    continue
            shutil.rmtree(old, ignore_errors=True)
            self._bulk.pop(old, None)
            self._checked.discard(old)

    def _read_files(self, folder: Path, table: str) -> pa.Table:
        """Every row of a folder of parts in the current schema (an older file's missing column is null)."""
        # Compacted file first, then parts in the order they were written: rows keep their recording order.
        files = sorted(_files(folder), key=lambda p: (not p.name.endswith("-compacted.parquet"),
                                                       p.stat().st_mtime_ns, p.name))
        try:
            dataset = ds.dataset([str(f) for f in files], schema=self.schemas[table], format="parquet")
            return dataset.to_table()
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ResultsError(f"{folder} holds rows that do not fit table {table!r}: {exc}") from None

    def _generations(self, table: str) -> list[Path]:
        pattern = re.compile(rf"\.{re.escape(table)}\.g(\d+)")
        found = [p for p in self.root.iterdir() if pattern.fullmatch(p.name) and p.is_dir()] \
            if self.root.is_dir() else []
        return sorted(found, key=lambda p: int(_number(p)[1:]))

    def _next_generation(self, table: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        existing = self._generations(table)
        number = int(_number(existing[-1])[1:]) + 1 if existing else 0
        return self.root / f".{table}.g{number}"

    def _point(self, table: str, gen: Path) -> None:
        """Swap the table's symlink to ``gen`` in one rename: a reader sees the old generation or the new."""
        link = table_path(self.root, table)
        aside = None
        if link.is_dir() and not link.is_symlink():  # a rename cannot replace a folder: move it aside first
            aside = self.root / f".{table}.copy.tmp"
            shutil.rmtree(aside, ignore_errors=True)
            os.rename(link, aside)
        tmp = self.root / f".{table}.link.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(gen.name, tmp)  # relative: the study folder can be moved or copied (cp -a, rsync -a)
        os.replace(tmp, link)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)


def dangling_message(link: Path) -> str:
    return (f"{link} points to {os.readlink(link)}, which is missing: the table's rows live in the hidden "
            f"folders .{link.name.removesuffix('.parquet')}.g<N>/ beside it, which a copy that skipped hidden "
            "names left out; copy the results folder whole (cp -a, rsync -a)")


def _number(gen: Path) -> str:
    """``g7`` for the generation folder ``.trials.g7``."""
    return gen.name.rsplit(".", 1)[1]


def _without(trial_ids: set[str]) -> Callable[[pa.Table], pa.Table]:
    drop = pa.array(sorted(trial_ids), pa.string())
    return lambda rows: rows.filter(pc.invert(pc.is_in(rows["trial_id"], value_set=drop)))


def _files(folder: Path) -> list[Path]:
    """The Parquet files of a table folder, without the '.'-prefixed temporary files of a killed write."""
    return [folder / n for n in os.listdir(folder) if n.endswith(".parquet") and not n.startswith((".", "_"))]


def _errno_in(text: str) -> int | None:
    """The errno pyarrow writes into its messages ("[Errno 28] Error writing bytes ..."), if any."""
    found = re.search(r"\[errno (\d+)\]", text, re.IGNORECASE)
    return int(found.group(1)) if found else None
