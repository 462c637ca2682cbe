"""What a study's record says for the report to show: a task with one group and the default teachers (one per
group) trains one teacher on the baseline's data, self-distillation (``kdtune train`` and ``kdtune search``
say so in one line), and how many points the holdout and each seed's inner selection set hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdcore import ExperimentConfig
from tune.cli import main
from tune.plan import SELF_DISTILLATION, SearchSettings, plan_study, self_distillation


def test_one_group_and_default_teachers_is_self_distillation() -> None:
    config = ExperimentConfig()
    assert self_distillation(config, n_groups=1)
    assert not self_distillation(config, n_groups=2)  # per-domain experts
    assert not self_distillation(config.with_overrides({"kd.method": "none"}), n_groups=1)  # no teacher
    subsets = config.with_overrides({"task": {"teachers": [{"classes": [0, 1]}, {"classes": [2]}],
                                              "routing": "label"}})
    assert not self_distillation(subsets, n_groups=1)


def test_train_on_digits_without_a_task_says_it_is_self_distillation(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--data", "builtin:digits", "--epochs", "1", "--seeds", "0", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert [line for line in out.splitlines() if "self-distillation" in line] == [f"note: {SELF_DISTILLATION}"]


def test_train_on_two_domains_says_nothing_of_it(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--data", "builtin:d0.5", "--epochs", "1", "--seeds", "0", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0 and "self-distillation" not in captured.out + captured.err


def test_a_search_on_digits_without_a_task_records_it(tmp_path: Path) -> None:
    _, meta = plan_study(SearchSettings(data="builtin:digits", space="smoke", name="s", storage=tmp_path,
                                        num_samples=2))
    assert meta.self_distillation
    _, meta = plan_study(SearchSettings(data="builtin:d0.5", space="smoke", name="s", storage=tmp_path,
                                        num_samples=2))
    assert not meta.self_distillation


def test_a_new_study_records_the_points_its_figures_rest_on(tmp_path: Path) -> None:
    """The report says what one point is worth: the holdout's size and each seed's inner selection set."""
    import kdcore
    from tune.plan import SearchSettings, plan_study

    _, meta = plan_study(SearchSettings(data="builtin:d0.5", space="smoke", name="s", storage=tmp_path,
                                        num_samples=2))
    data, base = kdcore.load_data("builtin:d0.5"), meta.space().base
    sizes = meta.evaluation_sizes
    assert sizes is not None and sizes["holdout_points"] == data.y_valid.size
    assert sizes["seeds"] == list(base.seeds) and len(sizes["inner_points_per_seed"]) == len(base.seeds)
    n, k = data.y_train.size, base.n_folds  # folds: each seed selects on one of K folds
    assert all(n // k <= m <= -(-n // k) for m in sizes["inner_points_per_seed"])
