"""What batching seeds buys per architecture: one training step of five seeds, batched vs one after another.

For each model, time per training step (forward + backward + Adam step on the summed per-seed
cross-entropy, each seed on its own batch), median over repeats, torch on one thread:

- ``mlp`` (2-20-10-2, batch 128 and full batch 1920): the hand-written ``BatchedFFNN`` (what ``batched``
  returns), the generic ``StackedModel`` (vmap over ``FFNN``) and five standalone ``FFNN``s;
- ``cnn`` on digits-sized input (B=64, 1x8x8, channels (16, 32)), with and without batch norm, and
  ``resnet`` (depth 8, channels (8, 16, 32, 64), width 1) on digits- and CIFAR-sized input: the generic
  batched model vs five standalone networks.

It also says whether the generic MLP trains bit-identically to ``BatchedFFNN`` (it must, to replace it).

    python bench/batched_models.py [--repeat 7] [--steps 20] [--smoke-test]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from kdcore import ModelSpec, batching, networks

SEEDS = (0, 10, 1234, 99, 2021)


def _per_seed_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(S, B, C) logits, (S, B) labels -> (S,) batch-mean cross-entropy."""
    s, b, _ = logits.shape
    return nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(s, b).mean(1)


def batched_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One Adam step of all seeds together; x (S, B, *shape), y (S, B)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad()
        _per_seed_ce(model(x), y).sum().backward()
        opt.step()

    return step


def sequential_step(nets: list[nn.Module], x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One Adam step of each standalone network in turn, on its seed's batch."""
    opts = [torch.optim.Adam(net.parameters(), lr=1e-3) for net in nets]

    def step() -> None:
        for i, (net, opt) in enumerate(zip(nets, opts)):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[i]), y[i]).backward()
            opt.step()

    return step


def ms_per_step(step: Callable[[], None], repeat: int, steps: int) -> float:
    """Median over ``repeat`` runs of ``steps`` steps, in milliseconds per step (after three warm-up steps)."""
    for _ in range(3):
        step()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - start) / steps)
    return 1e3 * statistics.median(times)


def _data(shape: tuple[int, ...], batch: int, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(len(SEEDS), batch, *shape, generator=gen)
    return x, torch.randint(0, n_classes, (len(SEEDS), batch), generator=gen)


def mlp_rows(batch: int, repeat: int, steps: int) -> list[tuple[str, str, float]]:
    spec, shape, n_classes = ModelSpec("mlp", hidden=(20, 10)), (2,), 2
    x, y = _data(shape, batch, n_classes)
    hand = batching.batched(spec, shape, n_classes, SEEDS)
    generic = batching.StackedModel([networks.build(spec, shape, n_classes, s) for s in SEEDS], SEEDS, shape)
    singles = [networks.build(spec, shape, n_classes, s) for s in SEEDS]
    return [
        ("BatchedFFNN", "batched", ms_per_step(batched_step(hand, x, y), repeat, steps)),
        ("generic vmap", "batched", ms_per_step(batched_step(generic, x, y), repeat, steps)),
        ("5 x FFNN", "sequential", ms_per_step(sequential_step(singles, x, y), repeat, steps)),
    ]


def generic_rows(spec: ModelSpec, shape: tuple[int, ...], batch: int, repeat: int,
                 steps: int) -> list[tuple[str, str, float]]:
    n_classes = 10
    x, y = _data(shape, batch, n_classes)
    model = batching.batched(spec, shape, n_classes, SEEDS)
    singles = [networks.build(spec, shape, n_classes, s) for s in SEEDS]
    return [
        ("generic vmap", "batched", ms_per_step(batched_step(model, x, y), repeat, steps)),
        (f"5 x {spec.name}", "sequential", ms_per_step(sequential_step(singles, x, y), repeat, steps)),
    ]


def mlp_identity(steps: int, batch_norm: bool) -> float:
    """Largest weight difference between BatchedFFNN and the generic MLP after ``steps`` Adam steps."""
    spec, shape = ModelSpec("mlp", hidden=(20, 10), batch_norm=batch_norm), (2,)
    x, y = _data(shape, 128, 2)
    hand = batching.batched(spec, shape, 2, SEEDS)
    generic = batching.StackedModel([networks.build(spec, shape, 2, s) for s in SEEDS], SEEDS, shape)
    step_hand, step_generic = batched_step(hand, x, y), batched_step(generic, x, y)
    for _ in range(steps):
        step_hand()
        step_generic()
    worst = 0.0
    for i in range(len(SEEDS)):
        a, b = hand.seed_state(i), generic.seed_state(i)
        worst = max(worst, max((a[k] - b[k]).abs().max().item() for k in a))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--smoke-test", action="store_true", help="one repeat of two steps, small inputs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    repeat, steps = (1, 2) if args.smoke_test else (args.repeat, args.steps)
    resnet8 = ModelSpec("resnet", depth=8, channels=(8, 16, 32, 64), width=1)
    cases: list[tuple[str, str, Callable[[], list[tuple[str, str, float]]]]] = [
        ("mlp 2-20-10-2", "B=128, 2", lambda: mlp_rows(128, repeat, steps)),
        ("mlp 2-20-10-2", "B=1920, 2", lambda: mlp_rows(1920, repeat, steps)),
        ("cnn (16, 32)", "B=64, 1x8x8",
         lambda: generic_rows(ModelSpec("cnn", channels=(16, 32)), (1, 8, 8), 64, repeat, steps)),
        ("cnn (16, 32) + BN", "B=64, 1x8x8",
         lambda: generic_rows(ModelSpec("cnn", channels=(16, 32), batch_norm=True), (1, 8, 8), 64, repeat, steps)),
        ("resnet8 (8,16,32,64)", "B=64, 1x8x8", lambda: generic_rows(resnet8, (1, 8, 8), 64, repeat, steps)),
    ]
    if not args.smoke_test:
        cases.append(("resnet8 (8,16,32,64)", "B=64, 3x32x32",
                      lambda: generic_rows(resnet8, (3, 32, 32), 64, repeat, steps)))
    print(f"{len(SEEDS)} seeds, one training step (forward + backward + Adam), median of {repeat} x {steps} steps, "
          "1 thread")
    print(f"{'model':<22} {'input':<15} {'variant':<14} {'ms/step':>9} {'vs sequential':>14}")
    for model, data, run in cases:
        rows = run()
        sequential = next(ms for _, kind, ms in rows if kind == "sequential")
        for variant, _, ms in rows:
            print(f"{model:<22} {data:<15} {variant:<14} {ms:>9.3f} {sequential / ms:>13.2f}x")
    for batch_norm in (False, True):
        diff = mlp_identity(steps=50, batch_norm=batch_norm)
        print(f"generic vmap MLP{' + BN' if batch_norm else ''} vs BatchedFFNN after 50 Adam steps: "
              f"max |weight difference| {diff:.2e} ({'bit-identical' if diff == 0 else 'not bit-identical'})")


if __name__ == "__main__":
    main()
