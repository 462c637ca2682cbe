"""``results.writer.StudyTables``: tables as folders of parts, read alike by pandas, pyarrow, DuckDB, polars.

Every test writes real tables with synthetic rows (no Ray): appends, replaced trials, compaction, the
single-file layout of an older kdtune, a reader running while the writer works, a write killed midway.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from results.reader import read_metadata, read_table
from results.schema import METADATA_KEY, param_column, trials_schema
from results.writer import LEGACY_META_FILE, META_FILE, StudyTables, part_name, table_path

PARAMS = [("kd.alpha", pa.float64()), ("student.optimizer", pa.string())]
EPOCHS = 4
KEYS = {"trials": ["trial_id"], "epochs": ["trial_id", "iteration"], "seeds": ["trial_id", "seed"],
        "reference": ["method", "seed"]}


def rows(n: int, acc: float = 0.5) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Trial ``t<n>``: its trials row, EPOCHS epoch rows and two seed rows; ``acc`` tells versions apart.
    Per class (three classes), class 2 has no holdout sample (null) for seed 1."""
    ids = {"study": "s", "trial_id": f"t{n:03d}", "number": n}
    trial = {**ids, "status": "COMPLETE", "error": None, param_column("kd.alpha"): 0.1 * n,
             param_column("student.optimizer"): "adam", "inner_acc_mean": acc, "holdout_acc_mean": acc,
             "epochs_run": EPOCHS, "iterations": EPOCHS, "student_params": 1000 + n, "device": "cpu"}
    epochs = [{**ids, "iteration": i, "epoch": i, "inner_acc_mean": acc} for i in range(1, EPOCHS + 1)]
    seeds = [{**ids, "seed": s, "inner_acc": acc, "holdout_acc": acc,
              "holdout_class_acc": [acc, 1.0, None if s else 0.25]} for s in (0, 1)]
    return trial, epochs, seeds


def reference(method: str, acc: float, classes: list[int] | None = None) -> list[dict[str, Any]]:
    classes = [0, 1, 2] if classes is None else classes
    return [{"study": "s", "method": method, "seed": s, "inner_acc": acc, "holdout_acc": acc, "params": 292,
             "classes": classes, "holdout_class_acc": [acc] * len(classes)} for s in (0, 1)]


def new_tables(results: Path) -> StudyTables:
    return StudyTables(results, PARAMS, {"study": "s"})


def read_all_ways(path: Path) -> dict[str, pd.DataFrame]:
    """The table at ``path`` as pandas, pyarrow.dataset, DuckDB and polars read it, each as a DataFrame."""
    pattern = f"{path}/*.parquet"
    return {
        "pandas": pd.read_parquet(path),
        "pyarrow": ds.dataset(path, format="parquet").to_table().to_pandas(),
        "duckdb": duckdb.connect().read_parquet(pattern).df(),
        "polars": pl.read_parquet(pattern).to_pandas(),
    }


LISTS = {"seeds": ["holdout_class_acc"], "reference": ["classes", "holdout_class_acc"]}


def plain(cell: Any) -> tuple[Any, ...] | None:
    """A list cell as each reader returns it (numpy array, masked array, None, pd.NA) as a tuple of Python
    numbers with None for a null element; None for a null cell."""
    if cell is None or cell is pd.NA or (isinstance(cell, float) and np.isnan(cell)):
        return None
    values = np.ma.masked_invalid(np.ma.asarray(cell, dtype=float))
    return tuple(None if masked else float(v) for v, masked in zip(values.data, np.ma.getmaskarray(values)))


def assert_readers_agree(results: Path, table: str, expected: int) -> pd.DataFrame:
    """Every reader gives ``expected`` rows, the same rows (list columns too), and no key twice; the rows,
    sorted by key."""
    frames = read_all_ways(table_path(results, table))
    keys = KEYS[table]
    columns = keys + ["inner_acc" if table in ("seeds", "reference") else "inner_acc_mean"]
    sorted_rows = {}
    for name, frame in frames.items():
        assert len(frame) == expected, (name, len(frame))
        assert not frame.duplicated(keys).any(), (name, frame[frame.duplicated(keys, keep=False)])
        ordered = frame.sort_values(keys)
        cells = [[plain(c) for c in ordered[column]] for column in LISTS.get(table, [])]
        sorted_rows[name] = [(*r, *(c[i] for c in cells))
                             for i, r in enumerate(ordered[columns].itertuples(index=False))]
    assert all(r == sorted_rows["pandas"] for r in sorted_rows.values()), sorted_rows
    return frames["pyarrow"].sort_values(keys).reset_index(drop=True)


