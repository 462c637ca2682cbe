"""SimKD against Hinton KD and no KD on builtin:digits, with the digits-simkd space's networks and recipe.

One ResNet-8 teacher (channels 16, 32, 64, 128) per seed is trained once (all seeds as one batched model);
then the same narrow ResNet-8 student (8, 8, 16, 32), with the same recipe and seeds, learns:

- alone (``kd.method: none``, hard labels);
- by Hinton KD, alpha 0.9, T 4 (a fixed, common setting; not tuned here);
- by SimKD, factor 1, 2 and 4, placement ``last``, ``mse`` feature loss, no label or logit terms (the
  authors' setting): the teacher's frozen classifier predicts from the projected student features.

Every fit uses the space's fixed settings (student: Adam, one-cycle peak 0.01, batch 64, ``--epochs``
epochs; teacher: Adam, one-cycle peak 0.05, batch 64) and the library's honest protocol: seed j fits on
four of five inner folds of the training set and keeps its best epoch by cross-entropy on the fifth; the
539-image holdout is only reported. Trainable parameters are one seed's network: the student (without its
own classifier under SimKD, which predicts with the teacher's), the projector, and their total; the
reused teacher classifier (frozen) is not counted. Seconds are wall time for all seeds together.

    python bench/simkd_digits.py [--epochs 30] [--seeds 0 10 1234 99 2021] [--device cpu] [--smoke-test]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

import kdcore
from kdcore import DEFAULT_SEEDS, FitResult, prepare, train_student, train_teachers
from search_spaces import load_space

METHODS: list[tuple[str, dict[str, Any]]] = [
    ("student alone (no KD)", {"kd.method": "none"}),
    ("Hinton KD (alpha 0.9, T 4)", {"kd.method": "hinton", "kd.alpha": 0.9, "kd.temperature": 4.0}),
    *[(f"SimKD factor {f} (last, mse)", {"kd.method": "simkd", "kd.factor": f, "kd.placement": "last",
                                         "kd.feature_loss": "mse", "kd.use_labels": False, "kd.ce_weight": 0.0,
                                         "kd.logit_weight": 0.0})
      for f in (1, 2, 4)],
]


def row(name: str, result: FitResult) -> list[str]:
    s = result.summary()
    detail: dict[str, int] = dict(s["params_detail"])  # type: ignore[call-overload]
    student = detail.get("student", result.params)
    projector = detail.get("projector", 0)
    acc = f"{100 * float(s['holdout_acc_mean']):.2f} ± {100 * float(s['holdout_acc_std']):.2f}"  # type: ignore[arg-type]
    inner = f"{100 * float(s['inner_acc_mean']):.2f}"  # type: ignore[arg-type]
    return [name, acc, inner, f"{student:,}", f"{projector:,}", f"{result.params:,}", f"{result.seconds:.1f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="teacher and student epochs (default: the space's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--smoke-test", action="store_true", help="2 epochs, the first 2 seeds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = args.seeds[:2] if args.smoke_test else args.seeds
    epochs = 2 if args.smoke_test else args.epochs

    start = time.perf_counter()
    base = load_space("digits-simkd").base
    overrides: dict[str, Any] = {"seeds": seeds}
    if epochs is not None:
        overrides.update({"teacher.epochs": epochs, "student.epochs": epochs, "baseline.epochs": epochs})
    base = base.with_overrides(overrides)
    data = kdcore.load_data("builtin:digits")
    prep = prepare(data, base, args.device)
    print(f"builtin:digits: {data.x_train.shape[0]} training / {data.x_valid.shape[0]} holdout images; seeds "
          f"{list(base.seeds)}; protocol {base.protocol}, inner {base.inner} ({base.n_folds} folds); teacher "
          f"{base.teacher.epochs} epochs, student {base.student.epochs} epochs ({base.student.optimizer}, "
          f"{base.student.schedule}, peak {base.student.max_lr}, batch {base.student.batch_size}); "
          f"device {args.device}, torch threads {torch.get_num_threads()}", flush=True)

    (teacher,) = train_teachers(prep, base)
    rows = [row(f"teacher (ResNet-8 {list(base.teacher.channels or ())})", teacher)]
    print(f"  teacher trained in {teacher.seconds:.1f} s", flush=True)
    for name, kd in METHODS:
        result = train_student(prep, base.with_overrides(kd), [teacher.model])
        rows.append(row(name, result))
        print(f"  {name}: {result.seconds:.1f} s", flush=True)

    header = ["method", "holdout acc % (mean ± std)", "inner acc %", "student", "projector", "trainable",
              "seconds"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    print()
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    print(f"\n{len(seeds)} seeds, std over seeds (ddof 1); parameters per seed; student "
          f"ResNet-8 {list(base.student.channels or ())}. Total wall time {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
