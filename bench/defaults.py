"""Which recipe should be the default? Candidate recipes on every built-in distance, scored on fresh points.

Each candidate sets the fit settings of the baseline, the teachers and the student alike, plus the KD
knobs of the student; all use the default protocol (honest, each seed selecting on its own fold). Every
trained network (five seeds) is scored on ``--fresh`` new points drawn from the built-in generator's law,
beside that law's Bayes accuracy with the domain unknown (the ceiling of any mixed-domain classifier).

    python bench/defaults.py [--distances 0.25,0.5,0.75,1.0] [--recipes published,onecycle300,...]
    python bench/defaults.py --reference-dir ../shared/data [--recipes default]

With ``--reference-dir`` the four reference pickles are used instead, each scored on its own 300-point
validation set (the holdout of the honest protocol), against the README's estimate of its best accuracy.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import kdcore
from kdcore import ExperimentConfig, run_experiment

FIT = {
    "default": {},
    "published": {"optimizer": "adam", "lr": 1e-3, "batch_size": None, "epochs": 1000, "patience": None},
    "adam5e-3": {"optimizer": "adam", "lr": 5e-3, "batch_size": 128, "epochs": 200, "patience": 30},
    "onecycle100": {"optimizer": "adamw", "weight_decay": 1e-4, "schedule": "onecycle", "max_lr": 0.02,
                    "batch_size": 128, "epochs": 100, "patience": None},
    "onecycle300": {"optimizer": "adamw", "weight_decay": 1e-4, "schedule": "onecycle", "max_lr": 0.01,
                    "batch_size": 128, "epochs": 300, "patience": None},
    "adam1e-2": {"optimizer": "adam", "lr": 1e-2, "batch_size": 64, "epochs": 300, "patience": 50},
}
RECIPES = {  # name: (fit settings, KD knobs); "default" is kdcore's own (ExperimentConfig())
    "default": ("default", {}),
    "published": ("published", {"alpha": 0.5, "temperature": 9.0}),
    "adam5e-3": ("adam5e-3", {"alpha": 0.5, "temperature": 9.0}),
    "onecycle100-a0.9T1": ("onecycle100", {"alpha": 0.9, "temperature": 1.0}),
    "onecycle300-a0.9T1": ("onecycle300", {"alpha": 0.9, "temperature": 1.0}),
    "onecycle300-a0.5T1": ("onecycle300", {"alpha": 0.5, "temperature": 1.0}),
    "onecycle300-a0.5T9": ("onecycle300", {"alpha": 0.5, "temperature": 9.0}),
    "adam1e-2-a0.9T1": ("adam1e-2", {"alpha": 0.9, "temperature": 1.0}),
}


# ../shared/data/README.md: estimated best accuracy on each reference validation set, domain not an input.
REFERENCE_CEILING = {0.25: 0.773, 0.5: 0.980, 0.75: 0.993, 1.0: 0.993}


def fresh_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-seed accuracy (S,) of a batched model on shared points."""
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(-1) == y).float().mean(-1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distances", default="0.25,0.5,0.75,1.0")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--fresh", type=int, default=60_000, help="fresh points per distance")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reference-dir", help="score on the reference pickles' validation sets instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'d':>5} {'recipe':<20} {'ceiling':>8} {'baseline (fresh)':>17} {'student (fresh)':>16} "
          f"{'student-base':>12} {'gap':>6} {'s':>5}", flush=True)
    for distance in (float(d) for d in args.distances.split(",")):
        if args.reference_dir:
            data = kdcore.load_pickle(Path(args.reference_dir) / f"data_d{distance}.pkl")
            x, y = torch.tensor(data.x_valid), torch.tensor(data.y_valid)
            ceiling = REFERENCE_CEILING[distance]
        else:
            data = kdcore.builtin(f"d{distance}")
            fresh = kdcore.generate(distance, train_per_domain=2, valid_per_domain=args.fresh // 3, seed=777)
            x, y = torch.tensor(fresh.x_valid), torch.tensor(fresh.y_valid)
            ceiling = kdcore.bayes_accuracy(distance)
        for name in args.recipes.split(","):
            fit_name, kd = RECIPES[name]
            fit = FIT[fit_name]
            config = ExperimentConfig.from_dict({"baseline": fit, "teacher": fit, "student": fit, "kd": kd})
            start = time.perf_counter()
            result = run_experiment(data, config)
            base = 100 * fresh_accuracy(result.methods["baseline"].model, x, y)
            student = 100 * fresh_accuracy(result.methods["student"].model, x, y)
            print(f"{distance:>5} {name:<20} {100 * ceiling:>8.2f} {base.mean():>9.2f} ± {base.std(ddof=1):<5.2f} "
                  f"{student.mean():>8.2f} ± {student.std(ddof=1):<5.2f} {(student - base).mean():>+12.2f} "
                  f"{100 * ceiling - student.mean():>6.2f} {time.perf_counter() - start:>5.0f}", flush=True)


if __name__ == "__main__":
    main()