def table_files(results: Path, table: str) -> list[Path]:
    return sorted(table_path(results, table).resolve().glob("*.parquet"))


# ------------------------------------------------------------------------------------------------ layout

def test_appends_replacements_and_compaction_read_the_same_everywhere(tmp_path: Path) -> None:
    results = tmp_path / "results"
    tables = new_tables(results)
    tables.write_metadata()
    for n in range(5):
        tables.record_trial(*rows(n))
    tables.record_trial(*rows(2, acc=0.9))  # a retried trial: its part is replaced
    tables.append("reference", reference("baseline", 0.7))
    tables.replace_method(reference("ablation", 0.6), "ablation")
    tables.replace_method(reference("ablation", 0.8), "ablation")
    tables.compact()
    assert [f.name for f in table_files(results, "trials")] == ["g1-compacted.parquet"]
    for n in range(5, 8):
        tables.record_trial(*rows(n))
    tables.record_trial(*rows(1, acc=0.95))  # lives in the compacted file: a new generation without it
    tables.record_trial(*rows(6, acc=0.85))  # a part of the current generation

    trials = assert_readers_agree(results, "trials", 8)
    epochs = assert_readers_agree(results, "epochs", 8 * EPOCHS)
    assert_readers_agree(results, "seeds", 8 * 2)
    ref = assert_readers_agree(results, "reference", 4)
    by_id = dict(zip(trials["trial_id"], trials["inner_acc_mean"]))
    assert (by_id["t001"], by_id["t002"], by_id["t006"], by_id["t007"]) == (0.95, 0.9, 0.85, 0.5)
    assert set(epochs.loc[epochs["trial_id"] == "t001", "inner_acc_mean"]) == {0.95}
    assert sorted(zip(ref["method"], ref["inner_acc"])) == [("ablation", 0.8)] * 2 + [("baseline", 0.7)] * 2
    assert tables.trial_ids() == {f"t{n:03d}" for n in range(8)}
    assert tables.methods() == {"baseline", "ablation"}
    assert len(read_table(tmp_path, "epochs")) == 8 * EPOCHS


def test_the_results_folder_opens_as_one_dataset_of_each_table_once(tmp_path: Path) -> None:
    results = tmp_path / "results"
    tables = new_tables(results)
    tables.write_metadata()
    for n in range(3):
        tables.record_trial(*rows(n))
    tables.append("reference", reference("baseline", 0.7))
    tables.compact()
    tables.record_trial(*rows(3))
    # A '.'- or '_'-prefixed name is skipped by discovery (the generation folders, _study.json), the
    # symlinks are followed: every file is seen once, through its table's name.
    whole = ds.dataset(results, format="parquet")
    per_table = {t: ds.dataset(table_path(results, t), format="parquet").count_rows() for t in KEYS}
    assert per_table == {"trials": 4, "epochs": 4 * EPOCHS, "seeds": 8, "reference": 2}
    assert whole.count_rows() == sum(per_table.values())
    assert all(Path(f).relative_to(results).parts[0] in {f"{t}.parquet" for t in KEYS} for f in whole.files)
    assert (results / META_FILE).is_file() and read_metadata(tmp_path) == {"study": "s"}


def test_every_file_has_the_full_schema_and_the_study_metadata(tmp_path: Path) -> None:
    results = tmp_path / "results"
    tables = new_tables(results)
    trial, epochs, seeds = rows(0)
    tables.record_trial({k: v for k, v in trial.items() if k != "device"}, epochs, seeds)  # a column left out
    tables.compact()
    tables.record_trial(*rows(1))
    for table, schema in (("trials", trials_schema(PARAMS)), ("epochs", tables.schemas["epochs"])):
        for path in table_files(results, table):
            file_schema = pq.read_schema(path)
            assert file_schema.remove_metadata() == schema, path
            assert json.loads(file_schema.metadata[METADATA_KEY]) == {"study": "s"}


