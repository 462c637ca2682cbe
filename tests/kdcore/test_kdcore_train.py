"""kdcore training (prepared data, loop, teachers, student): routing, batched seeds vs standalone runs and a
hand-written loop, selection, protocols."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdcore import losses
from kdcore.batching import BatchedFFNN
from kdcore.config import ExperimentConfig, TaskConfig
from kdcore.config import FitConfig as _FitConfig
from kdcore.dataset import ClassificationData
from kdcore.errors import DataError, KDCoreError, TrainingError
from kdcore.experiment import run_experiment
from kdcore.generator import generate
from kdcore.prepared import Subset, prepare
from kdcore.result import EpochReport, ExperimentResult, FitResult
from kdcore.splits import inner_split
from kdcore.supervised import train_supervised
from kdcore.task import resolve
from kdcore.teachers import teacher_targets

SEEDS = [0, 10, 1234, 99, 2021]


@pytest.fixture(scope="module")
def small() -> ClassificationData:
    """180 training and 60 validation points in 3 domains: big enough to learn something, fast to fit."""
    return generate(0.5, train_per_domain=60, valid_per_domain=20, seed=0)


# These tests were written against a constant-LR, full-batch recipe; kdcore's default is one-cycle, batch 128.
OLD_RECIPE = {"schedule": "constant", "batch_size": None}


def FitConfig(**kwargs: Any) -> _FitConfig:
    return _FitConfig(**{**OLD_RECIPE, **kwargs})


def _config(seeds: list[int], fit: dict[str, Any], kd: dict[str, Any] | None = None,
            **top: Any) -> ExperimentConfig:
    fit = {**OLD_RECIPE, **fit}
    return ExperimentConfig.from_dict({"seeds": seeds, "baseline": fit, "teacher": fit, "student": fit,
                                       "kd": kd or {"alpha": 0.5, "temperature": 4.0}, **top})


def _weights(result: FitResult, i: int) -> dict[str, torch.Tensor]:
    return result.model.seed_state(i)


# ---------------------------------------------------------------- routing


def teacher_logits(teachers: list[BatchedFFNN], x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The multi-domain routing as the default task does it: row i gets teacher d[i]'s logits. -> (S, N, C)."""
    task = resolve(TaskConfig(), _FitConfig(), 3, 3)
    targets = teacher_targets(task, teachers, Subset(x, torch.zeros(len(d), dtype=torch.int64), d))
    assert targets.logits.shape[2] == 1 and targets.mask is None and targets.weight is None  # all known, all filled
    return targets.logits[:, :, 0]


def test_teacher_logits_routes_each_sample_to_its_domain_teacher() -> None:
    teachers = [BatchedFFNN(2, (8,), 3, [100 + k, 200 + k]) for k in range(3)]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 2, generator=gen)
    d = torch.randint(0, 3, (40,), generator=gen)  # domains interleaved, not in blocks
    assert len(set(d.tolist())) == 3
    out = teacher_logits(teachers, x, d)
    assert out.shape == (2, 40, 3)
    assert not out.requires_grad
    with torch.no_grad():
        for i in range(40):
            expected = teachers[int(d[i])](x[i:i + 1])[:, 0]  # (S, C): that teacher, each seed its own
            torch.testing.assert_close(out[:, i], expected, rtol=1e-6, atol=1e-6)
            for other in set(range(3)) - {int(d[i])}:  # the teachers really are distinguishable
                assert not torch.allclose(out[:, i], teachers[other](x[i:i + 1])[:, 0], atol=1e-3)


