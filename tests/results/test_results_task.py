"""What the tables record about a study's task and models: the plan's ``StudyMeta.task``, the metadata's
``task`` and ``models``, and the rows the recorder and the references make of a summary's classes, sizes and
per-class accuracies (no Ray cluster: the row makers and the metadata are called directly)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from kdcore import parameter_count
from results.reader import read_metadata, read_table
from results.schema import METADATA_KEY
from search_spaces import load_space
from tune.plan import SearchSettings, plan_study
from tune.study import StudyMeta, StudyPaths

SUBSETS = [[0, 6, 8, 9], [1, 4, 7], [2, 3, 5]]


def _plan(tmp_path: Path, space: str = "digits-subsets", data: str = "builtin:digits",
          name: str = "s") -> tuple[StudyPaths, StudyMeta]:
    return plan_study(SearchSettings(data=data, space=space, name=name, storage=tmp_path, num_samples=2))


def test_the_plan_records_the_task_the_data_made_of_the_space(tmp_path: Path) -> None:
    paths, meta = _plan(tmp_path)
    assert meta.input_shape == [1, 8, 8]
    task = meta.task
    assert task is not None
    assert (task["routing"], task["n_classes"], task["n_groups"], task["shared_classes"]) == ("label", 10, 1, [])
    assert [t["classes"] for t in task["teachers"]] == SUBSETS
    assert [t["name"] for t in task["teachers"]] == ["teacher_0", "teacher_1", "teacher_2"]
    assert task["teachers"][0]["model"]["name"] == "cnn" and task["teachers"][0]["model"]["width"] == 2
    paths.root.mkdir(parents=True)
    meta.write(paths)
    assert StudyMeta.read(paths) == meta  # round-trips through study.json
    _, overlap = _plan(tmp_path, "digits-overlap", name="overlap")
    assert overlap.task is not None and overlap.task["shared_classes"] == [0, 4, 7]
    _, domains = _plan(tmp_path, "smoke", "builtin:d0.5", name="domains")
    assert domains.task is not None and domains.task["routing"] == "group" and domains.input_shape == [2]
    assert [(t["group"], t["classes"]) for t in domains.task["teachers"]] == [(0, [0, 1]), (1, [0, 1]), (2, [0, 1])]


def test_a_study_record_of_an_older_kdtune_reads_without_task(tmp_path: Path) -> None:
    paths, meta = _plan(tmp_path)
    paths.root.mkdir(parents=True)
    record = json.loads(meta.to_json())
    del record["task"], record["input_shape"]
    paths.meta.write_text(json.dumps(record))
    old = StudyMeta.read(paths)
    assert old.task is None and old.input_shape is None and old.fingerprint == meta.fingerprint


def test_the_table_metadata_names_the_task_and_each_model_with_its_size(tmp_path: Path) -> None:
    from tune.tables import study_tables as _study_tables

    paths, meta = _plan(tmp_path)
    space = load_space("digits-subsets")
    tables = _study_tables(paths, meta, space)
    tables.write_metadata()
    tables.append("reference", [{"study": "s", "method": "baseline", "seed": 0, "inner_acc": 0.9,
                                 "holdout_acc": 0.9}])
    stored = read_metadata(paths.root)
    in_file = json.loads(pq.read_schema(next(paths.results.glob(".reference.g*/*.parquet"))).metadata[METADATA_KEY])
    assert stored == in_file and stored["task"] == meta.task
    models = stored["models"]
    assert set(models) == {"baseline", "teacher", "student"}
    cnn = {"name": "cnn", "hidden": [20, 10], "batch_norm": True, "channels": [16, 32], "depth": 8}
    base = space.base
    assert models["baseline"] == {**cnn, "width": 1, "params": parameter_count(base.baseline.model_spec, (1, 8, 8), 10)}
    assert models["student"]["params"] == models["baseline"]["params"]  # the same CNN: the width is a knob
    teacher = base.teacher.model_spec
    assert models["teacher"] == {**cnn, "width": 2,
                                 "params": [parameter_count(teacher, (1, 8, 8), len(c)) for c in SUBSETS]}
    assert models["teacher"]["params"][0] > models["teacher"]["params"][1]  # four outputs, then three

    older = StudyMeta(**{**json.loads(meta.to_json()), "task": None, "input_shape": None})
    metadata = _study_tables(paths, older, space).metadata
    assert metadata["task"] is None and metadata["models"] is None


def _summary(classes: list[int], per_class: list[list[float | None]], params: int) -> dict[str, Any]:
    """What ``kdcore.result.FitResult.summary`` gives (the keys the rows read)."""
    return {"classes": classes, "params": params, "per_seed": [
        {"seed": s, "inner_acc": 0.9, "holdout_acc": 0.8, "inner_loss": 0.3, "holdout_loss": 0.4, "best_epoch": 7,
         "holdout_class_acc": accs} for s, accs in zip((0, 10), per_class)]}


def test_rows_carry_sizes_classes_and_per_class_accuracy_into_the_tables(tmp_path: Path) -> None:
    from tune.recorder import trial_rows
    from tune.reference import reference_rows
    from tune.tables import study_tables as _study_tables

    paths, meta = _plan(tmp_path)
    tables = _study_tables(paths, meta, load_space("digits-subsets"))
    teacher = _summary([2, 3, 5], [[0.9, None, 1.0], [0.8, 0.7, 0.6]], 19108)
    baseline = _summary(list(range(10)), [[0.5] * 10, [0.6] * 10], 5178)
    tuned = {"per_seed": baseline["per_seed"]}  # a CE-only trial's user attributes: no size, no classes
    rows = (reference_rows("s", "teacher_2", teacher) + reference_rows("s", "baseline", baseline)
            + reference_rows("s", "tuned_baseline", tuned, 3))
    tables.append("reference", rows)
    student = _summary(list(range(10)), [[0.7] * 10, []], 10344)  # an empty list: nothing measured
    result = {"inner_acc": 0.9, "holdout_acc": 0.8, "per_seed": student["per_seed"], "student_params": 10344,
              "epoch": 30}
    ids = {"study": "s", "trial_id": "t1", "number": 0}
    tables.record_trial(*trial_rows(ids, "COMPLETE", None, {}, [], result, []))

    ref = read_table(paths.root, "reference").set_index("method")
    assert list(ref.loc["teacher_2", "classes"].iloc[0]) == [2, 3, 5]
    assert ref.loc["teacher_2", "params"].tolist() == [19108, 19108]
    first = ref.loc["teacher_2", "holdout_class_acc"].iloc[0]
    assert first[0] == 0.9 and first[1] != first[1] and first[2] == 1.0  # a null element reads as NaN
    assert ref.loc["baseline", "params"].tolist() == [5178, 5178]
    assert ref.loc["tuned_baseline", "params"].isna().all() and ref.loc["tuned_baseline", "classes"].isna().all()
    assert list(ref.loc["tuned_baseline", "holdout_class_acc"].iloc[1]) == [0.6] * 10
    assert read_table(paths.root, "trials")["student_params"].tolist() == [10344]
    seeds = read_table(paths.root, "seeds")
    assert list(seeds["holdout_class_acc"].iloc[0]) == pytest.approx([0.7] * 10)
    assert seeds["holdout_class_acc"].iloc[1] is None



REUSED = "teacher classifier (reused, frozen)"


def test_a_simkd_trial_records_its_projector_and_head_also_when_rebuilt_from_optuna(tmp_path: Path) -> None:
    import optuna

    from tune.recorder import rows_from_optuna, trial_rows
    from tune.searcher import RECORDED_KEYS
    from tune.study import journal_storage
    from tune.tables import study_tables as _study_tables

    paths, meta = _plan(tmp_path, "digits-simkd")
    tables = _study_tables(paths, meta, load_space("digits-simkd"))
    per_seed = _summary(list(range(10)), [[0.9] * 10, [0.8] * 10], 4000)["per_seed"]
    simkd = {"inner_acc": 0.9, "holdout_acc": 0.8, "epoch": 30, "is_final": True, "per_seed": per_seed,
             "student_params": 4000, "params_detail": {"student": 3000, "projector": 1000, "reused_head_frozen": 650},
             "head": REUSED}
    hinton = {**simkd, "student_params": 2000, "params_detail": {}, "head": "student"}
    assert {"student_params", "params_detail", "head"} <= set(RECORDED_KEYS)
    row, _, _ = trial_rows({"study": "s", "trial_id": "t1", "number": 0}, "COMPLETE", None, {}, [], simkd, [])
    assert (row["student_params"], row["projector_params"], row["head"]) == (4000, 1000, REUSED)
    row, _, _ = trial_rows({"study": "s", "trial_id": "t2", "number": 1}, "COMPLETE", None, {}, [], hinton, [])
    assert (row["student_params"], row["projector_params"], row["head"]) == (2000, None, "student")

    # What the searcher keeps on the Optuna trial (through the journal, as `kdtune resume` reads it back)
    paths.root.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name="s", storage=journal_storage(paths))
    for result in (simkd, hinton):
        trial = study.ask()
        for key in RECORDED_KEYS:
            if result.get(key) is not None:
                trial.set_user_attr(key, result[key])
        study.tell(trial, result["inner_acc"])
    for frozen in optuna.load_study(study_name="s", storage=journal_storage(paths)).trials:
        tables.record_trial(*rows_from_optuna("s", frozen, []))
    trials = read_table(paths.root, "trials").set_index("number")
    assert trials.loc[0, ["student_params", "projector_params", "head"]].tolist() == [4000, 1000, REUSED]
    assert trials.loc[1, "student_params"] == 2000 and pd.isna(trials.loc[1, "projector_params"])
    assert trials.loc[1, "head"] == "student"


def test_the_tuned_baseline_takes_its_size_from_the_best_trial_and_knows_every_class() -> None:
    from tune.tables import reference_rows
    from tune.tables import tuned_summary as _tuned_summary

    per_seed = _summary(list(range(10)), [[0.5] * 10, [0.6] * 10], 0)["per_seed"]
    task = {"n_classes": 10}
    rows = reference_rows("s", "tuned_baseline", _tuned_summary({"per_seed": per_seed, "student_params": 5178}, task), 3)
    assert [(r["params"], r["classes"], r["trial_number"]) for r in rows] == [(5178, list(range(10)), 3)] * 2
    # no task recorded: C from the per-class lists; a CE search of an older kdtune recorded no size
    older = _tuned_summary({"per_seed": per_seed}, None)
    assert older["params"] is None and older["classes"] == list(range(10))
    bare = [{k: v for k, v in s.items() if k != "holdout_class_acc"} for s in per_seed]
    assert _tuned_summary({"per_seed": bare}, None)["classes"] is None

@pytest.mark.slow
def test_a_real_overlap_study_reports_teachers_classes_and_sizes(tmp_path: Path) -> None:
    import yaml
    from study_runs import run_search

    from results.report import analyse

    # digits-overlap with two seeds and three epochs per network: the same task and knobs, seconds per trial.
    space = yaml.safe_load((Path(__file__).resolve().parents[2] / "search_spaces/digits-overlap.yaml").read_text())
    space["fixed"]["seeds"] = [0, 1]
    for part in ("teacher", "baseline", "student"):
        space["fixed"][part]["epochs"] = 3
    space["fixed"]["student"]["milestones"] = [2]
    small = tmp_path / "digits-overlap-small.yaml"
    small.write_text(yaml.safe_dump(space, sort_keys=False))
    # No ASHA rung (--no-pruning), so both trials COMPLETE.
    run_search("--data", "builtin:digits", "--space", str(small), "--name", "real", "--storage",
               str(tmp_path), "--num-samples", "2", "--no-pruning", "--num-cpus", "2")
    result = analyse(tmp_path / "real")
    assert result["trials"]["COMPLETE"] == 2
    sizes = set(read_table(tmp_path / "real", "trials")["student_params"])
    wide = dataclasses.replace(load_space("digits-overlap").base.student, width=2).model_spec
    assert sizes <= {result["models"]["student"]["params"], parameter_count(wide, (1, 8, 8), 10)}  # width 1 or 2
    teachers = result["teachers"]
    assert [t["classes"] for t in teachers] == [[0, 1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 0]]
    assert [t["params"] for t in teachers] == result["models"]["teacher"]["params"]
    assert all(t["n_seeds"] == 2 and 0.5 < t["holdout_acc_mean"] <= 1 for t in teachers)
    assert all(len(t["holdout_class_acc_mean"]) == len(t["classes"]) for t in teachers)
    per_class = result["class_accuracy"]
    assert per_class["shared_classes"] == [0, 4, 7]
    assert set(per_class["accuracy"]) == {"student", "baseline", "ablation"}
    assert all(len(v) == 10 and all(a is not None for a in v) for v in per_class["accuracy"].values())
    counts = result["parameter_counts"]
    assert counts["student"] == result["best"]["student_params"] in sizes
    assert counts["baseline"] == result["models"]["baseline"]["params"]
    text = Path(result["report"]).read_text()
    assert "| teacher_1 | classes 4,5,6,7 |" in text and "| 7* |" in text
    json.dumps(result, allow_nan=False)
