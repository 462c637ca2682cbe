"""What a pack buys per configuration: one training step of K configurations x 5 seeds as one batched model.

For K = 1, 4, 16, 64 (``--packs``), time per training step (forward, Hinton KD loss with per-member alpha
and temperature, backward, optimizer step), median over repeats, divided by K: the cost of one
configuration's step. K = 1 is today's trial (torch's Adam, float settings); K > 1 uses the pack's
per-member learning rates (``MemberOptimizer``) and settings as tensors. Two models side by side:

- ``mlp``: the default task's 2-20-10-2 student, batch 128, each member its own batch;
- ``cnn``: a small CNN on digits-sized input (1x8x8, channels (16, 32)), batch 64.

The figures are ratios to K = 1 measured in one run (the machine is shared: absolute times drift).

    python bench/pack_step.py [--packs 1 4 16 64] [--repeat 5] [--steps 10] [--threads 1] [--smoke-test]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.batched_models import ms_per_step
from kdcore import ModelSpec, batching, losses
from kdcore.optimizers import MemberOptimizer

SEEDS = (0, 10, 1234, 99, 2021)
MODELS = {"mlp": (ModelSpec(name="mlp", hidden=(20, 10)), (2,), 2, 128),
          "cnn": (ModelSpec(name="cnn", channels=(16, 32)), (1, 8, 8), 10, 64)}


def pack_step(spec: ModelSpec, shape: tuple[int, ...], n_classes: int, batch: int, k: int) -> Callable[[], None]:
    """One step of a pack of ``k`` configurations: every member its own batch and teacher logits."""
    model = batching.batched(spec, shape, n_classes, SEEDS * k)
    m = model.n_seeds
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(m, batch, *shape, generator=gen)
    y = torch.randint(0, n_classes, (m, batch), generator=gen)
    teacher = torch.randn(m, batch, 1, n_classes, generator=gen)
    params = [p for p in model.parameters() if p.requires_grad]
    if k == 1:  # today's trial: torch's Adam, one alpha and temperature
        opt: torch.optim.Optimizer | MemberOptimizer = torch.optim.Adam(params, lr=1e-3)
        alpha: losses.Setting = 0.5
        temperature: losses.Setting = 4.0
    else:
        opt = MemberOptimizer(params, ["adamw"] * m, [1e-4] * m)
        alpha = torch.linspace(0.1, 0.9, k, dtype=torch.float64).repeat_interleave(len(SEEDS))
        temperature = torch.linspace(1.0, 20.0, k, dtype=torch.float64).repeat_interleave(len(SEEDS))
        rates = torch.linspace(1e-4, 1e-2, k, dtype=torch.float64).repeat_interleave(len(SEEDS))

    def step() -> None:
        if isinstance(opt, MemberOptimizer):
            opt.set_lr(rates)
        loss = losses.subset_hinton_kd(model(x), teacher, None, None, y, alpha, temperature)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packs", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke-test", action="store_true", help="tiny run: does it work")
    args = parser.parse_args()
    if args.smoke_test:
        args.packs, args.repeat, args.steps = [1, 4], 1, 2
    torch.set_num_threads(args.threads)
    print(f"one training step per configuration (5 seeds each), {args.threads} thread(s), median of "
          f"{args.repeat} x {args.steps} steps")
    print(f"{'model':6} {'K':>4} {'ms/step':>9} {'ms/config':>10} {'vs K=1':>7}")
    for name, (spec, shape, n_classes, batch) in MODELS.items():
        base = None
        for k in args.packs:
            seconds = ms_per_step(pack_step(spec, shape, n_classes, batch, k), args.repeat, args.steps) / 1e3
            per = seconds / k
            base = per if base is None else base
            print(f"{name:6} {k:4d} {1e3 * seconds:9.3f} {1e3 * per:10.3f} {per / base:7.2f}")


if __name__ == "__main__":
    main()
