"""kdcore.schedules: LR schedules and the annealing-KD factor as pure functions, checked against torch."""

from __future__ import annotations

import itertools

import pytest
import torch

from kdcore.config import FitConfig
from kdcore.errors import ConfigError
from kdcore.schedules import annealing_phi, constant_lr, cyclic_lr, lr_at, multistep_lr, onecycle_lr, step_lr


def _torch_lrs(make_scheduler, steps: int, lr: float = 1.0) -> list[float]:  # type: ignore[no-untyped-def]
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    sched = make_scheduler(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_constant() -> None:
    assert {constant_lr(3e-3, s) for s in range(0, 10_000, 97)} == {3e-3}


def test_step_end_points() -> None:
    lr, size, gamma = 0.1, 10, 0.5
    assert step_lr(lr, 0, step_size=size, gamma=gamma) == lr
    assert step_lr(lr, size - 1, step_size=size, gamma=gamma) == lr
    assert step_lr(lr, size, step_size=size, gamma=gamma) == pytest.approx(lr * gamma)
    assert step_lr(lr, 2 * size - 1, step_size=size, gamma=gamma) == pytest.approx(lr * gamma)
    assert step_lr(lr, 3 * size + 4, step_size=size, gamma=gamma) == pytest.approx(lr * gamma**3)


def test_step_matches_torch_steplr() -> None:
    ours = [step_lr(0.2, s, step_size=7, gamma=0.3) for s in range(40)]
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.3), 40, lr=0.2)
    assert ours == pytest.approx(ref, rel=1e-12)


def test_multistep_matches_torch_multisteplr() -> None:
    """Step decay at given epochs (StepLR (30, 0.5) of the course project is milestones 30, 60, ...)."""
    ours = [multistep_lr(0.05, e, milestones=(150, 180, 210), gamma=0.1) for e in range(240)]
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[150, 180, 210], gamma=0.1),
                     240, lr=0.05)
    assert ours == pytest.approx(ref, rel=1e-12)
    fit = FitConfig(schedule="multistep", lr=0.1, milestones=(2, 4), gamma=0.5)
    # lr_at counts optimizer steps: 3 steps per epoch, so epoch 2 starts at step 6.
    assert [lr_at(fit, s, 3, 30) for s in (0, 5, 6, 11, 12, 29)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])


def test_cyclic_triangular_end_points() -> None:
    base, peak, up = 1e-4, 1e-2, 20
    assert cyclic_lr(base, 0, max_lr=peak, step_size_up=up) == pytest.approx(base, rel=1e-12)
    assert cyclic_lr(base, up, max_lr=peak, step_size_up=up) == pytest.approx(peak, rel=1e-12)
    assert cyclic_lr(base, 2 * up, max_lr=peak, step_size_up=up) == pytest.approx(base, rel=1e-12)
    halfway = cyclic_lr(base, up // 2, max_lr=peak, step_size_up=up)
    assert halfway == pytest.approx((base + peak) / 2, rel=1e-12)
    assert cyclic_lr(base, 3 * up, max_lr=peak, step_size_up=up) == pytest.approx(peak, rel=1e-12)  # periodic
    values = [cyclic_lr(base, s, max_lr=peak, step_size_up=up) for s in range(200)]
    assert min(values) >= base * (1 - 1e-12) and max(values) <= peak * (1 + 1e-12)


def test_cyclic_matches_torch_cycliclr() -> None:
    base, peak, up = 1e-3, 5e-2, 6
    ours = [cyclic_lr(base, s, max_lr=peak, step_size_up=up) for s in range(50)]
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.CyclicLR(
        o, base_lr=base, max_lr=peak, step_size_up=up, mode="triangular", cycle_momentum=False), 50, lr=base)
    assert ours == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize(("total", "pct"), [(100, 0.3), (37, 0.25), (1000, 0.1), (12, 0.5)])