def test_teacher_logits_runs_teachers_in_eval_mode() -> None:
    teachers = [BatchedFFNN(2, (8,), 3, [k], batch_norm=True) for k in range(3)]
    gen = torch.Generator().manual_seed(1)
    for t in teachers:  # give the running statistics something non-trivial to hold
        t.train()
        t(torch.randn(64, 2, generator=gen) * 3 + 2)
    before = [{k: v.clone() for k, v in t.state_dict().items()} for t in teachers]
    x = torch.randn(10, 2, generator=gen)
    d = torch.tensor([0, 1, 2, 0, 1] * 2)
    out = teacher_logits(teachers, x, d)
    for t, state in zip(teachers, before):
        assert not t.training
        for k, v in t.state_dict().items():
            assert torch.equal(v, state[k]), k  # running statistics untouched
    # eval mode: a row's logits do not depend on which other rows share the batch
    single = teacher_logits(teachers, x[3:4], d[3:4])
    torch.testing.assert_close(single[:, 0], out[:, 3], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- batched seeds == standalone seeds


VARIANTS = {
    "adam-hinton": ({"epochs": 4, "batch_size": 32, "lr": 1e-2},
                    {"method": "hinton", "alpha": 0.5, "temperature": 4.0}),
    "adamw-onecycle-annealing": (
        {"epochs": 3, "batch_size": 50, "optimizer": "adamw", "weight_decay": 0.01, "schedule": "onecycle",
         "max_lr": 0.03},
        {"method": "annealing", "tau_max": 2, "anneal_epochs": 4},
    ),
    "full-batch-cyclic-alpha1": (
        {"epochs": 5, "lr": 1e-2, "schedule": "cyclic", "max_lr": 0.05, "cycle_epochs": 2},
        {"method": "hinton", "alpha": 1.0, "temperature": 9.0},
    ),
    "batch-norm-step": (
        {"epochs": 3, "batch_size": 32, "lr": 1e-2, "batch_norm": True, "schedule": "step", "step_size": 2,
         "gamma": 0.5},
        {"method": "hinton", "alpha": 0.3, "temperature": 2.0},
    ),
    "sgd-nesterov-multistep": (
        {"epochs": 4, "batch_size": 32, "lr": 5e-2, "optimizer": "sgd", "momentum": 0.9, "nesterov": True,
         "weight_decay": 5e-4, "schedule": "multistep", "milestones": [2, 3], "gamma": 0.1},
        {"method": "hinton", "alpha": 0.5, "temperature": 2.0},
    ),
    "adam-coupled-decay": (
        {"epochs": 3, "batch_size": 32, "lr": 1e-2, "optimizer": "adam_coupled", "weight_decay": 5e-4},
        {"method": "hinton", "alpha": 0.1, "temperature": 2.0},
    ),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_batched_five_seeds_equal_five_standalone_runs(small: ClassificationData, variant: str) -> None:
    fit, kd = VARIANTS[variant]
    together = run_experiment(small, _config(SEEDS, fit, kd))
    assert list(together.methods) == ["baseline", "teacher_0", "teacher_1", "teacher_2", "student"]
    for i, seed in enumerate(SEEDS):
        alone = run_experiment(small, _config([seed], fit, kd, fold_start=i))  # seed i selects on fold i
        for name, batched in together.methods.items():
            single = alone.methods[name]
            assert single.seeds == (seed,)
            n_sel = 1 / len(prepare(small, together.config).select)
            np.testing.assert_allclose(batched.inner_acc[i], single.inner_acc[0], atol=n_sel + 1e-6)
            np.testing.assert_allclose(batched.inner_loss[i], single.inner_loss[0], rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(batched.holdout_loss[i], single.holdout_loss[0], rtol=1e-4, atol=1e-6)
            assert batched.best_epoch[i] == single.best_epoch[0], (name, seed)
            assert batched.epochs_run == single.epochs_run
            for key, value in _weights(single, 0).items():
                torch.testing.assert_close(_weights(batched, i)[key], value, rtol=1e-4, atol=1e-5,
                                           msg=lambda m, where=f"{name} seed {seed} {key}": f"{where}: {m}")


def _hand_loop(x: torch.Tensor, y: torch.Tensor, seed: int, lr: float, epochs: int,
               batch_size: int | None) -> nn.Sequential:
    """What anyone would write: global-seeded nn.Sequential, Adam, one randperm per epoch from a generator."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, 20), nn.ReLU(), nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 2))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    shuffle = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    for _ in range(epochs):
        if batch_size is None:
            batches = [torch.arange(n)]
        else:
            batches = list(torch.randperm(n, generator=shuffle).split(batch_size))
        for idx in batches:
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net


@pytest.mark.parametrize("batch_size", [None, 32, 50])
def test_standalone_and_batched_runs_equal_a_hand_written_loop(small: ClassificationData,
                                                               batch_size: int | None) -> None:
    prep = prepare(small, ExperimentConfig(seeds=tuple(SEEDS), inner="split"))  # one fit set for every seed
    fit = FitConfig(epochs=6, lr=1e-2, batch_size=batch_size, restore_best=False)
    batched = train_supervised(prep, fit, SEEDS, method="baseline")
    for i in (0, 2):  # seeds 0 and 1234
        seed = SEEDS[i]
        alone = train_supervised(prep, fit, [seed], method="baseline")
        hand = _hand_loop(prep.fit.inputs(), prep.fit.y, seed, lr=1e-2, epochs=6, batch_size=batch_size)
        for key, value in hand.state_dict().items():
            torch.testing.assert_close(_weights(alone, 0)[f"net.{key}"], value, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(_weights(batched, i)[f"net.{key}"], value, rtol=1e-5, atol=1e-5)
        # and the loop really moved the weights away from the initial ones
        torch.manual_seed(seed)
        init = nn.Linear(2, 20).weight
        assert (hand[0].weight - init).abs().max() > 1e-3


def test_same_config_twice_gives_identical_results(small: ClassificationData) -> None:
    config = _config([0, 99], {"epochs": 3, "batch_size": 40, "lr": 1e-2})
    a, b = run_experiment(small, config), run_experiment(small, config)
    assert isinstance(a, ExperimentResult) and a.fingerprint == small.fingerprint()
    for name in a.methods:
        for field in ("inner_acc", "inner_loss", "holdout_acc", "holdout_loss", "best_epoch"):
            first, second = getattr(a.methods[name], field), getattr(b.methods[name], field)
            assert np.array_equal(first, second), (name, field)
        for key, value in a.methods[name].model.state_dict().items():
            assert torch.equal(value, b.methods[name].model.state_dict()[key])
    # the seeds matter: another seed gives other weights
    c = run_experiment(small, config.with_overrides({"seeds": [1, 99]}))
    assert not torch.equal(_weights(a.methods["baseline"], 0)["net.0.weight"],
                           _weights(c.methods["baseline"], 0)["net.0.weight"])


# ---------------------------------------------------------------- selection and early stopping


def _recomputed(result: FitResult, subset: Any) -> tuple[np.ndarray, np.ndarray]:
    result.model.eval()
    with torch.no_grad():
        logits = result.model(subset.inputs())
    hits = (logits.argmax(-1) == subset.y).float()
    acc = losses.weighted_mean(hits, subset.weight).numpy()
    return acc, losses.cross_entropy(logits, subset.y, subset.weight).numpy()


def test_early_stopping_stops_after_patience(small: ClassificationData) -> None:
    prep = prepare(small, ExperimentConfig(seeds=(0, 10)))
    fit = FitConfig(epochs=400, lr=0.05, patience=3)
    reports: list[EpochReport] = []
    result = train_supervised(prep, fit, [0, 10], method="baseline", on_epoch=reports.append)
    assert result.epochs_run < 400
    assert (result.best_epoch <= result.epochs_run).all() and (result.best_epoch >= 1).all()
    # stops exactly when the seed that improved last has gone `patience` epochs without improving
    assert result.epochs_run - result.best_epoch.max() == 3
    assert [r.epoch for r in result.history] == list(range(1, result.epochs_run + 1))
    assert reports == result.history


def test_restore_best_restores_the_best_epoch_weights(small: ClassificationData) -> None:
    prep = prepare(small, ExperimentConfig(seeds=tuple(SEEDS)))
    fit = FitConfig(epochs=25, lr=0.1, batch_size=16)  # a noisy run, so the best epoch is rarely the last
    result = train_supervised(prep, fit, SEEDS, method="baseline")
    assert (result.best_epoch < result.epochs_run).any()  # otherwise this test would prove nothing
    history_loss = np.stack([r.inner_loss for r in result.history])  # (epochs, S)
    np.testing.assert_array_equal(result.best_epoch, history_loss.argmin(axis=0) + 1)
    np.testing.assert_allclose(result.inner_loss, history_loss.min(axis=0), rtol=1e-6)
    inner_acc, inner_loss = _recomputed(result, prep.select)
    np.testing.assert_allclose(result.inner_loss, inner_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result.inner_acc, inner_acc, atol=1e-6)
    holdout_acc, holdout_loss = _recomputed(result, prep.holdout)
    np.testing.assert_allclose(result.holdout_acc, holdout_acc, atol=1e-6)
    np.testing.assert_allclose(result.holdout_loss, holdout_loss, rtol=1e-5, atol=1e-7)


def test_restore_best_false_keeps_the_last_weights(small: ClassificationData) -> None:
    prep = prepare(small, ExperimentConfig(seeds=tuple(SEEDS)))
    fit = FitConfig(epochs=12, lr=0.1, batch_size=16, restore_best=False)
    result = train_supervised(prep, fit, SEEDS, method="baseline")
    assert (result.best_epoch == 12).all() and result.epochs_run == 12
    np.testing.assert_allclose(result.inner_loss, result.history[-1].inner_loss)
    _, inner_loss = _recomputed(result, prep.select)
    np.testing.assert_allclose(result.inner_loss, inner_loss, rtol=1e-5, atol=1e-7)


def test_patience_still_stops_when_last_weights_are_kept(small: ClassificationData) -> None:
    prep = prepare(small, ExperimentConfig(seeds=(0, 10)))
    stopped = train_supervised(prep, FitConfig(epochs=400, lr=0.05, patience=3), [0, 10], method="b")
    assert stopped.epochs_run < 400  # the same run with restore_best does stop
    last = FitConfig(epochs=400, lr=0.05, patience=3, restore_best=False)
    kept_last = train_supervised(prep, last, [0, 10], method="b")
    assert kept_last.epochs_run == stopped.epochs_run


def test_eval_every_evaluates_on_schedule_and_at_the_end(small: ClassificationData) -> None:
    prep = prepare(small, ExperimentConfig(seeds=(0,)))
    result = train_supervised(prep, FitConfig(epochs=7), [0], method="baseline", eval_every=3)
    assert [r.epoch for r in result.history] == [3, 6, 7]
    assert result.best_epoch[0] in (3, 6, 7)


def test_seed_protocol_selects_on_the_given_validation_set(small: ClassificationData) -> None:
    config = ExperimentConfig(seeds=(0, 1), protocol="seed")
    prep = prepare(small, config)
    assert torch.equal(prep.select.inputs(), prep.holdout.x) and torch.equal(prep.select.y, prep.holdout.y)
    assert torch.equal(prep.holdout.x, torch.tensor(small.x_valid))
    assert len(prep.fit) == small.y_train.size  # trains on the whole training set
    result = train_supervised(prep, FitConfig(epochs=5, lr=1e-2), [0, 1], method="baseline")
    np.testing.assert_array_equal(result.inner_acc, result.holdout_acc)  # selected where it is reported


def test_honest_protocol_selects_on_an_inner_split_of_train(small: ClassificationData) -> None:
    config = ExperimentConfig(seeds=(0, 1), inner="split", inner_fraction=0.25, split_seed=3)
    prep = prepare(small, config)
    split = inner_split(small, 0.25, 3)
    n = small.y_train.size
    assert len(prep.select) == split.select.size and abs(len(prep.select) - 0.25 * n) <= 6
    assert len(prep.fit) + len(prep.select) == n
    assert torch.equal(prep.select.inputs(), torch.tensor(small.x_train[split.select]))
    assert torch.equal(prep.fit.inputs(), torch.tensor(small.x_train[split.fit]))
    train_rows = {tuple(r) for r in small.x_train.tolist()}
    select_rows = {tuple(r) for r in prep.select.inputs().tolist()}
    fit_rows = {tuple(r) for r in prep.fit.inputs().tolist()}
    valid_rows = {tuple(r) for r in small.x_valid.tolist()}
    assert select_rows <= train_rows and not select_rows & fit_rows and not select_rows & valid_rows
    assert torch.equal(prep.holdout.x, torch.tensor(small.x_valid))  # the holdout is only reported
    result = train_supervised(prep, FitConfig(epochs=5, lr=1e-2), [0, 1], method="baseline")
    acc, _ = _recomputed(result, prep.select)
    np.testing.assert_allclose(result.inner_acc, acc, atol=1e-6)


def test_teachers_see_only_their_domain(small: ClassificationData) -> None:
    config = _config([0], {"epochs": 2, "lr": 1e-2}, protocol="seed")
    result = run_experiment(small, config, methods=("teachers",))
    assert list(result.methods) == ["teacher_0", "teacher_1", "teacher_2"]
    prep = prepare(small, config)
    for k in range(3):
        teacher = result.methods[f"teacher_{k}"]
        acc, _ = _recomputed(teacher, prep.part((0, 1), k)[2])
        np.testing.assert_allclose(teacher.holdout_acc, acc, atol=1e-6)  # reported on domain k only


# ---------------------------------------------------------------- annealing KD


def test_annealing_runs_both_phases_with_continuous_epochs(small: ClassificationData) -> None:
    config = _config([0, 10], {"epochs": 3, "lr": 1e-2, "batch_size": 64},
                     kd={"method": "annealing", "tau_max": 2, "anneal_epochs": 4})
    reports: list[EpochReport] = []
    result = run_experiment(small, config, on_epoch=reports.append)
    student = result.methods["student"]
    assert student.epochs_run == 4 + 3
    assert [r.epoch for r in student.history] == list(range(1, 8))
    assert [r.epoch for r in reports if r.method == "student"] == list(range(1, 8))
    assert (student.best_epoch > 4).all()  # phase 2 keeps its own best, after phase 1
    # a Hinton student from the same teachers is a different network
    hinton = run_experiment(small, config.with_overrides({"kd.method": "hinton"}))
    hinton_weights = _weights(hinton.methods["student"], 0)["net.0.weight"]
    assert not torch.allclose(_weights(student, 0)["net.0.weight"], hinton_weights)


def test_annealing_phase_two_patience_counts_from_its_own_start(small: ClassificationData) -> None:
    config = _config([0], {"epochs": 300, "lr": 0.05, "patience": 2},
                     kd={"method": "annealing", "tau_max": 2, "anneal_epochs": 4})
    student = run_experiment(small, config).methods["student"]
    assert 4 + 2 <= student.epochs_run < 4 + 300
    assert student.epochs_run - student.best_epoch.max() == 2


# ---------------------------------------------------------------- divergence, optimizers


def test_nan_loss_raises_training_error(small: ClassificationData) -> None:
    prep = prepare(small, ExperimentConfig(seeds=(0, 1)))
    with pytest.raises(TrainingError, match="NaN") as info:
        train_supervised(prep, FitConfig(epochs=5, lr=1e30), [0, 1], method="baseline")
    assert "baseline" in str(info.value)


def test_absurd_learning_rate_is_a_kdcore_error(small: ClassificationData) -> None:
    prep = prepare(small, ExperimentConfig(seeds=(0,)))
    with pytest.raises(KDCoreError):
        train_supervised(prep, FitConfig(epochs=2, lr=1e38), [0], method="baseline")


def test_adamw_weight_decay_changes_results(small: ClassificationData) -> None:
    prep = prepare(small, ExperimentConfig(seeds=(0, 10)))
    common = {"epochs": 5, "lr": 1e-2, "batch_size": 40}
    adam = train_supervised(prep, FitConfig(**common), [0, 10], method="b")
    adamw0 = train_supervised(prep, FitConfig(optimizer="adamw", **common), [0, 10], method="b")
    decayed_fit = FitConfig(optimizer="adamw", weight_decay=0.5, **common)
    decayed = train_supervised(prep, decayed_fit, [0, 10], method="b")
    for key, value in adam.model.state_dict().items():
        # AdamW without decay is Adam
        torch.testing.assert_close(adamw0.model.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    # decoupled decay shrinks the weights
    norm = lambda r: sum(float(w.detach().norm()) for w in r.model.weights)
    assert norm(decayed) < norm(adam) - 1e-3


# ---------------------------------------------------------------- results


def test_summary_means_and_sample_std(small: ClassificationData) -> None:
    prep = prepare(small, ExperimentConfig(seeds=(0, 10, 99)))
    result = train_supervised(prep, FitConfig(epochs=3, lr=1e-2), [0, 10, 99], method="baseline")
    s = result.summary()
    assert s["holdout_acc_mean"] == pytest.approx(float(np.mean(result.holdout_acc)))
    assert s["holdout_acc_std"] == pytest.approx(float(np.std(result.holdout_acc, ddof=1)))
    assert [row["seed"] for row in s["per_seed"]] == [0, 10, 99]
    prep_one = prepare(small, ExperimentConfig(seeds=(0,)))
    one = train_supervised(prep_one, FitConfig(epochs=3, lr=1e-2), [0], method="baseline").summary()
    assert one["holdout_acc_std"] is None  # one seed has no spread (never 0: kdtune's one rule)


# ---------------------------------------------------------------- tiny data


def test_tiny_honest_split_is_not_reported_as_divergence() -> None:
    tiny = generate(0.5, train_per_domain=4, valid_per_domain=2, seed=3)
    config = _config([0], {"epochs": 2})
    try:
        run_experiment(tiny, config)
    except DataError:
        pass  # a clear data error naming the empty selection set would do


# ---------------------------------------------------------------- folds: each seed selects on its own fold


def _rows(x: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(r) for r in x.reshape(-1, x.shape[-1]).tolist()}


def test_folds_give_every_training_point_to_exactly_one_seed_to_select_on(small: ClassificationData) -> None:
    config = ExperimentConfig(seeds=tuple(SEEDS))  # 5 seeds, inner_fraction 0.2: 5 folds
    assert config.inner == "folds" and config.n_folds == 5
    prep = prepare(small, config)
    assert prep.select.per_seed and prep.fit.per_seed
    train = _rows(torch.tensor(small.x_train))
    assert len(train) == small.y_train.size  # the points are distinct, so rows identify them
    selected: list[tuple[float, ...]] = []
    for s in range(len(SEEDS)):
        sel_rows = prep.select.inputs()[s]
        if prep.select.weight is not None:
            sel_rows = sel_rows[prep.select.weight[s] > 0]
        sel, fit = _rows(sel_rows), _rows(prep.fit.inputs()[s])
        assert not sel & fit, f"seed {s} fits on a point it selects on"
        assert sel | fit == train, f"seed {s} leaves training points unused"
        assert not sel & _rows(torch.tensor(small.x_valid))
        selected.extend(tuple(r) for r in sel_rows.tolist())
    assert len(selected) == len(train) and set(selected) == train  # each point selects for exactly one seed


def test_folds_are_stratified_balanced_and_deterministic(small: ClassificationData) -> None:
    from kdcore.splits import inner_folds

    folds = inner_folds(small, 5, seed=0)
    np.testing.assert_array_equal(folds, inner_folds(small, 5, seed=0))
    assert not np.array_equal(folds, inner_folds(small, 5, seed=1))
    sizes = np.bincount(folds, minlength=5)
    assert sizes.max() - sizes.min() <= 1
    for k in range(small.n_domains):
        per_domain = np.bincount(folds[small.d_train == k], minlength=5)
        assert per_domain.max() - per_domain.min() <= 1
        for c in range(small.n_classes):
            cell = np.bincount(folds[(small.d_train == k) & (small.y_train == c)], minlength=5)
            assert cell.max() - cell.min() <= 1


def test_folds_pad_unequal_sets_without_changing_any_metric() -> None:
    # 7 points per cell: folds of unequal size, so some seeds' sets are padded
    odd = generate(0.5, train_per_domain=13, valid_per_domain=4, seed=2)
    config = ExperimentConfig(seeds=(0, 1, 2, 3, 4))
    prep = prepare(odd, config)
    assert prep.select.weight is not None  # padding happened, so this test checks something
    result = train_supervised(prep, FitConfig(epochs=3, lr=1e-2), list(config.seeds), method="b")
    for s in range(5):  # seed s's inner metrics are those of its real selection rows alone
        real = prep.select.weight[s] > 0
        result.model.eval()
        with torch.no_grad():
            logits = result.model(prep.select.inputs())[s][real]
        acc = (logits.argmax(-1) == prep.select.y[s][real]).float().mean()
        np.testing.assert_allclose(result.inner_acc[s], float(acc), atol=1e-6)
        ce = losses.cross_entropy(logits, prep.select.y[s][real])
        np.testing.assert_allclose(result.inner_loss[s], float(ce), rtol=1e-5)


def test_folds_of_unequal_sizes_train_each_seed_as_it_trains_alone() -> None:
    """61 points per domain: folds (and per-domain folds) differ in size, so sets are padded; a seed's
    padding must not depend on which other seeds train beside it, and a teacher's selection set pads with
    weight-0 rows, never with repeated points."""
    odd = generate(0.5, train_per_domain=61, valid_per_domain=10, seed=5)
    fit = {"epochs": 2, "batch_size": 32, "lr": 1e-2}
    together = run_experiment(odd, _config(SEEDS, fit))
    prep = prepare(odd, together.config)
    for k in range(odd.n_domains):
        sel = prep.part(range(odd.n_classes), k)[1]
        real = sel.weight if sel.weight is not None else torch.ones(sel.y.shape)
        for s in range(len(SEEDS)):
            rows = sel.inputs()[s][real[s] > 0]
            assert len(_rows(rows)) == rows.shape[0]  # no point counted twice in a selection set
    for i, seed in enumerate(SEEDS):
        alone = run_experiment(odd, _config([seed], fit, fold_start=i))
        for name, batched in together.methods.items():
            for key, value in _weights(alone.methods[name], 0).items():
                torch.testing.assert_close(_weights(batched, i)[key], value, rtol=1e-4, atol=1e-5,
                                           msg=lambda m, where=f"{name} seed {seed} {key}": f"{where}: {m}")


def test_every_seed_s_folds_index_one_copy_of_the_features(small: ClassificationData) -> None:
    """Five seeds' fitting and selection folds hold indices into one tensor of the training features, not
    five copies each; what a seed reads through them is its own rows."""
    prep = prepare(small, ExperimentConfig(seeds=tuple(SEEDS)))
    assert prep.fit.x is prep.select.x and tuple(prep.fit.x.shape) == small.x_train.shape
    assert prep.fit.rows is not None and prep.fit.rows.shape == prep.fit.y.shape
    train_x = torch.tensor(small.x_train)
    for s in range(len(SEEDS)):
        assert torch.equal(prep.fit.inputs()[s], train_x[prep.fit.rows[s]])
        assert torch.equal(prep.select.inputs()[s], train_x[prep.select.rows[s]])
    part, _, _ = prep.part((0,), 1)  # a teacher's share: indices again, into the same tensor
    assert part.x is prep.fit.x
