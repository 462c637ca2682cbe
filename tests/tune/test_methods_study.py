"""A real study that searches ``kd.method`` (SimKD, Hinton KD, no KD) on the digits, then ``kdtune analyse``:
the trials table records each trial's size and head, and the analysis compares the methods (slow: Ray)."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest
import yaml
from study_runs import run_search

from results.reader import read_table

REUSED = "teacher classifier (reused, frozen)"


def _small_space(folder: Path) -> Path:
    """digits-simkd with two seeds, three epochs per network and a narrower teacher: the same knobs and
    methods, seconds per trial."""
    space = yaml.safe_load((files("search_spaces") / "digits-simkd.yaml").read_text(encoding="utf-8"))
    fixed = space["fixed"]
    fixed["seeds"] = [0, 1]
    for part in ("teacher", "baseline", "student"):
        fixed[part]["epochs"] = 3
    fixed["teacher"]["channels"] = [8, 16, 32, 32]
    fixed["student"]["milestones"] = [2]
    path = folder / "digits-simkd-small.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


@pytest.mark.slow
def test_a_real_digits_simkd_study_compares_its_methods(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from tune.cli import main

    # No ASHA rung (--no-pruning).
    run_search("--data", "builtin:digits", "--space", str(_small_space(tmp_path)), "--name", "m", "--storage",
               str(tmp_path), "--num-samples", "3", "--no-pruning", "--num-cpus", "2")
    trials = read_table(tmp_path / "m", "trials")
    assert len(trials) == 3 and set(trials["status"]) <= {"COMPLETE", "PRUNED"}
    assert main(["analyse", str(tmp_path / "m"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    methods = summary["methods"]
    assert [m["method"] for m in methods["methods"]] == ["simkd", "hinton", "none"]
    assert methods["shared_seeds"] and methods["seeds"] == [0, 1]
    for entry in methods["methods"]:
        best = entry["best"]
        if best is None:
            continue
        sizes = best["trainable"]
        if entry["method"] == "simkd":  # student encoder + projector; predicts through the teacher's head
            assert best["head"] == REUSED and sizes["projector"] > 0
            assert sizes["total"] == sizes["student"] + sizes["projector"]
        else:
            assert best["head"] == "student" and sizes["projector"] is None
        assert sizes["total"] > 0 and best["n_seeds"] == 2
    complete = trials[trials["status"] == "COMPLETE"]
    assert complete["student_params"].notna().all() and complete["head"].notna().all()
    assert len(summary["accuracy_vs_params"]["trials"]) == len(complete)
    # Each method's best COMPLETE trial (but `none`, its own ablation) has its ablation, beside the study's best's
    column = "param_kd__method"
    best_of = {m: int(g.sort_values(["inner_acc_mean", "number"], ascending=[False, True])["number"].iloc[0])
               for m, g in complete.groupby(column)}
    overall = int(complete.sort_values(["inner_acc_mean", "number"], ascending=[False, True])["number"].iloc[0])
    reference = read_table(tmp_path / "m", "reference")
    ablations = reference[reference["method"] == "ablation"]
    assert set(ablations["trial_number"]) == {overall, *(n for m, n in best_of.items() if m != "none")}
    assert int(ablations["trial_number"].iloc[0]) == overall  # the study's best first, as before
    assert ablations.groupby("trial_number")["seed"].apply(sorted).tolist() == [[0, 1]] * ablations.trial_number.nunique()
    assert main(["analyse", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert all(f"kd.method {m}:" in out for m in ("simkd", "hinton", "none"))
    assert "teacher_0: " in out and "trainable parameters: " in out
    report = Path(summary["report"]).read_text()
    assert "## Distillation methods compared (`kd.method`)" in report
    assert "## Holdout accuracy against trainable parameters" in report
