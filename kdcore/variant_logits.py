"""The teachers' logits over every crop/flip variant of the training images: computed once per study, looked
up per batch (``kd.targets: variants``), instead of running the teachers on every augmented batch.

Under ``crop_flip`` a 32x32 image has 9 x 9 offsets x 2 flips = 162 variants (``kdcore.augment.variants``;
``shift``: 9), so teacher k's logits on every variant of every training image are a table (S, N, V, |S_k|)
that all trials of a study share (the teachers depend on no KD knob). A batch's targets are then rows of
the tables at (image, variant), routed as ``teacher_targets`` routes the teachers' outputs. Measured
(``bench/teacher_variants.py``, ResNet-32x4 on CIFAR-100 shapes, one CPU thread): the teacher is 64 % of a
KD step with a ResNet-8x4 student, a look-up 1.6e5 times cheaper than the teacher's forward, and the fill
(162 forwards per image, once) costs what 0.85 trials of 240 epochs spend on the teacher: from the second
trial of a study on, the cache wins.

Stored in float16: 1.62 GB per seed for CIFAR-100 (50,000 x 162 x 100 x 2 B; fp32 would double it), within
2^-11 of each logit (bf16 is eight times coarser, with a range logits do not need). Not bit for bit the
teacher on the batch even in fp32: kernels pick their algorithm by batch size. SimKD's targets are feature
maps (164 times the logits of ResNet-32x4 per image), which no table holds: it runs its teacher per batch.

On disk (``VariantCache``): one ``.npy`` table per teacher beside the teacher entry, named by a key of the
teachers' key, the augmentation and the precision, written atomically under the key's lock, and read
memory-mapped, so the trials on one node share one copy in the page cache; a trial on an accelerator
moves them there once (``VariantLogits.to``), so that a look-up needs no round trip to the host.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdcore import augment
from kdcore.atomic_file import replacing, write_atomic
from kdcore.batching import SeedModel
from kdcore.config import AUGMENTATIONS
from kdcore.prepared import Subset, rows_of
from kdcore.teachers import teacher_outputs

VARIANTS_FORMAT = 1
DTYPE = np.float16
FILL_ROWS = 4096  # image variants per teacher forward while filling


def variants_key(teacher_key: str, kind: str) -> str:
    """sha256 of what the tables depend on: the teachers (their cache key: data, split, seeds, settings), the
    augmentation and the precision."""
    parts = {"format": VARIANTS_FORMAT, "teachers": teacher_key, "augment": kind, "dtype": np.dtype(DTYPE).name}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class VariantLogits:
    """Each teacher's logits (S, N, V, |S_k|) on variant v of image n of the fit set's features x (N, ...)."""

    kind: str
    tables: tuple[np.ndarray | torch.Tensor, ...]  # float16: numpy (possibly memory-mapped), or on a device

    def to(self, device: str | torch.device) -> VariantLogits:
        """The tables as tensors on ``device``, so that a look-up there needs no round trip to the host."""
        return VariantLogits(self.kind, tuple(torch.as_tensor(np.array(t)).to(device) if isinstance(t, np.ndarray)
                                              else t.to(device) for t in self.tables))

    def lookup(self, fit: Subset, idx: torch.Tensor, variant: torch.Tensor) -> list[torch.Tensor]:
        """Each teacher's logits (S, B, |S_k|), float32 on the fit set's device, for the batch ``idx`` (S, B)
        of ``fit`` whose images became variants ``variant`` (S, B)."""
        rows = idx if fit.rows is None else rows_of(fit.rows, idx)  # (S, B) rows of x
        out = []
        for t in self.tables:
            if isinstance(t, torch.Tensor):
                seeds = torch.arange(rows.shape[0], device=t.device)[:, None]
                out.append(t[seeds, rows.to(t.device), variant.to(t.device)].to(fit.device).float())
            else:
                rows_np, variant_np = rows.cpu().numpy(), variant.cpu().numpy()
                picked = t[np.arange(rows_np.shape[0])[:, None], rows_np, variant_np]
                out.append(torch.from_numpy(np.ascontiguousarray(picked)).to(fit.device).float())
        return out


def compute(teachers: Sequence[SeedModel], fit: Subset, kind: str) -> VariantLogits:
    """Every teacher on every variant of every image of ``fit``'s features (``teacher_outputs``, the padding
    of ``kdcore.augment.black``), in memory."""
    padding, _ = AUGMENTATIONS[kind]
    x = fit.x  # (N, C, H, W): the one copy every seed's rows index
    fill = augment.black(x)
    offsets, flips = augment.variants(kind)
    n_variants = len(flips)
    per_chunk = max(1, FILL_ROWS // n_variants)
    parts: list[list[np.ndarray]] = [[] for _ in teachers]
    for start in range(0, x.shape[0], per_chunk):
        images = x[start:start + per_chunk]
        n = images.shape[0]
        every = augment.crop_and_flip(images.repeat_interleave(n_variants, dim=0).unsqueeze(0),
                                      offsets.repeat(n, 1).unsqueeze(0), flips.repeat(n).unsqueeze(0), padding,
                                      fill)[0]  # (n * V, C, H, W), image-major
        for k, teacher in enumerate(teachers):
            logits, _ = teacher_outputs(teacher, every)  # (S, n * V, |S_k|)
            parts[k].append(logits.reshape(logits.shape[0], n, n_variants, -1).cpu().numpy().astype(DTYPE))
    tables = [np.concatenate(p, axis=1) for p in parts]
    return VariantLogits(kind, tuple(tables))


class VariantCache:
    """The tables on disk under ``root`` (the teacher cache's folder), computed once per key."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def paths(self, key: str, n_teachers: int) -> list[Path]:
        return [self.root / f"{key}.variants.teacher_{k}.npy" for k in range(n_teachers)]

    def get_or_compute(self, teacher_key: str, teachers: Sequence[SeedModel], fit: Subset,
                       kind: str) -> VariantLogits:
        """The tables of these teachers (cache key ``teacher_key``) under augmentation ``kind``, memory-mapped;
        computed and stored first, under the key's lock, when missing or unreadable."""
        key = variants_key(teacher_key, kind)
        self.root.mkdir(parents=True, exist_ok=True)
        found = self._load(key, teachers, fit, kind)
        if found is not None:
            return found
        with open(self.root / f"{key}.variants.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                found = self._load(key, teachers, fit, kind)
                if found is not None:
                    return found
                computed = compute(teachers, fit, kind)
                for path, table in zip(self.paths(key, len(teachers)), computed.tables):
                    with replacing(path) as tmp, open(tmp, "wb") as fh:
                        np.save(fh, table)
                write_atomic(self.root / f"{key}.variants.json", json.dumps(
                    {"format": VARIANTS_FORMAT, "augment": kind, "teachers": teacher_key,
                     "shapes": [list(t.shape) for t in computed.tables]}).encode())  # last: the set is whole
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        loaded = self._load(key, teachers, fit, kind)
        if loaded is None:
            raise OSError(f"the variant tables {self.root / key}.variants.* were written but cannot be read back")
        return loaded

    def _load(self, key: str, teachers: Sequence[SeedModel], fit: Subset, kind: str) -> VariantLogits | None:
        """The stored tables, memory-mapped, or None when the set is missing, partial or of another shape."""
        try:
            json.loads((self.root / f"{key}.variants.json").read_text())
            tables = tuple(np.load(p, mmap_mode="r") for p in self.paths(key, len(teachers)))
        except (OSError, ValueError):
            return None
        want = (fit.x.shape[0], augment.variant_count(kind))
        if any(t.dtype != DTYPE or t.ndim != 4 or t.shape[0] != m.n_seeds or t.shape[1:3] != want
               for t, m in zip(tables, teachers)):
            return None
        return VariantLogits(kind, tables)
