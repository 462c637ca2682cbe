"""What the command line prints of figures: one seed has no spread (never ``± 0.00``), and a method's
comparison names its own other side and what differs."""

from __future__ import annotations

from tune.render import analysis_lines, format_method_table, print_analysis


def _method(std: float | None) -> dict[str, object]:
    return {"holdout_acc_mean": 0.9, "holdout_acc_std": std, "inner_acc_mean": 0.91, "best_epoch_mean": 3.0}


def test_one_seed_prints_no_spread_in_the_train_table() -> None:
    table = format_method_table({"protocol": "honest", "methods": {"baseline": _method(None),
                                                                     "student": _method(0.0125)}})
    baseline, student = table.splitlines()[1:]
    assert "±" not in baseline and "1 seed" in baseline
    assert "90.00 ± 1.25" in student


def test_a_method_line_names_its_own_comparison_and_what_differs() -> None:
    entry = {"method": "simkd", "trials": {"total": 2},
             "best": {"number": 4, "holdout_acc_mean": 0.9, "holdout_acc_std": None, "trainable": {"total": 1000},
                      "head": "student"},
             "vs": {"diff_mean": 0.01, "ci95": None, "p_value": 0.5}, "compared_with": "ablation",
             "compared_trial": 4, "differs": "KD term only (same recipe, seeds, folds)"}
    summary = {"methods": {"against": {"method": "none"}, "methods": [entry]}}
    (line,) = analysis_lines(summary)
    assert "vs ablation #4 +1.00 points" in line and "differs: KD term only" in line
    assert "one seed: no spread" in line and "± 0.00" not in line


def test_the_reported_comparison_is_tagged_by_name(capsys) -> None:  # type: ignore[no-untyped-def]
    vs = {"diff_mean": 0.02, "ci95": [-0.1, 0.14], "p_value": 0.5, "holdout_acc_mean": 0.7, "differs": "KD term only"}
    print_analysis({"study": "s", "trials": {"total": 1, "COMPLETE": 1}, "comparison": "ablation",
                    "comparisons": {"baseline": vs, "ablation": vs}, "report": "r.md"})
    out = capsys.readouterr().out
    assert "best - ablation (the comparison reported)" in out and "best - baseline:" in out
    assert out.count("differs: KD term only") == 2