def test_dropped_trials_leave_every_table_wherever_their_rows_were(tmp_path: Path) -> None:
    results = tmp_path / "results"
    tables = new_tables(results)
    for n in range(4):
        tables.record_trial(*rows(n))
    tables.compact()
    tables.record_trial(*rows(4))
    tables.drop_trials({"t001", "t004"})  # one in the compacted file, one a part
    assert tables.trial_ids() == {"t000", "t002", "t003"}
    epochs = assert_readers_agree(results, "epochs", 3 * EPOCHS)
    assert set(epochs["trial_id"]) == {"t000", "t002", "t003"}


def test_part_names_stay_unique_for_ids_unsafe_in_file_names() -> None:
    names = {part_name("g0", tid) for tid in ("a/b", "a_b", "a.b", "a b", "x" * 300)}
    assert len(names) == 5
    assert all("/" not in n and len(n) < 200 and n.endswith(".parquet") for n in names)
    assert part_name("g3", "abc_00001") == "g3-trial-abc_00001.parquet"


# ------------------------------------------------------------------------------------ older kdtune studies

def test_single_file_tables_of_an_older_kdtune_are_read_then_migrate_without_losing_a_row(tmp_path: Path
                                                                                         ) -> None:
    results = tmp_path / "results"
    results.mkdir()
    old = new_tables(tmp_path / "scratch")
    for table, made in (("trials", [rows(n)[0] for n in range(3)]),
                        ("epochs", [r for n in range(3) for r in rows(n)[1]])):
        data = old._table(table, made)
        data = data.drop_columns(["device"]) if table == "trials" else data  # written before that column
        pq.write_table(data, table_path(results, table))
    (results / LEGACY_META_FILE).write_text(json.dumps({"study": "s"}))
    assert len(read_table(tmp_path, "trials")) == 3 and read_metadata(tmp_path) == {"study": "s"}

    tables = new_tables(results)
    assert tables.trial_ids() == {"t000", "t001", "t002"}  # reading changes nothing
    assert table_path(results, "trials").is_file()
    tables.record_trial(*rows(3))
    tables.record_trial(*rows(1, acc=0.9))  # a trial of the old file written again
    tables.write_metadata()

    assert table_path(results, "trials").is_symlink() and table_path(results, "epochs").is_symlink()
    trials = assert_readers_agree(results, "trials", 4)
    assert_readers_agree(results, "epochs", 4 * EPOCHS)
    assert dict(zip(trials["trial_id"], trials["inner_acc_mean"]))["t001"] == 0.9
    assert trials.set_index("trial_id")["device"].isna().to_dict() == {
        "t000": True, "t001": False, "t002": True, "t003": False}
    assert not (results / LEGACY_META_FILE).exists() and read_metadata(tmp_path) == {"study": "s"}
    ds.dataset(results, format="parquet").to_table()  # no study.json among the tables any more


def test_a_table_copied_as_a_plain_folder_is_adopted(tmp_path: Path) -> None:
    results = tmp_path / "results"
    tables = new_tables(results)
    for n in range(3):
        tables.record_trial(*rows(n))
    link = table_path(results, "trials")
    target = link.resolve()
    link.unlink()
    os.rename(target, link)  # what a copy that follows symlinks leaves
    tables = new_tables(results)
    tables.record_trial(*rows(1, acc=0.9))
    tables.record_trial(*rows(3))
    assert link.is_symlink()
    trials = assert_readers_agree(results, "trials", 4)
    assert dict(zip(trials["trial_id"], trials["inner_acc_mean"]))["t001"] == 0.9


# ------------------------------------------------------------------------------------ readers and crashes

