"""Asking Optuna for packs: every pack of one shape, each configuration its own Optuna trial."""

from __future__ import annotations

import optuna
import pytest

from kdcore.pack import shape_of
from search_spaces import load_space
from tune.pack import PackAsker, shape_knobs


@pytest.fixture()
def study() -> optuna.Study:
    return optuna.create_study(direction="maximize",
                               sampler=optuna.samplers.TPESampler(seed=0, constant_liar=True, n_startup_trials=4))


def test_shape_knobs_of_the_default_space() -> None:
    assert set(shape_knobs(load_space("default"))) == {"kd.method", "kd.anneal_epochs", "student.batch_size",
                                                       "student.batch_norm"}


def test_a_pack_never_mixes_shapes_and_each_configuration_is_its_own_trial(study: optuna.Study) -> None:
    space = load_space("default")
    asker = PackAsker(study, space, 4)
    numbers = []
    for _ in range(6):
        pack = asker.ask()
        assert len(pack) == 4
        assert len({shape_of(space.experiment(params)) for _, params in pack}) == 1
        assert len({str(sorted(params.items())) for _, params in pack}) == 4  # the constant liar: all differ
        numbers += [trial.number for trial, _ in pack]
    assert len(set(numbers)) == 24


def test_a_rerun_of_another_shape_waits_for_a_pack_of_its_own(study: optuna.Study) -> None:
    space = load_space("default")
    asker = PackAsker(study, space, 3)
    first = asker.ask()
    rerun = dict(first[0][1])
    rerun["student.batch_size"] = 64 if rerun["student.batch_size"] != 64 else 512
    study.enqueue_trial(rerun, skip_if_exists=False)  # as tune.outcome.end_stale_trials does
    packs = [asker.ask() for _ in range(3)]
    for pack in packs:
        assert len({shape_of(space.experiment(params)) for _, params in pack}) == 1
    assert any(params == rerun for pack in packs for _, params in pack)
