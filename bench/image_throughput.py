"""Images per second of a KD training step on CIFAR-sized images: seeds batched by vmap vs a per-seed loop,
augmentation on and off, fp32 and bf16 (and, with ``--layouts``, contiguous vs channels-last weights).

The step is kdcore's own (``kdcore.student.train_student``: Hinton KD, T 4, CE 0.1 + KD 0.9, SGD 0.05 /
momentum 0.9 / wd 5e-4, the literature's CIFAR-100 recipe) of a ResNet-8x4 student taught by a ResNet-32x4
teacher (random weights: the cost does not depend on them), batch 64 per seed, on random 3x32x32 images of
100 classes. Without augmentation kdcore computes the teacher's targets once per fit set, so the step is
the student's alone; with ``crop_flip`` the teacher runs on every augmented batch. Each configuration trains
two epochs of ``--steps`` steps; the second is timed (the first pays for first-call allocations and
kernel choices), its end-of-epoch evaluation on 64 images included. images/s counts every seed's images.

    python bench/image_throughput.py                          # CPU: 1 thread, 2 seeds, 1 step: minutes
    python bench/image_throughput.py --device cuda --seeds 5 --steps 20 --layouts contiguous,channels_last
    python bench/image_throughput.py --smoke-test             # tiny: every path once, seconds

Measured here (2-core shared AMD EPYC, 1 thread, 2 seeds, 1 timed step, one run; ratios within that run):
see README "GPUs"; what a GPU gives is still to be measured (``bench/gpu_check.sh``).
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Sequence

import numpy as np
import torch

from kdcore import ClassificationData, ExperimentConfig, batching, prepare, train_student

TEACHER = {"model": "resnet", "depth": 32, "channels": [32, 64, 128, 256]}  # ResNet-32x4
STUDENT = {"model": "resnet", "depth": 8, "channels": [32, 64, 128, 256]}  # ResNet-8x4
RECIPE = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "constant"}
N_CLASSES = 100
SEEDS = (0, 10, 1234, 99, 2021)


def synthetic_cifar(n_train: int, n_test: int, side: int) -> ClassificationData:
    """Random standardised images, labels cycling through the classes: 100, or one per training image when
    there are fewer (every class must have a training image; the head's size costs next to nothing)."""
    rng = np.random.default_rng(0)
    n_classes = min(N_CLASSES, n_train)
    return ClassificationData.from_arrays({
        "x_train": rng.standard_normal((n_train, 3, side, side), dtype=np.float32),
        "y_train": np.arange(n_train) % n_classes,
        "x_valid": rng.standard_normal((n_test, 3, side, side), dtype=np.float32),
        "y_valid": np.arange(n_test) % n_classes}, source="synthetic")


def seconds_per_epoch(data: ClassificationData, device: str, seeds: Sequence[int], batch: int, *, augment: str,
                      precision: str, channels_last: bool, seed_batching: str, teacher: dict) -> float:
    """Wall seconds of the second of two student epochs (ends read at the epoch reports, which follow the
    evaluation's copy to the host, so the device's queue has drained)."""
    student = {**STUDENT, **RECIPE, "epochs": 2, "batch_size": batch, "augment": augment, "precision": precision,
               "channels_last": channels_last, "seed_batching": seed_batching}
    config = ExperimentConfig.from_dict({
        "seeds": list(seeds), "protocol": "seed", "teacher": {**teacher, "channels_last": channels_last,
                                                              "seed_batching": seed_batching},
        "student": student, "kd": {"method": "hinton", "alpha": 0.9, "temperature": 4.0}})
    prep = prepare(data, config, device)
    fit = config.teacher
    model = batching.batched(fit.model_spec, prep.input_shape, prep.n_classes, config.seeds,
                             seed_batching=batching.seed_batching_for(seed_batching, device),
                             channels_last=channels_last).to(device)
    ends: list[float] = []
    train_student(prep, config, [model], on_epoch=lambda report: ends.append(time.perf_counter()))
    return ends[1] - ends[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when there is one)")
    parser.add_argument("--seeds", type=int, help="how many seeds train at once (default: 5 on CUDA, 2 on CPU)")
    parser.add_argument("--steps", type=int, help="steps per epoch, the second epoch timed (default: 20 on "
                                                  "CUDA, 1 on CPU)")
    parser.add_argument("--batch", type=int, default=64, help="images per seed per step")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    parser.add_argument("--augments", default="none,crop_flip")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--layouts", default="contiguous", help="contiguous and/or channels_last")
    parser.add_argument("--batchings", default="vmap,loop")
    parser.add_argument("--smoke-test", action="store_true", help="16x16 images, small teacher, batch 8")
    args = parser.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    on_cuda = torch.device(device).type == "cuda"
    torch.set_num_threads(args.threads)
    n_seeds = args.seeds or (5 if on_cuda else 2)
    steps = args.steps or (20 if on_cuda else 1)
    batch, side, teacher, name = args.batch, 32, TEACHER, "ResNet-32x4 -> ResNet-8x4"
    if args.smoke_test:
        batch, side, steps, n_seeds = 8, 16, 1, 2
        teacher, name = {**STUDENT, "channels": [8, 8, 16, 32]}, "(smoke test) ResNet-8 -> ResNet-8x4"
    seeds = SEEDS[:n_seeds] if n_seeds <= len(SEEDS) else tuple(range(n_seeds))
    data = synthetic_cifar(steps * batch, 64, side)  # one epoch: exactly ``steps`` batches
    where = torch.cuda.get_device_name(device) if on_cuda else f"cpu, {torch.get_num_threads()} thread(s)"
    print(f"KD step, {name}, batch {batch} x {len(seeds)} seeds, {side}x{side} images of {data.n_classes} "
          f"classes, {steps} timed step(s) "
          f"per configuration, on {where}, torch {torch.__version__}")
    print(f"{'augment':<10} {'precision':<9} {'layout':<14} {'batching':<8} {'teacher/step':<12} {'ms/step':>9} "
          f"{'images/s':>9} {'vmap/loop':>9}")
    rows = itertools.product(args.augments.split(","), args.precisions.split(","), args.layouts.split(","))
    for augment, precision, layout in rows:
        speeds = {}
        for seed_batching in args.batchings.split(","):
            seconds = seconds_per_epoch(data, device, seeds, batch, augment=augment, precision=precision,
                                        channels_last=layout == "channels_last", seed_batching=seed_batching,
                                        teacher=teacher)
            speeds[seed_batching] = steps * batch * len(seeds) / seconds
            ratio = f"{speeds['vmap'] / speeds['loop']:.2f}x" if len(speeds) == 2 and "loop" in speeds else ""
            print(f"{augment:<10} {precision:<9} {layout:<14} {seed_batching:<8} "
                  f"{'yes' if augment != 'none' else 'no':<12} {1e3 * seconds / steps:>9.1f} "
                  f"{speeds[seed_batching]:>9.1f} {ratio:>9}", flush=True)


if __name__ == "__main__":
    main()