def test_a_concurrent_reader_sees_each_trial_once_and_never_fewer(tmp_path: Path) -> None:
    results = tmp_path / "results"
    tables = new_tables(results)
    tables.record_trial(*rows(0))
    done = threading.Event()
    seen: list[tuple[int, int]] = []
    problems: list[str] = []
    swapped_away = 0

    def reader() -> None:
        nonlocal swapped_away
        while not done.is_set():
            try:
                trials, epochs = read_table(tmp_path, "trials"), read_table(tmp_path, "epochs")
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                problems.append(f"read_table: {exc!r}")
                continue
            if trials["trial_id"].duplicated().any() or epochs.duplicated(["trial_id", "iteration"]).any():
                problems.append(f"duplicates after {len(trials)} trials")
            if seen and (len(trials) < seen[-1][0] or len(epochs) < seen[-1][1]):
                problems.append(f"went back from {seen[-1]} to {(len(trials), len(epochs))}")
            seen.append((len(trials), len(epochs)))
            try:  # through the symlink, as a user's tool reads: a swap may surface as FileNotFoundError
                raw = pq.read_table(table_path(results, "trials"))
                if len(set(raw["trial_id"].to_pylist())) != raw.num_rows:
                    problems.append("duplicates through the symlink")
            except FileNotFoundError:
                swapped_away += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(1, 100):
            tables.record_trial(*rows(n))
            if n % 25 == 0:
                tables.compact()
                tables.record_trial(*rows(n - 10, acc=0.9))  # in the compacted file: a new generation
    finally:
        done.set()
        thread.join()
    assert not problems, problems[:5]
    assert len(seen) > 5, "the reader should have read many times while the writer worked"
    assert_readers_agree(results, "trials", 100)
    assert_readers_agree(results, "epochs", 100 * EPOCHS)


