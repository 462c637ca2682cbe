"""A study whose teacher is a file: the reference job evaluates it, its accuracy reaches the reference rows,
and the analysis (its JSON, its text lines and report.md) shows it beside the file it was loaded from. No Ray
cluster: the reference job's function is called directly."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from kdcore import FitConfig, networks
from results.report import analyse
from tune.plan import SearchSettings, plan_study
from tune.reference import Job, _job
from tune.render import analysis_lines
from tune.tables import reference_rows, study_tables

ROOT = Path(__file__).resolve().parents[2]


def test_a_loaded_teacher_s_accuracy_reaches_the_tables_and_the_analysis_beside_its_file(tmp_path: Path) -> None:
    space = yaml.safe_load((ROOT / "search_spaces/digits-subsets.yaml").read_text())
    fixed = space["fixed"]
    teacher = FitConfig(**{**fixed["teacher"], "channels": tuple(fixed["teacher"]["channels"])})
    ckpt = tmp_path / "teacher_digits_0689.pth"
    torch.save({"model": networks.build(teacher.model_spec, (1, 8, 8), 4, seed=0).state_dict()}, ckpt)
    fixed["seeds"] = [0, 1]
    fixed["task"]["teachers"][0]["checkpoint"] = str(ckpt)
    for part in ("teacher", "baseline", "student"):
        fixed[part]["epochs"] = 1
    fixed["student"]["milestones"] = [1]
    path = tmp_path / "loaded.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    paths, meta = plan_study(SearchSettings(data="builtin:digits", space=str(path), name="s",
                                            storage=tmp_path / "studies", num_samples=1))
    paths.root.mkdir(parents=True)
    meta.write(paths)
    assert meta.task is not None and meta.task["teachers"][0]["checkpoint"] == str(ckpt)

    summaries = dict(_job(str(paths.root), Job("teachers", "teachers"), 1, False)["summaries"])
    loaded = summaries["teacher_0"]
    assert loaded["loaded_from"] == str(ckpt) and loaded["epochs_run"] == 0
    assert "loaded_from" not in summaries["teacher_1"]
    tables = study_tables(paths, meta, meta.space(paths))
    tables.write_metadata()
    rows = [r for method, s in summaries.items() for r in reference_rows(meta.name, method, s)]
    assert [r["holdout_acc"] for r in rows if r["method"] == "teacher_0"] == [s["holdout_acc"]
                                                                               for s in loaded["per_seed"]]
    tables.append("reference", rows)

    summary = analyse(paths.root)
    shown = next(t for t in summary["teachers"] if t["method"] == "teacher_0")
    assert shown["checkpoint"] == str(ckpt)
    assert abs(shown["holdout_acc_mean"] - loaded["holdout_acc_mean"]) < 1e-9
    line = next(x for x in analysis_lines(summary) if x.startswith("teacher_0:"))
    assert f"loaded from {ckpt}; holdout on its own classes {100 * loaded['holdout_acc_mean']:.2f}" in line
    assert not any("loaded from" in x for x in analysis_lines(summary) if x.startswith("teacher_1:"))
    report = Path(summary["report"]).read_text()
    assert f"| teacher_0 (loaded from `{ckpt}`) |" in report  # the reference table
    assert f"(loaded from `{ckpt}`) |" in next(x for x in report.splitlines() if x.startswith("| teacher_0 | "))
