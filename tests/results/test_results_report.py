"""What the report says its figures rest on and what each comparison's sides differ in, read back from the
committed golden study and from hand-made ones; and ASHA's rungs as trials stopped and promoted.

Drawing is stubbed here as in ``test_results_analysis`` (whose ``test_every_plot_is_drawn_as_a_png`` draws
every plot): the figures are computed and the files written, matplotlib draws nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from results import plots
from results.asha import rung_outcomes
from results.report import analyse
from results.study_data import load_study
from tests.results.test_results_analysis import BASELINE, PNG_MAGIC, FakeStudy, _shifted

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "study"
SMOKE = {"kd.alpha": 0.5, "kd.temperature": 4.0, "student.optimizer": "adamw"}


def _sketch(*args: Any, path: Path, **kwargs: Any) -> Path:
    path.write_bytes(PNG_MAGIC)
    return path


@pytest.fixture(autouse=True)
def _no_drawing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in dir(plots):
        if name.startswith("plot_"):
            monkeypatch.setattr(plots, name, _sketch)
    yield


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """``analyse`` of a copy of the committed smoke study (analyse writes into the folder it reads)."""
    root = tmp_path_factory.mktemp("golden") / "g"
    shutil.copytree(GOLDEN, root, symlinks=True)
    with pytest.MonkeyPatch.context() as mp:
        for name in dir(plots):
            if name.startswith("plot_"):
                mp.setattr(plots, name, _sketch)
        result = analyse(root)
    return result, Path(result["report"]).read_text()


def test_the_report_header_says_the_holdout_size_what_plus_minus_means_and_both_gaps(
        golden: tuple[dict[str, Any], str]) -> None:
    result, text = golden
    header = result["header"]
    # 300 holdout points: not recorded by the study, but every accuracy is k/300 (per class k/137, k/163)
    assert header["holdout"] == {"n": 300, "class_counts": [137, 163], "source": "inferred",
                                 "one_sample": pytest.approx(1 / 300), "note": header["holdout"]["note"]}
    assert "not recorded by the study" in header["holdout"]["note"]
    assert header["spread"] == "sample sd over seeds of one fixed holdout; not a confidence interval"
    gaps = {g["who"]: g for g in header["gaps"]}
    assert gaps["best trial #1"]["gap"] == pytest.approx(0.70833333 - 0.73333333, abs=1e-6)
    assert gaps["mixed baseline"]["gap"] == pytest.approx(0.675 - 0.71333333, abs=1e-6)
    assert "optimistic" in header["gap_why"] and "baseline shares" in header["gap_why"]

    top = text[:text.index("## Headline")]  # the header comes before any figure
    assert "- holdout: 300 samples, so one sample is 0.33 percentage points of accuracy" in top
    assert "per class 137 + 163" in top
    assert "- ±: sample sd over seeds of one fixed holdout; not a confidence interval" in top
    assert ("- inner − holdout: best trial #1 -2.50 pp (70.83 % inner, 73.33 % holdout); mixed baseline "
            "-3.83 pp (67.50 % inner, 71.33 % holdout).") in top


def test_each_comparison_of_the_golden_study_says_what_differs_and_the_ablation_is_the_headline(
        golden: tuple[dict[str, Any], str]) -> None:
    result, text = golden
    comparisons = result["comparisons"]
    assert result["comparison"] == "ablation" and list(comparisons) == ["ablation", "tuned_baseline", "baseline"]
    assert [c["headline"] for c in comparisons.values()] == [True, False, False]
    assert comparisons["ablation"]["differs"] == "KD term only (same recipe, seeds, folds)"
    # the CE-only search's best trial (#0 of ce-baseline) also ran adamw
    assert comparisons["tuned_baseline"]["differs"] == "KD term only (same recipe, seeds, folds)"
    # the mixed baseline has the space's fixed settings: Adam where the best trial searched AdamW
    assert comparisons["baseline"]["differs"] == "KD term, optimizer adamw→adam"
    assert comparisons["baseline"]["recipe_changes"] == [{"setting": "optimizer", "trial": "adamw", "other": "adam"}]
    assert all(c["same_size"] and c["student_params"] == c["reference_params"] == 292 for c in comparisons.values())

    headline = text[text.index("## Headline"):text.index("## Trials")]
    assert ("- the comparison this study reports: best − ablation (trial #1), the best configuration retrained "
            "without its KD term, same recipe and seeds; differs: KD term only (same recipe, seeds, folds): "
            "holdout 71.33 ± 0.00 %") in headline
    assert "- also: best − baseline, the mixed baseline with the space's fixed settings; differs: KD term, " \
           "optimizer adamw→adam: holdout" in headline


def _sized_study(root: Path, *, ablation: bool = True) -> FakeStudy:
    """The best trial's student has 19,562 parameters, the mixed baseline 5,178; its ablation the student's."""
    study = FakeStudy(root)
    rows = [{"study": study.name, "method": "baseline", "seed": s, "inner_acc": a + 0.01, "holdout_acc": a,
             "params": 5178} for s, a in BASELINE.items()]
    if ablation:
        rows += [{"study": study.name, "method": "ablation", "seed": s, "trial_number": 0, "inner_acc": a + 0.01,
                  "holdout_acc": a, "params": 19562} for s, a in _shifted([0.005] * 5).items()]
    study.tables.append("reference", rows)
    study.trial(0, "COMPLETE", SMOKE, _shifted([0.004, 0.006, 0.005, 0.004, 0.005]), inner=0.97,
                student_params=19562, head="student")
    return study


def test_a_comparison_with_a_network_of_another_size_says_so_and_the_headline_is_the_same_size_one(
        tmp_path: Path) -> None:
    result = analyse(_sized_study(tmp_path / "sized").root)
    comparisons = result["comparisons"]
    assert result["comparison"] == "ablation" and comparisons["ablation"]["headline"]
    assert comparisons["ablation"]["same_size"] and comparisons["ablation"]["diff_mean"] == pytest.approx(-0.0002)
    baseline = comparisons["baseline"]
    assert not baseline["headline"] and baseline["same_size"] is False
    assert baseline["differs"].endswith("network size: student 19,562 vs baseline 5,178 parameters")
    text = Path(result["report"]).read_text()
    row = next(line for line in text.splitlines() if "best − baseline" in line)
    assert row.startswith("- secondary, a network of another size: best − baseline")
    assert "student 19,562 vs baseline 5,178 parameters" in row

    # without the ablation the same-size comparison is missing: the other-size one is first, and says so
    result = analyse(_sized_study(tmp_path / "no-ablation", ablation=False).root)
    assert list(result["comparisons"]) == ["baseline"]
    assert "student 19,562 vs baseline 5,178 parameters" in result["comparisons"]["baseline"]["differs"]
    assert ("- the comparison this study reports (no comparison with a network of the student's size is "
            "recorded): best − baseline") in Path(result["report"]).read_text()


def test_the_holdout_size_is_read_from_the_metadata_else_inferred_else_unknown(tmp_path: Path) -> None:
    recorded = FakeStudy(tmp_path / "recorded", extra_metadata={"holdout_size": 250,
                                                                "holdout_class_counts": [120, 130]})
    recorded.trial(0, "COMPLETE", SMOKE, _shifted([0.0] * 5))
    header = analyse(recorded.root)["header"]["holdout"]
    assert (header["n"], header["class_counts"], header["source"]) == (250, [120, 130], "recorded")
    sizes = {"evaluation_sizes": {"holdout_points": 250, "holdout_class_points": [120, 130],
                                  "inner_points_per_seed": [40] * 5, "seeds": [0, 10, 1234, 99, 2021]}}
    by_tune = FakeStudy(tmp_path / "by-tune", extra_metadata=sizes)  # the key kdtune search writes
    by_tune.trial(0, "COMPLETE", SMOKE, _shifted([0.0] * 5))
    header = analyse(by_tune.root)["header"]["holdout"]
    assert (header["n"], header["class_counts"], header["source"]) == (250, [120, 130], "recorded")

    inferred = FakeStudy(tmp_path / "inferred")
    inferred.trial(0, "COMPLETE", SMOKE, {s: (180 + i) / 200 for i, s in enumerate(BASELINE)})
    header = analyse(inferred.root)["header"]["holdout"]
    assert (header["n"], header["source"]) == (200, "inferred") and header["one_sample"] == pytest.approx(0.005)

    unknown = FakeStudy(tmp_path / "unknown")
    unknown.trial(0, "COMPLETE", SMOKE, {s: float(np.pi) / 4 + i * 1e-7 for i, s in enumerate(BASELINE)})
    result = analyse(unknown.root)
    assert result["header"]["holdout"]["n"] is None and result["header"]["holdout"]["source"] == "unknown"
    assert "- holdout: size not recorded by the study, and the accuracies do not give it" in \
        Path(result["report"]).read_text()


def test_asha_rungs_count_trials_stopped_and_promoted_at_each_rung(tmp_path: Path) -> None:
    """grace 2, reduction factor 3, max_t 20: rungs at 2 and 6 evaluations."""
    study = FakeStudy(tmp_path / "asha")
    holdout = _shifted([0.0] * 5)
    study.trial(0, "PRUNED", SMOKE, holdout, iterations=2)  # stopped at rung 1
    study.trial(1, "PRUNED", SMOKE, holdout, iterations=6)  # promoted at rung 1, stopped at rung 2
    study.trial(2, "COMPLETE", SMOKE, holdout, iterations=10)  # promoted at both
    study.trial(3, "ERROR", SMOKE, holdout, iterations=1)  # failed before rung 1
    study.trial(4, "COMPLETE", SMOKE, holdout, iterations=2)  # ended at rung 1 on its own
    study.trial(5, "PRUNED", SMOKE, holdout, iterations=2)  # stopped at rung 1
    outcomes = rung_outcomes(load_study(study.root))
    assert outcomes == [
        {"milestone": 2, "reached": 5, "stopped": 2, "failed": 0, "promoted": 2, "ended": 1, "before": 1},
        {"milestone": 6, "reached": 2, "stopped": 1, "failed": 0, "promoted": 1, "ended": 0, "before": 0}]
    text = Path(analyse(study.root)["report"]).read_text()
    assert "### Trials stopped and promoted at each ASHA rung" in text


def test_a_one_seed_point_draws_no_spread(tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame({"trial_id": ["a", "b"], "holdout_acc_std": [0.0, 0.02]})
    sd = plots._spread(frame, "holdout_acc_std", pd.Series({"a": 1, "b": 3}))
    assert np.isnan(sd[0]) and sd[1] == pytest.approx(2.0)  # one seed: no bar, never a bar of 0


ANNEALING_SPACE = """
name: anneal-rungs
fixed:
  seeds: [0, 10, 1234, 99, 2021]
  eval_every: 1
  student: {epochs: 6}
  kd: {method: annealing, tau_max: 2}