def test_a_write_killed_midway_leaves_only_complete_files(tmp_path: Path) -> None:
    results = tmp_path / "results"
    tables = new_tables(results)
    for n in range(3):
        tables.record_trial(*rows(n))
    gen = table_path(results, "trials").resolve()
    # What kill -9 during a write leaves: half a temporary file beside the parts, and a temporary symlink.
    whole = (gen / part_name("g0", "t000")).read_bytes()
    (gen / f".{part_name('g0', 't003')}.x1y2z3.tmp").write_bytes(whole[: len(whole) // 2])
    os.symlink(gen.name, results / ".trials.link.tmp")
    assert_readers_agree(results, "trials", 3)

    tables = new_tables(results)  # the study resumes
    tables.record_trial(*rows(3))
    assert_readers_agree(results, "trials", 4)
    tables.compact()
    assert [p.name for p in table_path(results, "trials").resolve().iterdir()] == ["g1-compacted.parquet"]
    assert_readers_agree(results, "trials", 4)


def test_a_generation_written_but_never_swapped_in_is_not_read_and_is_removed(tmp_path: Path) -> None:
    results = tmp_path / "results"
    tables = new_tables(results)
    for n in range(2):
        tables.record_trial(*rows(n))
    orphan = results / ".trials.g7"  # killed after writing a new generation, before the swap
    orphan.mkdir()
    pq.write_table(tables._table("trials", [rows(n)[0] for n in range(5)]), orphan / "g7-compacted.parquet")
    assert_readers_agree(results, "trials", 2)
    tables.compact()
    assert not orphan.exists()
    assert_readers_agree(results, "trials", 2)


def test_a_first_generation_killed_before_its_symlink_is_picked_up(tmp_path: Path) -> None:
    results = tmp_path / "results"
    new_tables(results).record_trial(*rows(0))
    table_path(results, "trials").unlink()  # as if killed between the folder and the symlink
    tables = new_tables(results)
    tables.record_trial(*rows(1))
    assert os.readlink(table_path(results, "trials")) == ".trials.g0"
    assert_readers_agree(results, "trials", 2)


@pytest.mark.parametrize("name", [META_FILE, LEGACY_META_FILE])
def test_metadata_is_read_under_either_name(tmp_path: Path, name: str) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / name).write_text(json.dumps({"study": name}))
    assert read_metadata(tmp_path) == {"study": name}


def test_reference_rows_of_an_older_kdtune_survive_its_first_change(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    tables = new_tables(results)
    pq.write_table(tables._table("reference", reference("baseline", 0.8)), table_path(results, "reference"))
    tables.replace_method(reference("ablation", 0.7), "ablation")
    tables.append("reference", reference("tuned_baseline", 0.75))
    frame = assert_readers_agree(results, "reference", 6)
    assert set(frame["method"]) == {"baseline", "ablation", "tuned_baseline"}


def test_a_dangling_table_link_is_an_error_not_an_empty_table(tmp_path: Path) -> None:
    from results.errors import ResultsError

    results = tmp_path / "results"
    tables = new_tables(results)
    tables.record_trial(*rows(0))
    for gen in results.glob(".trials.g*"):  # what `cp -r results/*` leaves: the links, not the hidden folders
        for f in gen.iterdir():
            f.unlink()
        gen.rmdir()
    with pytest.raises(ResultsError, match="copy the results folder whole"):
        read_table(tmp_path, "trials")
    with pytest.raises(ResultsError, match="copy the results folder whole"):
        tables.record_trial(*rows(1))


def test_a_generation_superseded_moments_ago_stays_for_its_readers(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from results import writer

    results = tmp_path / "results"
    tables = new_tables(results)
    tables.record_trial(*rows(0))
    first = table_path(results, "trials").resolve()
    for n in (1, 2, 3):  # three quick swaps: g0 is two generations back, superseded a moment ago
        tables.record_trial(*rows(n))
        tables.compact()
    assert first.is_dir(), "removed while a reader that resolved the link before the swaps may be listing it"
    monkeypatch.setattr(writer, "KEEP_SUPERSEDED_S", 0.0)
    tables.record_trial(*rows(4))
    tables.compact()
    names = sorted(p.name for p in results.glob(".trials.g*"))
    assert first.name not in names and len(names) == 2, names  # the current and the previous one
    assert_readers_agree(results, "trials", 5)


# ------------------------------------------------------------------------------ task columns (issue 9)

NEW_COLUMNS = {"trials": {"student_params": pa.int64()}, "seeds": {"holdout_class_acc": pa.list_(pa.float64())},
               "reference": {"params": pa.int64(), "classes": pa.list_(pa.int64()),
                             "holdout_class_acc": pa.list_(pa.float64())}}


def test_the_task_columns_are_typed_and_every_reader_reads_the_lists(tmp_path: Path) -> None:
    results = tmp_path / "results"
    tables = new_tables(results)
    for n in range(3):
        tables.record_trial(*rows(n))
    trial, epochs, seeds = rows(3)
    # A PRUNED trial reports neither its size nor per-class accuracies: null cells.
    tables.record_trial({**trial, "status": "PRUNED", "student_params": None}, epochs,
                        [{k: v for k, v in s.items() if k != "holdout_class_acc"} for s in seeds])
    tables.append("reference", reference("baseline", 0.7) + reference("teacher_1", 0.9, classes=[2, 0]))
    for table, columns in NEW_COLUMNS.items():
        schema = pq.read_schema(table_files(results, table)[0])
        assert {name: schema.field(name).type for name in columns} == columns, table

    seed_rows = assert_readers_agree(results, "seeds", 8)  # the list cells too, null elements and cells
    assert [plain(c) for c in seed_rows["holdout_class_acc"]][:2] == [(0.5, 1.0, 0.25), (0.5, 1.0, None)]
    assert seed_rows["holdout_class_acc"].iloc[-1] is None
    ref = assert_readers_agree(results, "reference", 4)
    teacher = ref[ref["method"] == "teacher_1"].iloc[0]
    assert list(teacher["classes"]) == [2, 0] and teacher["params"] == 292
    frames = read_all_ways(table_path(results, "trials"))
    for name, frame in frames.items():
        by_id = frame.set_index("trial_id")["student_params"]
        assert by_id[["t000", "t002"]].tolist() == [1000, 1002] and pd.isna(by_id["t003"]), name
    assert pl.read_parquet(f"{table_path(results, 'seeds')}/*.parquet").schema["holdout_class_acc"] == \
        pl.List(pl.Float64)
    # SQL engines take the lists as lists: DuckDB's mean over a cell skips its null element.
    means = duckdb.sql(f"SELECT seed, list_avg(holdout_class_acc) AS m FROM '{table_path(results, 'seeds')}/*.parquet' "
                       "WHERE trial_id = 't000' ORDER BY seed").fetchall()
    assert means == [(0, pytest.approx((0.5 + 1.0 + 0.25) / 3)), (1, pytest.approx(0.75))]


def _older(tables: StudyTables) -> StudyTables:
    """The same tables as the kdtune before the task columns wrote them."""
    for table, columns in NEW_COLUMNS.items():
        schema = tables.schemas[table]
        tables.schemas[table] = pa.schema([f for f in schema if f.name not in columns])
    return tables


def test_tables_of_the_kdtune_before_the_task_columns_gain_them_as_null(tmp_path: Path) -> None:
    results = tmp_path / "results"
    old = _older(new_tables(results))
    for n in range(3):
        old.record_trial(*rows(n))
    old.compact()
    old.record_trial(*rows(3))  # a part beside the compacted file, both without the new columns
    old.append("reference", reference("baseline", 0.7))
    assert "student_params" not in pq.read_schema(table_files(results, "trials")[0]).names
    assert "student_params" not in read_table(tmp_path, "trials").columns  # read as it is, untouched

    tables = new_tables(results)  # this kdtune resumes the study
    tables.record_trial(*rows(4))  # a new part: the old files are rewritten in the full schema first
    tables.append("reference", reference("ablation", 0.6))
    for table in ("trials", "epochs", "seeds", "reference"):
        for path in table_files(results, table):  # no generation mixes two schemas (polars would refuse it)
            assert pq.read_schema(path).remove_metadata() == tables.schemas[table], (table, path.name)
    assert_readers_agree(results, "trials", 5)
    tables.record_trial(*rows(1, acc=0.9))  # a trial of the old compacted file written again
    trials = assert_readers_agree(results, "trials", 5)
    sizes = dict(zip(trials["trial_id"], trials["student_params"]))
    assert pd.isna(sizes["t000"]) and pd.isna(sizes["t003"]) and (sizes["t001"], sizes["t004"]) == (1001, 1004)
    seeds = assert_readers_agree(results, "seeds", 10)
    cells = {(t, s): plain(c) for t, s, c in zip(seeds["trial_id"], seeds["seed"], seeds["holdout_class_acc"])}
    assert cells[("t000", 0)] is None and cells[("t004", 1)] == (0.5, 1.0, None)
    ref = assert_readers_agree(results, "reference", 4)
    assert ref.set_index("method")["params"].isna().groupby(level=0).all().to_dict() == {
        "ablation": False, "baseline": True}
    assert len(read_table(tmp_path, "epochs")) == 5 * EPOCHS


SIMKD_COLUMNS = {"projector_params": pa.int64(), "head": pa.string()}  # trials (issue: SimKD sizes and heads)


def test_trials_of_the_kdtune_before_simkd_gain_projector_and_head_as_null(tmp_path: Path) -> None:
    results = tmp_path / "results"
    old = new_tables(results)
    old.schemas["trials"] = pa.schema([f for f in old.schemas["trials"] if f.name not in SIMKD_COLUMNS])
    for n in range(2):
        old.record_trial(*rows(n))
    old.compact()
    old.record_trial(*rows(2))  # a part beside the compacted file, both without the new columns
    assert "head" not in read_table(tmp_path, "trials").columns

    tables = new_tables(results)
    trial, epochs, seeds = rows(3)
    tables.record_trial({**trial, "projector_params": 250, "head": "teacher classifier (reused, frozen)"},
                        epochs, seeds)
    schema = tables.schemas["trials"]
    assert {name: schema.field(name).type for name in SIMKD_COLUMNS} == SIMKD_COLUMNS
    for path in table_files(results, "trials"):
        assert pq.read_schema(path).remove_metadata() == schema, path.name
    trials = assert_readers_agree(results, "trials", 4).set_index("trial_id")
    assert trials.loc["t003", "projector_params"] == 250 and trials.loc["t003", "head"].startswith("teacher")
    assert trials.loc[["t000", "t002"], ["projector_params", "head"]].isna().all().all()
    assert trials["student_params"].tolist() == [1000, 1001, 1002, 1003]  # kept
