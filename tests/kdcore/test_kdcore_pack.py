"""Packs: several configurations of one shape trained as one batched model give each configuration the
figures it gives alone, bit for bit on the CPU, through pruning, early stopping and both annealing phases."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from kdcore import losses, members
from kdcore.batching import batched
from kdcore.config import ExperimentConfig, FitConfig
from kdcore.dataset import ClassificationData
from kdcore.errors import ConfigError
from kdcore.generator import generate
from kdcore.pack import PackOutcome, check_pack, shape_of, train_pack
from kdcore.prepared import Prepared, prepare
from kdcore.result import FitResult
from kdcore.student import train_student
from kdcore.teachers import train_teachers

FIT = FitConfig(epochs=8, batch_size=32)
BASE = ExperimentConfig(seeds=(0, 10, 7), student=FIT, teacher=FitConfig(epochs=4, batch_size=32))


@pytest.fixture(scope="module")
def small() -> ClassificationData:
    return generate(0.5, train_per_domain=60, valid_per_domain=20, seed=0)


@pytest.fixture(scope="module")
def setup(small: ClassificationData) -> tuple[Prepared, list[Any]]:
    prep = prepare(small, BASE)  # per-seed folds: every member trains on its seed's fold
    return prep, [t.model for t in train_teachers(prep, BASE)]


def config(base: ExperimentConfig = BASE, kd: dict[str, Any] | None = None, **student: Any) -> ExperimentConfig:
    return dataclasses.replace(base, student=dataclasses.replace(base.student, **student),
                               kd=dataclasses.replace(base.kd, **(kd or {})))


# Every member setting differs somewhere: learning rate, schedule, optimizer (Adam / AdamW) and weight
# decay, alpha (0: hard labels alone; 1: no CE term) and temperature.
CONFIGS = [
    config(lr=1e-3, schedule="constant", kd={"alpha": 0.9, "temperature": 4.0}),
    config(optimizer="adamw", weight_decay=1e-2, max_lr=0.02, kd={"alpha": 0.3, "temperature": 1.5}),
    config(schedule="cyclic", lr=1e-3, max_lr=5e-3, cycle_epochs=2, kd={"alpha": 0.0}),
    config(kd={"alpha": 1.0, "temperature": 20.0}),
]


def alone(prep: Prepared, teachers: list[Any], c: ExperimentConfig) -> FitResult:
    return train_student(prep, c, teachers if c.kd.uses_teachers else None)


def same(a: FitResult, b: FitResult) -> None:
    """Every figure of the two results equal (bit for bit), the time apart, and every evaluation."""
    left, right = a.summary(), b.summary()
    left.pop("seconds"), right.pop("seconds")
    assert left == right
    assert [(r.epoch, r.inner_acc.tolist(), r.inner_loss.tolist(), r.holdout_loss.tolist()) for r in a.history] == \
        [(r.epoch, r.inner_acc.tolist(), r.inner_loss.tolist(), r.holdout_loss.tolist()) for r in b.history]
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key]), key


def test_a_packed_configuration_equals_the_same_configuration_alone(setup: tuple[Prepared, list[Any]]) -> None:
    prep, teachers = setup
    outcomes = train_pack(prep, CONFIGS, teachers)
    for c, outcome in zip(CONFIGS, outcomes):
        assert outcome.status == "COMPLETE" and outcome.result is not None
        same(alone(prep, teachers, c), outcome.result)


def test_a_pack_of_one_is_the_configuration_trained_alone(setup: tuple[Prepared, list[Any]]) -> None:
    prep, teachers = setup
    (outcome,) = train_pack(prep, CONFIGS[:1], teachers)
    assert outcome.result is not None
    same(alone(prep, teachers, CONFIGS[0]), outcome.result)


def test_pruned_members_leave_and_cost_nothing_while_the_rest_train_as_alone(
        setup: tuple[Prepared, list[Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    prep, teachers = setup
    widths: list[int] = []
    loss = losses.subset_hinton_kd

    def counting(logits: torch.Tensor, *args: Any) -> torch.Tensor:
        widths.append(logits.shape[0])
        return loss(logits, *args)

    monkeypatch.setattr(losses, "subset_hinton_kd", counting)
    outcomes = train_pack(prep, CONFIGS, teachers, lambda k, r: not ((k, r.epoch) in ((1, 3), (3, 5))))
    monkeypatch.undo()
    assert [o.status for o in outcomes] == ["COMPLETE", "PRUNED", "COMPLETE", "PRUNED"]
    assert (outcomes[1].epochs, outcomes[3].epochs) == (3, 5)
    steps = len(widths) // FIT.epochs  # the batch loss sees only the live members
    assert widths[0] == 12 and widths[3 * steps] == 9 and widths[-1] == 6
    for c, outcome in zip(CONFIGS, outcomes):
        reference = alone(prep, teachers, c)
        if outcome.result is not None:
            same(reference, outcome.result)
        else:  # its evaluations up to the prune, as alone
            assert [r.inner_acc.tolist() for r in outcome.history] == \
                [r.inner_acc.tolist() for r in reference.history[:outcome.epochs]]


def test_each_configuration_stops_early_at_its_own_epoch(setup: tuple[Prepared, list[Any]]) -> None:
    prep, teachers = setup
    configs = [dataclasses.replace(c, student=dataclasses.replace(c.student, patience=2, epochs=30)) for c in CONFIGS]
    outcomes = train_pack(prep, configs, teachers)
    runs = []
    for c, outcome in zip(configs, outcomes):
        assert outcome.result is not None
        reference = alone(prep, teachers, c)
        same(reference, outcome.result)
        runs.append(reference.epochs_run)
    assert len(set(runs)) > 1  # the configurations did stop at different epochs


def test_annealing_packs_with_a_tau_max_per_member_through_both_phases(setup: tuple[Prepared, list[Any]]) -> None:
    prep, teachers = setup
    configs = [dataclasses.replace(c, kd=dataclasses.replace(c.kd, method="annealing", anneal_epochs=6, tau_max=t))
               for c, t in zip(CONFIGS, (2, 3, 6, 4))]
    outcomes = train_pack(prep, configs, teachers, lambda k, r: not (k == 2 and r.epoch == 8))
    assert [o.status for o in outcomes] == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]
    for c, outcome in zip(configs, outcomes):
        if outcome.result is not None:
            same(alone(prep, teachers, c), outcome.result)


def test_hard_label_packs(setup: tuple[Prepared, list[Any]]) -> None:
    prep, _ = setup
    configs = [config(kd={"method": "none"}, lr=lr, schedule="constant") for lr in (1e-3, 1e-2)]
    for c, outcome in zip(configs, train_pack(prep, configs, None)):
        assert outcome.result is not None
        same(train_student(prep, c, None), outcome.result)


def test_a_pack_never_mixes_shapes() -> None:
    assert len({shape_of(c) for c in CONFIGS}) == 1  # member settings only
    check_pack(CONFIGS)
    for other, where in ((config(batch_size=64), "student.batch_size"), (config(epochs=9), "student.epochs"),
                         (config(hidden=(20, 20)), "student.hidden"), (config(optimizer="sgd"), "update_rule"),
                         (config(kd={"method": "annealing"}), "kd.method"),
                         (dataclasses.replace(BASE, seeds=(0, 1, 2)), "seeds")):
        with pytest.raises(ConfigError, match=where):
            check_pack([CONFIGS[0], other])


def test_simkd_trains_one_configuration_at_a_time() -> None:
    simkd = config(kd={"method": "simkd"}, model="cnn")
    with pytest.raises(ConfigError, match="one configuration at a time"):
        check_pack([simkd, simkd])


def test_members_tile_and_take_a_batched_model() -> None:
    model = batched(FIT.model_spec, (2,), 2, (0, 10))
    tiled = members.tiled(model, 3)
    assert tiled.seeds == (0, 10) * 3
    # 128 rows: on a handful of rows MKL's batched gemm rounds a member by its place in the batch (7e-9)
    x = torch.randn(128, 2)
    assert torch.equal(tiled(x), model(x).repeat(3, 1, 1))
    kept = members.keep_(tiled, torch.tensor([1, 4]))
    assert kept.seeds == (10, 0) and torch.equal(kept(x), model(x).flip(0))


def test_outcomes_say_how_each_configuration_ended() -> None:
    assert PackOutcome("PRUNED", epochs=3).result is None


def test_a_pack_of_tabled_teacher_targets_is_refused_with_one_line() -> None:
    import dataclasses

    import pytest

    from kdcore import ExperimentConfig
    from kdcore.errors import ConfigError
    from kdcore.pack import check_pack

    base = ExperimentConfig.from_dict({"kd": {"targets": "variants"}})
    other = dataclasses.replace(base, kd=dataclasses.replace(base.kd, alpha=0.3))
    with pytest.raises(ConfigError, match="kd.targets 'variants'"):
        check_pack([base, other])
    check_pack([base])  # alone it trains as StudentRun does