objective: {metric: inner_acc, mode: max}
knobs:
  kd.anneal_epochs: {type: int, low: 2, high: 10}
"""


@pytest.mark.parametrize("counts", [None, "evaluations of the student's last phase (the one the objective measures)"])
def test_asha_rungs_of_annealing_trials_count_the_measured_phase(tmp_path: Path, counts: str | None) -> None:
    """grace 2, reduction factor 3: rungs at 2 and 6. A trial of 10 phase-1 evaluations that ASHA stopped after
    2 of phase 2 reported 12 evaluations: recorded by a kdtune whose rungs count phase 2 (``asha_counts``),
    it stopped at rung 1; recorded by one that counted every evaluation, it reached both rungs."""
    import json

    study = FakeStudy(tmp_path / "anneal", space_text=ANNEALING_SPACE)
    if counts is not None:
        record = json.loads((study.root / "study.json").read_text())
        (study.root / "study.json").write_text(json.dumps({**record, "asha_counts": counts}))
    holdout = _shifted([0.0] * 5)
    study.trial(0, "PRUNED", {"kd.anneal_epochs": 10}, holdout, iterations=12)
    study.trial(1, "COMPLETE", {"kd.anneal_epochs": 2}, holdout, iterations=8)  # 2 + the 6 of phase 2
    loaded = load_study(study.root)
    outcomes = rung_outcomes(loaded)
    assert outcomes is not None
    if counts is None:
        assert [o["reached"] for o in outcomes] == [2, 2]
    else:
        assert outcomes[0] == {"milestone": 2, "reached": 2, "stopped": 1, "failed": 0, "promoted": 1, "ended": 0,
                               "before": 0}
        assert outcomes[1]["reached"] == 1
        text = Path(analyse(study.root)["report"]).read_text()
        assert "the rung and max_t count evaluations of the student's last phase" in text
