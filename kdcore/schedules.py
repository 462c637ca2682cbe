"""Learning-rate and annealing schedules as pure functions of the step (or epoch) number."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from kdcore.errors import ConfigError

if TYPE_CHECKING:
    from kdcore.config import FitConfig


def constant_lr(lr: float, step: int) -> float:
    return lr


def step_lr(lr: float, step: int, *, step_size: int, gamma: float) -> float:
    """``lr * gamma ** (step // step_size)``."""
    return lr * gamma ** (step // step_size)


def multistep_lr(lr: float, epoch: int, *, milestones: tuple[int, ...], gamma: float) -> float:
    """``lr * gamma ** (number of milestones <= epoch)``: ``MultiStepLR`` stepped once per epoch (0-based)."""
    return lr * gamma ** sum(1 for m in milestones if m <= epoch)


def cyclic_lr(base_lr: float, step: int, *, max_lr: float, step_size_up: int) -> float:
    """Triangular cycle (Smith 2017): base_lr at 0, max_lr at step_size_up, base_lr at 2 * step_size_up."""
    cycle_pos = (step % (2 * step_size_up)) / step_size_up  # 0 .. 2
    return base_lr + (max_lr - base_lr) * (1 - abs(cycle_pos - 1))


def onecycle_lr(
    step: int,
    *,
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> float:
    """One-cycle with cosine phases, as ``torch.optim.lr_scheduler.OneCycleLR`` (two-phase form).

    Starts at ``max_lr / div_factor``, peaks at ``max_lr`` after ``pct_start`` of the steps, ends at
    ``max_lr / div_factor / final_div_factor`` on the last step (``total_steps - 1``).
    """
    initial = max_lr / div_factor
    final = initial / final_div_factor
    peak_step = float(pct_start * total_steps) - 1
    last = total_steps - 1

    def cos_anneal(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    step = min(step, last)
    if step <= peak_step:
        return cos_anneal(initial, max_lr, step / peak_step if peak_step > 0 else 1.0)
    return cos_anneal(max_lr, final, (step - peak_step) / (last - peak_step) if last > peak_step else 1.0)


def lr_at(fit: FitConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """The learning rate for optimizer step ``step`` (0-based) under ``fit.schedule``."""
    if fit.schedule == "constant":
        return constant_lr(fit.lr, step)
    if fit.schedule == "step":
        return step_lr(fit.lr, step, step_size=fit.step_size * steps_per_epoch, gamma=fit.gamma)
    if fit.schedule == "multistep":
        return multistep_lr(fit.lr, step // steps_per_epoch, milestones=fit.milestones, gamma=fit.gamma)
    if fit.schedule == "cyclic":
        return cyclic_lr(fit.lr, step, max_lr=fit.max_lr, step_size_up=fit.cycle_epochs * steps_per_epoch)
    if fit.schedule == "onecycle":
        return onecycle_lr(step, max_lr=fit.max_lr, total_steps=total_steps, pct_start=fit.pct_start)
    raise ConfigError(f"unknown schedule {fit.schedule!r}")


def annealing_phi(epoch: int, *, epochs: int, tau_max: int) -> float:
    """Annealing-KD factor for phase-1 epoch ``epoch`` (0-based) of ``epochs``.

    The temperature t steps down from tau_max to 1 in tau_max equal blocks of epochs, and
    ``phi = 1 - (t - 1) / tau_max``: 1/tau_max at the first epoch, 1 (the full teacher) at the last.
    """
    if not 0 <= epoch < epochs:
        raise ConfigError(f"0 <= epoch < epochs must hold, but got epoch={epoch}, epochs={epochs}")
    t = tau_max - (epoch * tau_max) // epochs
    return 1 - (t - 1) / tau_max
