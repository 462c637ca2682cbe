"""Reproduce the published table on the four reference pickles with the published protocol.

Mixed baseline and Hinton KD student (alpha 0.5, T 9; T 18 at d = 0.25), 2-20-10-2 ReLU, Adam 1e-3,
full batch, final weights, selection and report on the given validation set (``protocol: seed``).
Convergence is shown by the seed-mean accuracy at half the epochs next to the final one.

    python bench/reproduce.py --epochs 10000 [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import kdcore
from kdcore import PUBLISHED_FIT, ExperimentConfig, run_experiment

PUBLISHED = {  # method -> d -> (mean %, std %), from shared/data/README.md
    "baseline": {0.25: (78.80, 1.37), 0.5: (97.80, 0.18), 0.75: (99.40, 0.28), 1.0: (99.53, 0.18)},
    "student": {0.25: (77.33, 1.33), 0.5: (98.00, 0.33), 0.75: (99.60, 0.28), 1.0: (99.47, 0.18)},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10000)
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--distances", default="0.25,0.5,0.75,1.0")
    args = parser.parse_args()
    torch.set_num_threads(1)
    fit = {**PUBLISHED_FIT, "epochs": args.epochs}
    print(f"epochs {args.epochs}, full batch, Adam 1e-3, protocol seed (as published); accuracy % mean ± std")
    print(f"{'d':>5} {'method':<9} {'ours':>15} {'published':>15} {'diff':>6} {'at half':>8}  seconds")
    for d in (float(x) for x in args.distances.split(",")):
        config = ExperimentConfig.from_dict({
            "protocol": "seed", "eval_every": args.epochs // 20,
            "baseline": fit, "teacher": fit, "student": fit,
            "kd": {"alpha": 0.5, "temperature": 18.0 if d == 0.25 else 9.0},
        })
        start = time.perf_counter()
        result = run_experiment(kdcore.load_pickle(Path(args.data_dir) / f"data_d{d}.pkl"), config)
        seconds = time.perf_counter() - start
        for method in ("baseline", "student"):
            r = result.methods[method]
            s = r.summary()
            half = next(h for h in r.history if h.epoch >= args.epochs // 2)
            pub_mean, pub_std = PUBLISHED[method][d]
            ours = 100 * s["holdout_acc_mean"]
            print(f"{d:>5} {method:<9} {ours:>7.2f} ± {100 * s['holdout_acc_std']:<5.2f} "
                  f"{pub_mean:>7.2f} ± {pub_std:<5.2f} {ours - pub_mean:>+6.2f} "
                  f"{100 * half.holdout_acc.mean():>8.2f}  {seconds:.0f}", flush=True)


if __name__ == "__main__":
    main()
