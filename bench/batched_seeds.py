"""What batching the seeds buys: one five-seed student training, three ways, same model, data and epochs.

1. kdcore, all five seeds as one batched model (what a trial does);
2. kdcore, the same five seeds one after another (a batched model of one seed, five times);
3. a plain PyTorch loop per seed with a TensorDataset + DataLoader (what a user would write).

Hinton KD student (alpha 0.5, T 9) on builtin:d0.5 with the honest split; teachers are trained once before
timing. Each measurement is the best of ``--repeat`` runs, with torch on one thread.

    python bench/batched_seeds.py [--epochs 40] [--batch-size 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, TensorDataset

import kdcore
from kdcore import ExperimentConfig, losses, prepare, task_of, teacher_targets, train_student, train_teachers
from kdcore.networks import FFNN


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = (0, 10, 1234, 99, 2021)
    # A constant rate, so the hand-written loop below does the same work (kdcore's default is one-cycle).
    fit = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": 1e-3, "schedule": "constant"}
    config = ExperimentConfig.from_dict({"seeds": list(seeds), "student": fit, "teacher": fit,
                                         "kd": {"alpha": 0.5, "temperature": 9.0}})
    data = kdcore.load_data("builtin:d0.5")
    prep = prepare(data, config)
    teachers = [t.model for t in train_teachers(prep, config)]
    # Seed number i alone, on its own fold (fold_start=i), as it is inside the batched run.
    one_seed = {s: config.with_overrides({"seeds": [s], "fold_start": i}) for i, s in enumerate(seeds)}
    one_prep = {s: prepare(data, one_seed[s]) for s in seeds}
    # Standalone teachers for the one-seed runs: slice each seed out of the batched teachers.
    teachers_by_seed = {}
    for i, s in enumerate(seeds):
        singles = []
        for t in teachers:
            single = type(t)(data.n_features, config.teacher.hidden, prep.n_classes, [s])
            single.load_state_dict({k: v[i : i + 1] for k, v in t.state_dict().items()})
            singles.append(single)
        teachers_by_seed[s] = singles

    def batched() -> None:
        train_student(prep, config, teachers)

    def sequential() -> None:
        for s in seeds:
            train_student(one_prep[s], one_seed[s], teachers_by_seed[s])

    # (S, N, C): each sample's one routed (domain) teacher, each seed its own fit folds
    targets = teacher_targets(task_of(prep, config), teachers, prep.fit).logits[:, :, 0]

    def dataloader_loop() -> None:
        for i, s in enumerate(seeds):
            gen = torch.Generator().manual_seed(s)
            net = FFNN(data.n_features, config.student.hidden, prep.n_classes, generator=gen)
            opt = torch.optim.Adam(net.parameters(), lr=1e-3)
            loader = DataLoader(TensorDataset(prep.fit.inputs()[i], prep.fit.y[i], targets[i]),
                                batch_size=args.batch_size, shuffle=True, generator=gen)
            for _ in range(args.epochs):
                net.train()
                for xb, yb, tb in loader:
                    loss = losses.hinton_kd(net(xb), tb, yb, 0.5, 9.0)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                net.eval()
                with torch.no_grad():  # the same per-epoch evaluation kdcore does
                    losses.cross_entropy(net(prep.select.inputs()[i]), prep.select.y[i])
                    net(prep.holdout.x).argmax(-1)

    steps = args.epochs * -(-len(prep.fit) // args.batch_size)
    print(f"five-seed Hinton KD student, {args.epochs} epochs, batch {args.batch_size} "
          f"({steps} steps per seed), best of {args.repeat}, 1 thread")
    t_batched = best_of(args.repeat, batched)
    t_seq = best_of(args.repeat, sequential)
    t_loader = best_of(args.repeat, dataloader_loop)
    print(f"  batched (kdcore, 5 seeds at once)    {t_batched:7.2f} s")
    print(f"  sequential (kdcore, 1 seed x 5)      {t_seq:7.2f} s   {t_seq / t_batched:5.2f}x the batched time")
    print(f"  plain PyTorch + DataLoader, x 5      {t_loader:7.2f} s   {t_loader / t_batched:5.2f}x the batched time")


if __name__ == "__main__":
    main()
