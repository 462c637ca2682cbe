"""A study's fair references: the ablation of its best trial and the CE-only tuned baseline.

Slow: the session's real 3-trial smoke study with ``--tune-baseline 2`` (``smoke_study``, in conftest.py:
local Ray, real Optuna journals, Parquet read back), only read here. Fast: the CE-only space a study derives
from its own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from study_runs import FinishedStudy

import kdcore
from kdcore import prepare, train_student
from results.report import analyse
from search_spaces import load_space, parse_space
from tune.study import StudyPaths, load_optuna_study


def test_ce_only_space_drops_every_kd_knob_and_fixes_alpha_zero() -> None:
    space = load_space("default")
    ce = space.without_kd()
    assert [k.path for k in ce.knobs] == [k.path for k in space.knobs if not k.path.startswith("kd.")]
    assert ce.base.kd.method == "hinton" and ce.base.kd.alpha == 0.0 and not ce.base.kd.uses_teachers
    assert ce.base.student == space.base.student and ce.objective == space.objective
    again = parse_space(ce.source_text, source="roundtrip")  # what a nested study stores, it reads back
    assert [k.path for k in again.knobs] == [k.path for k in ce.knobs] and again.base == ce.base


def test_without_kd_keeps_the_recipe_and_drops_only_the_kd_term() -> None:
    config = load_space("default").base.with_overrides({"kd.method": "annealing", "student.max_lr": 0.03})
    ablated = dataclasses.replace(config, kd=config.kd.without_kd())
    assert ablated.student == config.student and ablated.seeds == config.seeds
    assert (ablated.kd.method, ablated.kd.alpha) == ("hinton", 0.0) and not ablated.kd.uses_teachers


@pytest.fixture
def study_dir(smoke_study: FinishedStudy) -> Path:
    return smoke_study.root


def _study(root: Path) -> optuna.Study:
    return load_optuna_study(StudyPaths(root))


@pytest.mark.slow
def test_study_records_the_ablation_of_its_best_trial_exactly(study_dir: Path) -> None:
    reference = pd.read_parquet(study_dir / "results" / "reference.parquet")
    assert {"baseline", "teacher_0", "teacher_1", "teacher_2", "ablation", "tuned_baseline"} <= set(reference.method)
    best = _study(study_dir).best_trial
    ablation = reference[reference.method == "ablation"].sort_values("seed")
    assert set(ablation.trial_number) == {best.number}
    # the same configuration without its KD term, trained here with kdcore directly, gives the same seeds
    space = load_space("smoke")
    config = space.experiment(best.params)
    config = dataclasses.replace(config, kd=config.kd.without_kd())
    torch.set_num_threads(1)
    result = train_student(prepare(kdcore.load_data("builtin:d0.5"), config), config, None)
    by_seed = dict(zip(result.seeds, result.holdout_acc))
    np.testing.assert_allclose(ablation.holdout_acc.to_numpy(), [by_seed[s] for s in ablation.seed], atol=1e-9)
    assert sorted(ablation.seed) == sorted(config.seeds)


@pytest.mark.slow
def test_tuned_baseline_is_a_ce_only_study_whose_best_trial_is_reported(study_dir: Path) -> None:
    nested = study_dir / "ce-baseline"
    ce = _study(nested)
    assert ce.study_name == "ce-baseline"
    finished = [t for t in ce.trials if t.state.is_finished()]
    assert len(finished) == 2
    assert all(not any(p.startswith("kd.") for p in t.params) for t in ce.trials)  # no KD knob searched
    trials = pd.read_parquet(nested / "results" / "trials.parquet")
    assert set(trials.status) <= {"COMPLETE", "PRUNED"}
    assert not (nested / "teachers").exists() or not any((nested / "teachers").iterdir())  # CE needs none
    reference = pd.read_parquet(study_dir / "results" / "reference.parquet")
    tuned = reference[reference.method == "tuned_baseline"]
    assert set(tuned.trial_number) == {ce.best_trial.number}
    seeds = pd.read_parquet(nested / "results" / "seeds.parquet")
    best_id = trials.loc[trials.number == ce.best_trial.number, "trial_id"].item()
    expected = seeds[seeds.trial_id == best_id].set_index("seed")["holdout_acc"]
    np.testing.assert_allclose(tuned.set_index("seed")["holdout_acc"].sort_index(), expected.sort_index())


@pytest.mark.slow
def test_analysis_reports_the_ablation_first_then_the_tuned_baseline(study_dir: Path, tmp_path: Path) -> None:
    summary = analyse(study_dir, out_dir=tmp_path)
    assert summary["comparison"] == "ablation"  # the one comparison whose only difference is the KD term
    assert list(summary["comparisons"]) == ["ablation", "tuned_baseline", "baseline"]
    for c in summary["comparisons"].values():
        assert c["n_seeds"] == 2 and 0 <= c["p_value"] <= 1
    assert summary["comparisons"]["ablation"]["differs"] == "KD term only (same recipe, seeds, folds)"
    report = (tmp_path / "report.md").read_text()
    assert "the comparison this study reports: best − ablation" in report


def test_tune_baseline_of_a_space_with_only_kd_knobs_is_refused_before_anything_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cli_errors import assert_one_line_error

    from tune.cli import main

    rc = main(["search", "--space", "published", "--name", "p", "--storage", str(tmp_path), "--num-samples", "2",
               "--tune-baseline", "2"])
    assert_one_line_error("search", rc, capsys.readouterr().err, "--tune-baseline 2", "at least one knob")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_study_of_an_older_format_is_refused_with_one_line(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from cli_errors import assert_one_line_error

    from tune.cli import main
    from tune.study import StudyMeta, StudyPaths

    paths = StudyPaths(tmp_path / "old")
    paths.root.mkdir()
    meta = StudyMeta(name="old", data="builtin:d0.5", data_source="builtin:d0.5", fingerprint="x", space_name="smoke",
                     space_text=load_space("smoke").source_text, num_samples=2, seed=0, max_t=7, grace_period=1,
                     reduction_factor=3, cpus_per_trial=1.0, gpus_per_trial=0.0, max_concurrent=0)
    record = json.loads(meta.to_json())
    record["format"] = 1
    paths.meta.write_text(json.dumps(record))
    before = paths.meta.read_bytes()
    for argv in (["resume", str(paths.root)], ["train", "--from", str(paths.root)]):
        rc = main(argv)
        assert_one_line_error(argv[0], rc, capsys.readouterr().err, "older kdtune", "study format 1")
    assert paths.meta.read_bytes() == before
