"""The teacher on every augmented batch, or its logits cached over every crop/flip variant and looked up?

Under ``crop_flip`` (RandomCrop(32, padding 4) + horizontal flip) a 32x32 image has 9 x 9 offsets x 2 flips =
162 variants, so a teacher's logits could be computed once per study for every variant of every training
image (all trials share the teachers) and each batch's targets looked up by (image, offset, flip), instead of
running the teacher on each augmented batch (``kdcore.student.StudentRun.batch_targets``, today).

Measured here side by side, on the CPU, one thread, the CIFAR-100 teacher of the literature (ResNet-32x4
from ``kdcore.networks``, 7.4 M parameters) and its usual student (ResNet-8x4), for one seed:
(a) per batch of 64: the teacher's forward on the augmented batch, the student's training step beside it
    (what share of a step the teacher is), and the look-up of 64 rows in a cache table (fp32 and fp16);
(b) the one-off fill: 162 forwards per image in large chunks, the time per image-forward, and from it the
    break-even in trials of E epochs: a trial runs the teacher E times per image, the fill 162 times, once per
    study (both scale with the seeds alike, so the seed count cancels);
and how far the looked-up targets are from the teacher run on the same augmented batch (fp32: batch-size
dependent kernels only; fp16/bf16: rounding), and the cache's size for CIFAR-100.

    python bench/teacher_variants.py [--images 1] [--repeats 5] [--threads 1] [--smoke-test]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdcore import augment, batching
from kdcore.config import AUGMENTATIONS, ModelSpec
from kdcore.teachers import teacher_outputs

RESNET32X4 = ModelSpec(name="resnet", depth=32, channels=(8, 16, 32, 64), width=4)
RESNET8X4 = ModelSpec(name="resnet", depth=8, channels=(8, 16, 32, 64), width=4)
SHAPE, CLASSES, BATCH = (3, 32, 32), 100, 64
CIFAR_TRAIN = 50_000


def variants(padding: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (offset, flip) of ``crop_flip``: offsets (V, 2), flips (V,), V = (2 * padding + 1)^2 * 2, in the
    order ``variant = (row * (2 * padding + 1) + col) * 2 + flip``."""
    side = 2 * padding + 1
    grid = torch.cartesian_prod(torch.arange(side), torch.arange(side), torch.arange(2))  # (V, 3)
    return grid[:, :2], grid[:, 2].bool()


def variant_index(offsets: torch.Tensor, flips: torch.Tensor, padding: int) -> torch.Tensor:
    return (offsets[..., 0] * (2 * padding + 1) + offsets[..., 1]) * 2 + flips.long()


def seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median wall time of each of ``fns``, run in turn ``repeats`` times after one warm-up round."""
    times: list[list[float]] = [[] for _ in fns]
    for round_ in range(repeats + 1):
        for fn, out in zip(fns, times):
            start = time.perf_counter()
            fn()
            if round_:
                out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1, help="images whose 162 variants the fill computes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=240, help="a trial's epochs (the literature's 240)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of a trial, for the cache's size")
    parser.add_argument("--smoke-test", action="store_true", help="one image, one repeat")
    args = parser.parse_args()
    if args.smoke_test:
        args.images, args.repeats = 1, 1
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="There is a performance drop")  # vmap's pooling fallback
    padding, _ = AUGMENTATIONS["crop_flip"]
    teacher = batching.batched(RESNET32X4, SHAPE, CLASSES, [0])
    student = batching.batched(RESNET8X4, SHAPE, CLASSES, [0])
    teacher.eval()
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(max(args.images, BATCH), *SHAPE, generator=gen)  # stand-ins for normalised images
    fill = augment.black(images)
    crops = augment.generators([0])

    # (a) per batch: the teacher on an augmented batch of 64, a student step, and the look-up
    idx = torch.arange(BATCH)
    offsets, flips = augment.draw("crop_flip", crops, BATCH)  # (1, B, 2), (1, B)
    batch = augment.crop_and_flip(images[idx].unsqueeze(0), offsets, flips, padding, fill)  # (1, B, C, H, W)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    labels = torch.randint(0, CLASSES, (1, BATCH), generator=gen)

    def student_step() -> None:
        loss = torch.nn.functional.cross_entropy(student(batch).flatten(0, 1), labels.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    n_variants = (2 * padding + 1) ** 2 * 2
    table_rows = 1000  # a table of 1000 images' variants (a random gather costs what it costs in a larger one)
    tables = {dtype: torch.randn(table_rows, n_variants, CLASSES, generator=gen).to(dtype)
              for dtype in (torch.float32, torch.float16)}
    rows = torch.randint(0, table_rows, (BATCH,), generator=gen)
    which = variant_index(offsets[0], flips[0], padding)
    t_lookup = {dtype: seconds(lambda t=t: t[rows, which].float(), 200) for dtype, t in tables.items()}

    # (b) the fill: every variant of ``images`` images, in chunks of 162 (one image's variants per chunk)
    all_offsets, all_flips = variants(padding)
    chunk = images[: args.images].repeat_interleave(n_variants, dim=0).unsqueeze(0)  # (1, n * V, C, H, W)
    every = augment.crop_and_flip(chunk, all_offsets.repeat(args.images, 1).unsqueeze(0),
                                  all_flips.repeat(args.images).unsqueeze(0), padding, fill)
    # Interleaved, so that a machine shared with other work slows all three alike: medians over the rounds.
    t_teacher, t_student, t_fill = interleaved([lambda: teacher_outputs(teacher, batch), student_step,
                                                lambda: teacher_outputs(teacher, every)], args.repeats)
    per_forward_fill = t_fill / (args.images * n_variants)
    per_forward_batch = t_teacher / BATCH

    # how far the cache's targets are from the teacher on the training batch
    cached, _ = teacher_outputs(teacher, every)  # (1, n * V, C)
    cache = cached[0].view(args.images, n_variants, CLASSES)
    first = min(args.images, BATCH)
    on_batch = teacher_outputs(teacher, batch)[0][0, :first]  # rows 0..first-1 of the batch are images 0..
    looked = cache[torch.arange(first), which[:first]]
    diff32 = float((looked - on_batch).abs().max())
    diff16 = float((looked.half().float() - on_batch).abs().max())
    diffbf = float((looked.bfloat16().float() - on_batch).abs().max())
    scale = float(on_batch.abs().max())

    print(f"teacher ResNet-32x4 ({sum(p.numel() for p in teacher.parameters()):,} parameters), student "
          f"ResNet-8x4, CIFAR-100 shapes, one seed, {args.threads} thread(s); median of {args.repeats}")
    print("(a) per batch of 64 augmented images")
    print(f"  teacher forward on the batch        {t_teacher * 1e3:10.1f} ms")
    print(f"  student training step (fwd + bwd)   {t_student * 1e3:10.1f} ms  (teacher / step: "
          f"{t_teacher / (t_teacher + t_student):.0%} of a KD step)")
    for dtype, t in t_lookup.items():
        name = str(dtype).replace("torch.", "")
        print(f"  cache look-up, {name:<8} table        {t * 1e6:10.1f} us  (teacher / look-up: "
              f"{t_teacher / t:,.0f}x)")
    print(f"(b) the fill: {args.images} image(s) x {n_variants} variants in one call")
    print(f"  per image-forward, fill             {per_forward_fill * 1e3:10.2f} ms")
    print(f"  per image-forward, batch of 64      {per_forward_batch * 1e3:10.2f} ms")
    fill_trials = n_variants * per_forward_fill / (args.epochs * per_forward_batch)
    print(f"  fill / one trial's teacher forwards ({args.epochs} epochs): {fill_trials:.2f} "
          f"(break-even after {fill_trials:.2f} trials of {args.epochs} epochs, "
          f"{n_variants * per_forward_fill / per_forward_batch:.0f} epochs in all)")
    for trials in (1, 10, 100):
        per_batch = trials * args.epochs * per_forward_batch
        with_cache = n_variants * per_forward_fill + trials * args.epochs * t_lookup[torch.float16] / BATCH
        print(f"  {trials:>4} trials: teacher time per image, per batch {per_batch:8.2f} s, cached "
              f"{with_cache:8.2f} s ({per_batch / with_cache:.1f}x)")
    one = CIFAR_TRAIN * n_variants * CLASSES
    print(f"  CIFAR-100 fill, one seed, this CPU thread: {CIFAR_TRAIN * n_variants * per_forward_fill / 3600:.0f} h")
    print(f"(c) cache size for CIFAR-100 (50,000 x {n_variants} x {CLASSES}): fp16/bf16 {one * 2 / 1e9:.2f} GB, fp32 "
          f"{one * 4 / 1e9:.2f} GB per seed; {args.seeds} seeds (one teacher each): fp16 "
          f"{args.seeds * one * 2 / 1e9:.1f} GB")
    print(f"(d) looked-up vs on-batch logits, max |diff| (logits up to {scale:.1f}): fp32 {diff32:.2e}, "
          f"fp16 {diff16:.2e}, bf16 {diffbf:.2e}")


if __name__ == "__main__":
    main()
