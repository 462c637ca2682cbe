"""Does the objective pick the best configurations, and does ASHA keep them? Measured on fresh points.

1. ``--configs`` configurations sampled at random from a space (default: ``default``) are trained, all five
   seeds at once, under each inner validation of the honest protocol: ``split`` (one 20 % split every seed
   selects on) and ``folds`` (seed j selects on fold j of a stratified 5-fold partition). Each selected
   network is scored on ``--fresh`` new points of the built-in generator's law.
2. For each candidate objective (split or folds; accuracy, log-loss, or accuracy with the loss breaking
   ties) the table shows, over the top 10 configurations by that objective, the Spearman rank correlation
   between objective and fresh accuracy, and the fresh accuracy of what it would pick (top 1, top-3 mean).
3. ASHA, replayed on the recorded learning curves of the folds runs (Ray's asynchronous rule: at each rung
   a trial stops when its value is below the (1 - 1/rf) quantile of the values recorded there so far;
   trials arrive in ``--orders`` random orders): how many of the top 5 by the final objective it would have
   stopped, per learning-rate schedule, for the configured rule and the alternatives.

    python bench/selection.py [--distance 0.5] [--configs 48] [--space default] [--out records.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

import kdcore
from kdcore import TeacherCache, prepare, train_student
from results.asha import asha_rungs
from search_spaces import load_space

MODES = ("split", "folds")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def train_all(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    space = load_space(args.space)
    sampler = optuna.samplers.RandomSampler(seed=args.sampler_seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    params = [space.sample(study.ask()) for _ in range(args.configs)]
    data = kdcore.builtin(f"d{args.distance}")
    fresh = kdcore.generate(args.distance, train_per_domain=2, valid_per_domain=args.fresh // 3, seed=4242)
    x, y = torch.tensor(fresh.x_valid), torch.tensor(fresh.y_valid)
    records: list[dict[str, Any]] = [{"params": p} for p in params]
    for mode in MODES:
        base = space.base.with_overrides({"inner": mode})
        prep = prepare(data, base)
        teachers = TeacherCache(tmp / mode).get_or_train(prep, base, data.fingerprint())
        for i, p in enumerate(params):
            config = space.experiment(p).with_overrides({"inner": mode})
            start = time.perf_counter()
            result = train_student(prep, config, teachers.models)
            result.model.eval()
            with torch.no_grad():
                fresh_acc = (result.model(x).argmax(-1) == y).float().mean(-1).numpy()
            records[i][mode] = {
                "inner_acc": float(result.inner_acc.mean()), "inner_loss": float(result.inner_loss.mean()),
                "fresh_acc": float(fresh_acc.mean()),
                "curve_acc": [float(r.inner_acc.mean()) for r in result.history],
                "curve_loss": [float(r.inner_loss.mean()) for r in result.history],
            }
            print(f"  {mode:<5} config {i + 1:>2}/{len(params)}: inner {100 * records[i][mode]['inner_acc']:.2f} "
                  f"fresh {100 * fresh_acc.mean():.2f} ({time.perf_counter() - start:.1f} s)", flush=True)
    return records


def objective(rec: dict[str, Any], option: str) -> tuple[float, ...]:
    """Sort key, larger is better."""
    mode, metric = option.split("/")
    r = rec[mode]
    if metric == "acc":
        return (r["inner_acc"],)
    if metric == "loss":
        return (-r["inner_loss"],)
    return (r["inner_acc"], -r["inner_loss"])  # accuracy, loss breaking ties


def subset_regret(records: list[dict[str, Any]], option: str, *, size: int = 24, draws: int = 2000) -> float:
    """Mean fresh-accuracy regret (points) of the configuration ``option`` picks from ``size`` random
    configurations, against the best of those on fresh points: what a ``size``-trial study loses."""
    mode = option.split("/")[0]
    rng = np.random.default_rng(1)
    fresh = np.array([r[mode]["fresh_acc"] for r in records])
    total = 0.0
    for _ in range(draws):
        pick = rng.choice(len(records), size=min(size, len(records)), replace=False)
        chosen = max(pick, key=lambda i: objective(records[i], option))
        total += fresh[pick].max() - fresh[chosen]
    return 100 * total / draws


def objective_table(records: list[dict[str, Any]]) -> None:
    print(f"\n{'objective':<16} {'rho top10':>9} {'rho all':>8} {'picked fresh %':>15} {'top-3 fresh %':>14}"
          f" {'best of all fresh %':>20} {'regret of 24':>13}")
    for option in ("split/acc", "split/loss", "split/acc+loss", "folds/acc", "folds/loss", "folds/acc+loss"):
        mode = option.split("/")[0]
        order = sorted(range(len(records)), key=lambda i: objective(records[i], option), reverse=True)
        top = order[:10]
        key = np.array([objective(records[i], option)[-1 if option.endswith("loss") else 0] for i in top])
        # for acc+loss the rank within the top 10 is the lexicographic one
        rank = np.arange(len(top))[::-1].astype(float)
        fresh = np.array([records[i][mode]["fresh_acc"] for i in top])
        every = np.array([records[i][mode]["fresh_acc"] for i in range(len(records))])
        full_key = np.array([objective(records[i], option)[0] for i in range(len(records))])
        del key
        print(f"{option:<16} {spearman(rank, fresh):>9.2f} {spearman(full_key, every):>8.2f} "
              f"{100 * fresh[0]:>15.2f} {100 * fresh[:3].mean():>14.2f} {100 * every.max():>20.2f}"
              f" {subset_regret(records, option):>13.3f}")


def family(params: dict[str, Any]) -> str:
    return str(params.get("student.schedule", "constant"))


def replay_asha(curves: list[list[float]], order: list[int], *, grace: int, rf: int, max_t: int,
                groups: list[str] | None = None, ray_layout: bool = False) -> tuple[set[int], int]:
    """Trials Ray's asynchronous successive halving would stop, trials reporting one after another, and
    the evaluations run in all. With ``groups``, trials are compared only within their own group (one
    bracket per group). ``ray_layout``: Ray's own rungs (``grace * rf**k`` up to ``max_t``) instead of
    kdtune's (``results.asha.asha_rungs``)."""
    if ray_layout:
        rungs = [grace * rf**k for k in range(int(math.log(max_t / grace) / math.log(rf) + 1))]
    else:
        rungs = asha_rungs(grace, rf, max_t)
    recorded: dict[tuple[str, int], dict[int, float]] = {}
    stopped = set()
    run = 0
    for i in order:
        group = groups[i] if groups else ""
        for t, value in enumerate(curves[i], start=1):
            run += 1
            if t in rungs:
                values = list(recorded.setdefault((group, t), {}).values())
                cutoff = np.nanpercentile(values, (1 - 1 / rf) * 100) if values else None
                recorded[(group, t)][i] = value
                if cutoff is not None and value < cutoff:
                    stopped.add(i)
                    break
    return stopped, run


