"""What packs buy per trial on real configurations: N configurations of a space, trained one after another
and as packs of one shape (at most K each), teachers trained once, on one thread.

The configurations are drawn by Optuna's random sampler (``--seed``), by one of two policies:

- ``group``: drawn freely, then grouped by shape (``kdcore.pack.shape_of``: the default space's shapes are
  method x batch size x batch norm, and annealing KD's phase-1 length), in the order drawn, into packs of
  at most K: what packs give a searcher that knows nothing of them;
- ``fill``: each pack's first configuration drawn freely, the other K - 1 with its shape knobs fixed
  (Optuna's ``enqueue_trial`` with those parameters, the sampler drawing the rest): full packs always.

It prints both walls, their ratio, how many packs the shapes allowed, and whether every packed
configuration gave the figures it gave alone.

    python bench/pack_trials.py [--trials 16] [--pack 8] [--space default] [--data builtin:d0.5]
                                [--epochs N] [--threads 1] [--smoke-test]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import kdcore
from kdcore import TeacherCache, prepare, train_student
from kdcore.pack import MEMBER_SETTINGS, shape_of, train_pack
from search_spaces import load_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--pack", type=int, default=8)
    parser.add_argument("--space", default="default")
    parser.add_argument("--data", default="builtin:d0.5")
    parser.add_argument("--epochs", type=int, default=None, help="the student's epochs (default: the space's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policy", choices=("group", "fill"), default="fill")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke-test", action="store_true", help="tiny run: does it work")
    args = parser.parse_args()
    if args.smoke_test:
        args.trials, args.pack, args.epochs = 6, 3, 3
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(args.space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed))
    shape_knobs = [k.path for k in space.knobs
                   if k.path.partition(".")[2] not in MEMBER_SETTINGS.get(k.path.partition(".")[0], ())]
    configs = []
    first: dict[str, object] = {}
    for i in range(args.trials):
        if args.policy == "fill" and i % args.pack:  # the pack's shape fixed, the rest drawn
            study.enqueue_trial({k: v for k, v in first.items() if k in shape_knobs}, skip_if_exists=False)
        params = space.sample(study.ask())
        if i % args.pack == 0:
            first = params
        config = space.experiment(params)
        if args.epochs is not None:
            config = dataclasses.replace(config, student=dataclasses.replace(config.student, epochs=args.epochs),
                                         kd=dataclasses.replace(config.kd, anneal_epochs=20))
        configs.append(config)
    data = kdcore.load_data(args.data)
    base = space.base
    prep = prepare(data, base)
    with tempfile.TemporaryDirectory(prefix="kdt-pack-") as tmp:
        if args.smoke_test:
            base = dataclasses.replace(base, teacher=dataclasses.replace(base.teacher, epochs=2))
        teachers = TeacherCache(Path(tmp)).get_or_train(prep, base, data.fingerprint()).models

    start = time.perf_counter()
    alone = [train_student(prep, c, teachers if c.kd.uses_teachers else None) for c in configs]
    wall_alone = time.perf_counter() - start

    by_shape: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(configs):
        by_shape[shape_of(c)].append(i)
    packs = [ids[j:j + args.pack] for ids in by_shape.values() for j in range(0, len(ids), args.pack)]
    start = time.perf_counter()
    packed: dict[int, kdcore.FitResult | None] = {}
    for ids in packs:
        for i, outcome in zip(ids, train_pack(prep, [configs[i] for i in ids], teachers)):
            packed[i] = outcome.result
    wall_packs = time.perf_counter() - start

    def figures(r: kdcore.FitResult | None) -> dict[str, object] | None:
        if r is None:
            return None
        out = r.summary()
        out.pop("seconds")
        return out

    equal = sum(figures(alone[i]) == figures(packed[i]) for i in range(len(configs)))
    sizes = sorted((len(p) for p in packs), reverse=True)
    print(f"{args.trials} configurations of the {args.space} space on {args.data}, {args.threads} thread(s), "
          f"packs of at most {args.pack}, policy {args.policy}")
    print(f"  shapes {len(by_shape)}, packs {len(packs)} (sizes {sizes})")
    print(f"  one after another   {wall_alone:7.1f} s ({wall_alone / args.trials:.2f} s per trial)")
    print(f"  as packs            {wall_packs:7.1f} s ({wall_packs / args.trials:.2f} s per trial)")
    print(f"  ratio packs / alone {wall_packs / wall_alone:7.2f}")
    print(f"  packed configurations with the figures they give alone: {equal} of {len(configs)}")


if __name__ == "__main__":
    main()
