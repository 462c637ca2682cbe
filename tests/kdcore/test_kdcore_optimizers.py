"""The member optimizer: each member steps exactly as torch.optim steps the same parameter alone."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from kdcore.errors import ConfigError
from kdcore.optimizers import MemberOptimizer

LRS = (1e-3, 3e-3, 0.01, 0.05)
DECAYS = (0.0, 1e-4, 1e-2, 0.3)

TORCH: dict[str, Callable[[list[torch.nn.Parameter], float, float], torch.optim.Optimizer]] = {
    "adam": lambda p, lr, wd: torch.optim.Adam(p, lr=lr),
    "adamw": lambda p, lr, wd: torch.optim.AdamW(p, lr=lr, weight_decay=wd),
    "adam_coupled": lambda p, lr, wd: torch.optim.Adam(p, lr=lr, weight_decay=wd),
    "sgd": lambda p, lr, wd: torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd),
}


@pytest.mark.parametrize("kind", list(TORCH))
def test_each_member_steps_bit_for_bit_as_torch_alone(kind: str) -> None:
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(len(LRS), 7, 5, generator=gen)
    stacked = torch.nn.Parameter(start.clone())
    optimizer = MemberOptimizer([stacked], [kind] * len(LRS), DECAYS, momentum=0.9, nesterov=True)
    alone = [torch.nn.Parameter(start[m].clone()) for m in range(len(LRS))]
    reference = [TORCH[kind]([alone[m]], LRS[m], DECAYS[m]) for m in range(len(LRS))]
    for step in range(200):
        grad = torch.randn(start.shape, generator=gen)
        rates = [lr * (1 + 0.1 * (step % 7)) for lr in LRS]  # a schedule per member
        optimizer.set_lr(torch.tensor(rates, dtype=torch.float64))
        stacked.grad = grad.clone()
        optimizer.step()
        for m, opt in enumerate(reference):
            opt.param_groups[0]["lr"] = rates[m]
            alone[m].grad = grad[m].clone()
            opt.step()
    for m in range(len(LRS)):
        assert torch.equal(stacked[m], alone[m]), f"member {m}"


def test_adam_and_adamw_members_mix_and_adam_ignores_weight_decay() -> None:
    start = torch.randn(2, 3)
    stacked = torch.nn.Parameter(start.clone())
    optimizer = MemberOptimizer([stacked], ["adam", "adamw"], [0.5, 0.5])
    alone = [torch.nn.Parameter(start[m].clone()) for m in range(2)]
    reference = [torch.optim.Adam([alone[0]], lr=0.1), torch.optim.AdamW([alone[1]], lr=0.1, weight_decay=0.5)]
    for _ in range(20):
        grad = torch.randn(2, 3)
        optimizer.set_lr(torch.tensor([0.1, 0.1], dtype=torch.float64))
        stacked.grad = grad.clone()
        optimizer.step()
        for m, opt in enumerate(reference):
            alone[m].grad = grad[m].clone()
            opt.step()
    assert torch.equal(stacked[0], alone[0]) and torch.equal(stacked[1], alone[1])


def test_select_keeps_the_chosen_members_state() -> None:
    start = torch.randn(3, 4)
    full = torch.nn.Parameter(start.clone())
    optimizer = MemberOptimizer([full], ["adam"] * 3, [0.0] * 3)
    two = torch.nn.Parameter(start[[0, 2]].clone())
    reference = MemberOptimizer([two], ["adam"] * 2, [0.0] * 2)
    for step in range(10):
        grad = torch.randn(3, 4)
        mine = (grad, [0.1, 0.2, 0.3]) if step <= 4 else (grad[[0, 2]], [0.1, 0.3])
        for opt, param, (g, lr) in ((optimizer, full, mine), (reference, two, (grad[[0, 2]], [0.1, 0.3]))):
            opt.set_lr(torch.tensor(lr, dtype=torch.float64))
            param.grad = g.clone()
            opt.step()
        if step == 4:  # member 1 leaves
            full = torch.nn.Parameter(full.detach()[[0, 2]].clone())
            optimizer.select(torch.tensor([0, 2]), [full])
    assert torch.equal(full, two)


def test_members_of_different_update_rules_cannot_share_one_optimizer() -> None:
    with pytest.raises(ConfigError, match="update rule"):
        MemberOptimizer([torch.nn.Parameter(torch.zeros(2, 1))], ["adam", "sgd"], [0.0, 0.0])
