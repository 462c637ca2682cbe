"""kdcore.loop: a Phase is one frozen settings object; the loop returns a complete result; two phases'
results are joined into a new one."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from kdcore.config import ExperimentConfig, FitConfig
from kdcore.generator import generate
from kdcore.loop import Phase, run_phase
from kdcore.prepared import prepare
from kdcore.result import joined
from kdcore.supervised import hard_label_losses, new_model, train_supervised

FIT = FitConfig(epochs=4, batch_size=32, schedule="constant", lr=1e-2, patience=2, restore_best=False)


@pytest.fixture(scope="module")
def prep():  # type: ignore[no-untyped-def]
    data = generate(0.5, train_per_domain=30, valid_per_domain=10, seed=0)
    return prepare(data, ExperimentConfig(seeds=(0, 10), inner="split"))


def test_a_phase_reads_its_rule_off_the_fit_settings_and_is_frozen(prep) -> None:  # type: ignore[no-untyped-def]
    losses = hard_label_losses(prep.fit, prep.select)
    model = new_model(prep, FIT, (0, 10))
    phase = Phase.of("p", model, FIT, *losses, eval_every=1, classes=range(3))
    assert (phase.epochs, phase.patience, phase.restore_best, phase.classes) == (4, 2, False, (0, 1, 2))
    assert (phase.epoch_offset, phase.head, phase.train_forward, dict(phase.params_detail)) == (0, "student", None, {})
    changed = Phase.of("p", model, FIT, *losses, eval_every=1, classes=(0,), epochs=9, patience=None,
                       restore_best=True, epoch_offset=5)
    assert (changed.epochs, changed.patience, changed.restore_best, changed.epoch_offset) == (9, None, True, 5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        phase.epochs = 3  # type: ignore[misc]


def test_the_loop_returns_a_complete_result(prep) -> None:  # type: ignore[no-untyped-def]
    fit = dataclasses.replace(FIT, patience=None)
    phase = Phase.of("p", new_model(prep, fit, (0, 10)), fit, *hard_label_losses(prep.fit, prep.select),
                     eval_every=2, classes=range(prep.n_classes), epoch_offset=10, head="h",
                     params_detail={"part": 7})
    result = run_phase(phase, prep.fit, prep.select, prep.holdout)
    assert [r.epoch for r in result.history] == [12, 14]
    assert (result.method, result.epochs_run, result.head, result.params_detail) == ("p", 14, "h", {"part": 7})
    assert result.model is phase.model and result.classes == tuple(range(prep.n_classes))
    assert result.class_acc is not None and result.class_acc.shape == (2, prep.n_classes)
    assert list(result.best_epoch) == [14, 14]  # restore_best False: the last weights
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.seconds = 0.0  # type: ignore[misc]


def test_train_supervised_is_one_phase_through_the_loop(prep) -> None:  # type: ignore[no-untyped-def]
    by_hand = run_phase(Phase.of("b", new_model(prep, FIT, (0, 10)), FIT, *hard_label_losses(prep.fit, prep.select),
                                 eval_every=1, classes=range(prep.n_classes)), prep.fit, prep.select, prep.holdout)
    helper = train_supervised(prep, FIT, (0, 10), method="b")
    assert by_hand.summary()["per_seed"] == helper.summary()["per_seed"]
    for key, value in by_hand.model.state_dict().items():
        assert torch.equal(value, helper.model.state_dict()[key]), key


def test_joining_two_phases_makes_a_new_result_and_leaves_both_alone(prep) -> None:  # type: ignore[no-untyped-def]
    fit = dataclasses.replace(FIT, patience=None, epochs=2)
    first = train_supervised(prep, fit, (0, 10), method="s")
    second = run_phase(Phase.of("s", first.model, fit, *hard_label_losses(prep.fit, prep.select), eval_every=1,
                                classes=range(prep.n_classes), epoch_offset=first.epochs_run),
                       prep.fit, prep.select, prep.holdout)
    both = joined(first, second)
    assert [r.epoch for r in both.history] == [1, 2, 3, 4]
    assert both.seconds == second.seconds + first.seconds and both.epochs_run == 4
    assert both.model is second.model and both.best_epoch is second.best_epoch
    assert [r.epoch for r in first.history] == [1, 2] and [r.epoch for r in second.history] == [3, 4]