def test_onecycle_end_points(total: int, pct: float) -> None:
    peak = 0.02
    lrs = [onecycle_lr(s, max_lr=peak, total_steps=total, pct_start=pct) for s in range(total)]
    assert lrs[0] == pytest.approx(peak / 25, rel=1e-12)
    peak_step = pct * total - 1  # as in torch: the peak is at step pct * total - 1, on the grid or between
    if peak_step.is_integer():
        assert lrs[int(peak_step)] == pytest.approx(peak, rel=1e-12)
    assert peak * 0.99 < max(lrs) <= peak * (1 + 1e-12)
    assert lrs[-1] == pytest.approx(peak / 25 / 1e4, rel=1e-9)
    top = lrs.index(max(lrs))
    assert all(a <= b for a, b in itertools.pairwise(lrs[:top + 1]))  # rises to the peak
    assert all(a >= b for a, b in itertools.pairwise(lrs[top:]))  # then only falls
    # steps past the end stay at the final value instead of wrapping or erroring
    assert onecycle_lr(total + 5, max_lr=peak, total_steps=total, pct_start=pct) == pytest.approx(lrs[-1])


@pytest.mark.parametrize(("total", "pct"), [(100, 0.3), (37, 0.25), (1000, 0.1), (12, 0.5), (250, 0.45)])
def test_onecycle_matches_torch_step_by_step(total: int, pct: float) -> None:
    peak = 0.01
    ours = [onecycle_lr(s, max_lr=peak, total_steps=total, pct_start=pct) for s in range(total)]
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=peak, total_steps=total, pct_start=pct, three_phase=False, anneal_strategy="cos",
        cycle_momentum=False), total)
    for step, (a, b) in enumerate(zip(ours, ref)):
        assert a == pytest.approx(b, rel=1e-9), step


@pytest.mark.parametrize(("epochs", "tau_max"), [(10, 10), (500, 10), (37, 5), (7, 1), (100, 3)])
def test_annealing_phi(epochs: int, tau_max: int) -> None:
    phis = [annealing_phi(e, epochs=epochs, tau_max=tau_max) for e in range(epochs)]
    assert phis[0] == pytest.approx(1 / tau_max)
    assert phis[-1] == pytest.approx(1.0)
    assert all(a <= b for a, b in itertools.pairwise(phis))
    assert len(set(phis)) == tau_max
    assert all(0 < p <= 1 for p in phis)
    # the steps are the published grid phi = 1 - (t - 1) / tau_max for t = tau_max .. 1
    expected = {1 - (t - 1) / tau_max for t in range(tau_max, 0, -1)}
    assert sorted(set(phis)) == pytest.approx(sorted(expected))


def test_annealing_phi_equal_blocks() -> None:
    phis = [annealing_phi(e, epochs=20, tau_max=4) for e in range(20)]
    assert phis == pytest.approx([0.25] * 5 + [0.5] * 5 + [0.75] * 5 + [1.0] * 5)


@pytest.mark.parametrize("epoch", [-1, 10, 11])
def test_annealing_phi_rejects_epochs_outside_the_phase(epoch: int) -> None:
    with pytest.raises(ConfigError, match="epoch"):
        annealing_phi(epoch, epochs=10, tau_max=2)


def test_lr_at_dispatches_by_schedule_name() -> None:
    spe, epochs = 4, 30
    total = spe * epochs
    const = FitConfig(lr=2e-3, schedule="constant")
    step = FitConfig(lr=2e-3, schedule="step", step_size=5, gamma=0.1)
    cyc = FitConfig(lr=1e-3, schedule="cyclic", max_lr=3e-2, cycle_epochs=3)
    one = FitConfig(lr=1e-3, schedule="onecycle", max_lr=3e-2, pct_start=0.2)
    for s in range(total):
        assert lr_at(const, s, spe, total) == 2e-3
        assert lr_at(step, s, spe, total) == pytest.approx(step_lr(2e-3, s, step_size=5 * spe, gamma=0.1))
        assert lr_at(cyc, s, spe, total) == pytest.approx(
            cyclic_lr(1e-3, s, max_lr=3e-2, step_size_up=3 * spe))
        assert lr_at(one, s, spe, total) == pytest.approx(
            onecycle_lr(s, max_lr=3e-2, total_steps=total, pct_start=0.2))
    # step sizes are in epochs: the first decay comes after step_size epochs' worth of optimizer steps
    assert lr_at(step, 5 * spe - 1, spe, total) == pytest.approx(2e-3)
    assert lr_at(step, 5 * spe, spe, total) == pytest.approx(2e-4)
    assert lr_at(cyc, 3 * spe, spe, total) == pytest.approx(3e-2)
    # schedules are distinct functions, not one silently used for all
    assert len({lr_at(f, 25, spe, total) for f in (const, step, cyc, one)}) == 4
