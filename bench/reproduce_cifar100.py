"""The published CIFAR-100 recipe, ready to run: ResNet-32x4 teacher, ResNet-8x4 students without KD
(vanilla), with KD and with SimKD, printed beside the published figures.

    python bench/reproduce_cifar100.py --data /path/to/cifar-100-python --teacher resnet32x4.pth \\
        --device cuda [--epochs 240] [--seeds 0,10,1234] [--out figures.json]

The recipe is RepDistiller's (``train_student.py`` defaults, which SimKD's scripts keep): SGD, lr 0.05,
momentum 0.9, weight decay 5e-4, batch 64, 240 epochs, lr x 0.1 at epochs 150, 180 and 210 (scaled with
``--epochs``), RandomCrop(32, padding 4) + flip, inputs normalised with the CIFAR-100 constants (kdtune's
default for a CIFAR folder). KD: T 4, 0.1 CE + 0.9 KD. SimKD: projector factor 2, feature MSE alone. As
published, every network trains on all 50,000 training images and is measured on the test set (kdtune's
``seed`` protocol); "best" is the best test epoch, which the papers report, "final" the last epoch.

``--teacher`` is a ResNet-32x4 state-dict file as the toolboxes save it (RepDistiller's and mdistiller's zoo:
``{"model": state_dict}``, the literature's module names). Its test accuracy is printed before any student
trains, so a file that is not what its name claims shows at once. Without ``--teacher`` the teacher is
trained first, one per seed, with the same recipe. Published (CIFAR-100 test accuracy %): teacher 79.42;
vanilla ResNet-8x4 72.50 (RepDistiller) / 73.09 (SimKD paper); KD 73.33 / 74.42; SimKD f=2 78.08.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import kdcore
from kdcore import ExperimentConfig, FitResult, KDCoreError, one_line
from kdcore.result import ReportFn

EPOCHS = 240
MILESTONES = (150, 180, 210)
DEFAULT_SEEDS = "0,10,1234"
RESNET8X4 = {"model": "resnet", "depth": 8, "channels": [8, 16, 32, 64], "width": 4}
RESNET32X4 = {**RESNET8X4, "depth": 32}
SGD = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64,
       "schedule": "multistep", "gamma": 0.1, "augment": "crop_flip", "patience": None, "restore_best": False}
KD = {"method": "hinton", "alpha": 0.9, "temperature": 4.0}  # (1 - 0.9) CE + 0.9 T^2 KL
SIMKD = {"method": "simkd", "factor": 2, "feature_loss": "mse", "ce_weight": 0.0, "logit_weight": 0.0}
# method -> (label, RepDistiller's figure, the SimKD paper's figure); None where a paper has none.
PUBLISHED: dict[str, tuple[str, float | None, float | None]] = {
    "teacher": ("teacher ResNet-32x4", 79.42, 79.42),
    "vanilla": ("vanilla ResNet-8x4", 72.50, 73.09),
    "kd": ("KD (T 4, 0.1 CE + 0.9 KD)", 73.33, 74.42),
    "simkd": ("SimKD (f 2)", None, 78.08),
}
FULL_SIZE = (50_000, 10_000, 100)  # CIFAR-100's training images, test images and classes


class RecipeError(Exception):
    """Bad input to the recipe: one line and exit code 2."""


def milestones(epochs: int) -> list[int]:
    """150, 180, 210 of 240 epochs scaled to ``epochs`` (each at least 1, repeats dropped)."""
    return sorted({max(1, round(m * epochs / EPOCHS)) for m in MILESTONES})


def recipe(epochs: int, seeds: list[int], teacher: str | None, eval_every: int) -> ExperimentConfig:
    """The experiment of the recipe; the KD method is set per student (``KD``, ``SIMKD``)."""
    fit = {**SGD, "epochs": epochs, "milestones": milestones(epochs)}
    task: dict[str, Any] = {}
    if teacher is not None:  # one teacher, every class, every sample: the file
        task = {"teachers": [{"checkpoint": str(Path(teacher).resolve())}], "routing": "all"}
    return ExperimentConfig.from_dict({
        "seeds": seeds, "protocol": "seed", "eval_every": eval_every,
        "teacher": {**RESNET32X4, **fit}, "baseline": {**RESNET8X4, **fit}, "student": {**RESNET8X4, **fit},
        "kd": KD, "task": task})


def figures(result: FitResult) -> dict[str, Any]:
    """Final and best-epoch test accuracy (%) of each seed, with their means and sample sds."""
    final = 100 * np.asarray(result.holdout_acc, dtype=np.float64)
    history = np.stack([r.holdout_acc for r in result.history]) if result.history else final[None] / 100
    best = 100 * history.max(axis=0)

    def sd(a: np.ndarray) -> float | None:
        return float(a.std(ddof=1)) if a.size > 1 else None

    return {"final_mean": float(final.mean()), "final_std": sd(final), "best_mean": float(best.mean()),
            "best_std": sd(best), "per_seed": {str(s): {"final": float(f), "best": float(b)}
                                               for s, f, b in zip(result.seeds, final, best)},
            "epochs_run": result.epochs_run, "seconds": result.seconds, "loaded_from": result.loaded_from}


def _pm(mean: float, std: float | None) -> str:
    return f"{mean:6.2f} ± {std:4.2f}" if std is not None else f"{mean:6.2f} (1 seed)"


def table(rows: dict[str, dict[str, Any]]) -> str:
    """Ours (final and best epoch) beside the published figures, a row per method."""
    lines = [f"{'method':<26} {'ours, final':>15} {'ours, best epoch':>17}   published (RepDistiller / SimKD)"]
    for method, row in rows.items():
        label, rep, sim = PUBLISHED[method]
        published = " / ".join("-" if v is None else f"{v:.2f}" for v in (rep, sim))
        if row.get("loaded_from"):  # a file: measured once, no epochs
            ours = f"{row['final_mean']:>15.2f} {'(loaded)':>17}"
        else:
            ours = f"{_pm(row['final_mean'], row['final_std']):>15} {_pm(row['best_mean'], row['best_std']):>17}"
        lines.append(f"{label:<26} {ours}   {published}")
    return "\n".join(lines)


def _progress(label: str) -> ReportFn:
    """A line on stderr per evaluation of the network ``label`` trains (hours of training show their way)."""
    def report(r: kdcore.EpochReport) -> None:
        print(f"[{label}] epoch {r.epoch}: test acc {100 * r.holdout_acc.mean():.2f} %", file=sys.stderr, flush=True)

    return report


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from kdcore import prepare, train_baseline, train_student, train_teachers

    if args.epochs < 1 or args.eval_every < 1:
        raise RecipeError(f"--epochs and --eval-every must be >= 1, but got {args.epochs} and {args.eval_every}")
    try:
        seeds = [int(s) for s in args.seeds.replace(",", " ").split()]
    except ValueError:
        raise RecipeError(f"--seeds takes integers separated by commas, but got {args.seeds!r}") from None
    if args.teacher is not None and not Path(args.teacher).is_file():
        raise RecipeError(f"--teacher {args.teacher}: no such file; give a ResNet-32x4 state-dict file, or leave "
                          "--teacher out to train the teacher first")
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    if device == "auto":
        device = "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RecipeError(f"--device {args.device}: torch sees no CUDA device here")
    torch.set_num_threads(args.threads)
    data = kdcore.load_data(args.data)
    if data.feature_shape != (3, 32, 32):
        raise RecipeError(f"--data {args.data}: the recipe is for CIFAR images (3, 32, 32), but the data's "
                          f"features have shape {data.feature_shape}; give the cifar-100-python folder")
    config = recipe(args.epochs, seeds, args.teacher, args.eval_every)
    sizes = (int(data.y_train.size), int(data.y_valid.size), data.n_classes)
    print(f"data {data.source}: {sizes[0]} training, {sizes[1]} test images, {sizes[2]} classes; "
          f"{args.epochs} epochs (lr x 0.1 at {list(config.student.milestones)}), seeds {list(config.seeds)}, "
          f"device {device}", flush=True)
    if sizes != FULL_SIZE:
        print(f"note: not the full CIFAR-100 ({FULL_SIZE[0]} / {FULL_SIZE[1]} images, {FULL_SIZE[2]} classes): "
              "the published figures are not comparable with these", flush=True)
    if args.teacher is None:
        print(f"no --teacher: the teacher (ResNet-32x4) is trained first, one per seed, {args.epochs} epochs",
              flush=True)
    prep = prepare(data, config, device)
    start = time.perf_counter()
    teacher = train_teachers(prep, config, _progress("teacher"))[0]
    rows = {"teacher": figures(teacher)}
    if teacher.loaded_from is not None:
        print(f"teacher loaded from {teacher.loaded_from}: test accuracy {rows['teacher']['final_mean']:.2f} % "
              f"(published 79.42; chance {100 / data.n_classes:.2f} %)", flush=True)
    rows["vanilla"] = figures(train_baseline(prep, config, _progress("vanilla")))
    for name, kd in (("kd", KD), ("simkd", SIMKD)):
        student = dataclasses.replace(config, kd=kdcore.KDConfig.from_dict(kd))
        rows[name] = figures(train_student(prep, student, [teacher.model], _progress(name)))
    print(table(rows), flush=True)
    print(f"{time.perf_counter() - start:.0f} s in all", flush=True)
    return {"data": {"source": data.source, "fingerprint": data.fingerprint(), "n_train": sizes[0],
                     "n_test": sizes[1], "n_classes": sizes[2]},
            "recipe": config.to_dict(), "kd": KD, "simkd": SIMKD, "device": device,
            "methods": rows, "published": {m: {"repdistiller": p[1], "simkd": p[2]} for m, p in PUBLISHED.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--data", required=True, help="the cifar-100-python folder (kdtune's --data forms)")
    parser.add_argument("--teacher", help="a ResNet-32x4 state-dict file (default: train the teacher first)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"epochs of every network (default: {EPOCHS})")
    parser.add_argument("--seeds", default=DEFAULT_SEEDS, help=f"seeds, by commas (default: {DEFAULT_SEEDS})")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (default: 1)")
    parser.add_argument("--eval-every", type=int, default=1, help="test every this many epochs (default: 1)")
    parser.add_argument("--out", help="write the figures as JSON to this file (default: none)")
    args = parser.parse_args(argv)
    try:
        out = run(args)
    except (RecipeError, KDCoreError) as exc:
        print(f"reproduce_cifar100: error: {one_line(exc)}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