def asha_table(records: list[dict[str, Any]], option: str, *, max_t: int, orders: int) -> None:
    mode, metric = option.split("/")
    sign = -1.0 if metric == "loss" else 1.0
    raw = [[sign * v for v in rec[mode]["curve_loss" if metric == "loss" else "curve_acc"]] for rec in records]
    best_so_far = [list(np.maximum.accumulate(c)) for c in raw]
    final = sorted(range(len(records)), key=lambda i: objective(records[i], option), reverse=True)
    top5 = final[:5]
    fams = Counter(family(records[i]["params"]) for i in top5)
    print(f"\nASHA replayed on the {mode} curves ({metric}); final top 5 by {option}: "
          + ", ".join(f"{n} {f}" for f, n in sorted(fams.items()))
          + f"; {orders} random arrival orders; mean number of the top 5 stopped, by schedule")
    third = min(len(r["folds"]["curve_acc"]) for r in records) // 3  # 66 of 200; default_grace is 2 * third
    half = 2 * third
    rules = {"before: Ray's rungs from 20, rf 3, raw": (raw, 20, 3, False, True),
             "grace 20, rf 3, best so far": (best_so_far, 20, 3),
             f"grace {third}, rf 3, raw": (raw, third, 3), f"grace {third}, rf 3, best so far": (best_so_far, third, 3),
             f"grace {third}, rf 2, best so far": (best_so_far, third, 2),
             f"grace {half}, rf 2, raw": (raw, half, 2), f"grace {half}, rf 2, best so far": (best_so_far, half, 2),
             f"per schedule: grace {third}, rf 3, best": (best_so_far, third, 3, True),
             f"per schedule: grace {half}, rf 2, best": (best_so_far, half, 2, True)}
    fam_names = sorted({family(r["params"]) for r in records})
    print(f"{'rule':<38} {'top-5 stopped':>13} " + " ".join(f"{f:>9}" for f in fam_names)
          + f" {'trials kept':>11} {'evals run':>9}")
    rng = np.random.default_rng(0)
    groups = [family(r["params"]) for r in records]
    for name, (curves, grace, factor, *flags) in rules.items():
        grouped, ray_layout = (list(flags) + [False, False])[:2]
        stopped_top, by_fam, kept, evals = 0.0, Counter(), 0.0, 0.0
        for _ in range(orders):
            order = list(rng.permutation(len(records)))
            stopped, run = replay_asha(curves, order, grace=grace, rf=factor, max_t=max_t,
                                       groups=groups if grouped else None, ray_layout=ray_layout)
            evals += run / sum(len(c) for c in curves) / orders
            hit = [i for i in top5 if i in stopped]
            stopped_top += len(hit) / orders
            for i in hit:
                by_fam[family(records[i]["params"])] += 1 / orders
            kept += (len(records) - len(stopped)) / orders
        print(f"{name:<38} {stopped_top:>13.2f} " + " ".join(f"{by_fam[f]:>9.2f}" for f in fam_names)
              + f" {kept:>11.1f} {100 * evals:>8.0f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distance", type=float, default=0.5)
    parser.add_argument("--configs", type=int, default=48)
    parser.add_argument("--space", default="default")
    parser.add_argument("--fresh", type=int, default=60_000)
    parser.add_argument("--sampler-seed", type=int, default=0)
    parser.add_argument("--orders", type=int, default=50)
    parser.add_argument("--out", help="write the records as JSON here; with --load, read them instead")
    parser.add_argument("--load", action="store_true", help="re-analyse the records in --out, train nothing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.load:
        records = json.loads(Path(args.out).read_text())
    else:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="kdt-selection-") as tmp:
            records = train_all(args, Path(tmp))
        if args.out:
            Path(args.out).write_text(json.dumps(records))
    print(f"\nd = {args.distance}: {len(records)} configurations of the {args.space!r} space, fresh points "
          f"{args.fresh}, Bayes ceiling {100 * kdcore.bayes_accuracy(args.distance):.2f} %")
    objective_table(records)
    max_t = max(len(r["folds"]["curve_acc"]) for r in records) + 2  # as tune.runner.max_evaluations
    for option in ("folds/acc", "folds/loss"):
        asha_table(records, option, max_t=max_t, orders=args.orders)


if __name__ == "__main__":
    main()
