"""Training-time image augmentation on the device, for all seeds at once, each seed from its own generator.

``crop_flip`` is the CIFAR standard of the KD literature (RepDistiller, SimKD and mdistiller agree):
RandomCrop(32, padding=4) then RandomHorizontalFlip(0.5). ``shift`` is a small translation without flips,
for 8x8 digits (a flipped digit is another digit): pad 1, crop back. ``none`` leaves the batch alone.

The toolboxes pad *raw* pixels with 0 and normalise after; kdtune's images are normalised when loaded, so
the padding is the normalised value of a black pixel, ``fill`` (per channel: ``-mean / std``). Every seed
draws its crops and flips from its own ``torch.Generator``, so what seed s sees depends on s alone, not on
which other seeds train beside it, and a re-run draws the same.

The draws are made on the CPU (their generators are CPU generators, which pins the values) and go to an
accelerator from pinned memory without blocking, so a training step does not wait for the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kdcore.config import AUGMENTATIONS
from kdcore.errors import ConfigError

AUGMENT_SEED_OFFSET = 0x5EED_A06  # seed s draws its crops from Generator(s + this), apart from its shuffling


def generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One augmentation generator per seed, independent of the seed's batch shuffling."""
    return [torch.Generator().manual_seed(int(s) + AUGMENT_SEED_OFFSET) for s in seeds]


def black(x: torch.Tensor) -> torch.Tensor:
    """(C,) the padding of images x (N, C, H, W): each channel's darkest value, which for normalised images
    (CIFAR's constants or computed statistics, the digits) is where a black raw pixel lands."""
    if x.dim() != 4:
        raise ConfigError(f"augmentation needs images (N, C, H, W), but the features have shape {tuple(x.shape)}")
    return x.amin(dim=(0, 2, 3))


def draw(kind: str, generators: Sequence[torch.Generator], batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each seed's crop offsets (S, B, 2) in 0..2*padding (row, column) and flips (S, B), on the CPU."""
    padding, flips = _settings(kind)
    offsets, flipped = [], []
    for g in generators:  # one seed's draws from its own generator: offsets first, then flips
        offsets.append(torch.randint(0, 2 * padding + 1, (batch, 2), generator=g))
        flipped.append(torch.rand(batch, generator=g) < 0.5 if flips else torch.zeros(batch, dtype=torch.bool))
    return torch.stack(offsets), torch.stack(flipped)


def crop_and_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int,
                  fill: torch.Tensor) -> torch.Tensor:
    """Pad (S, B, C, H, W) images by ``padding`` with ``fill`` (C,), cut each back to H x W at its offset
    (S, B, 2), mirror those whose flip (S, B) is set. Pure: the same inputs give the same pixels."""
    s, b, c, h, w = x.shape
    if padding == 0 and not bool(flips.any()):
        return x
    padded = fill.to(x.dtype).view(1, 1, c, 1, 1).expand(s, b, c, h + 2 * padding, w + 2 * padding).clone()
    padded[..., padding:padding + h, padding:padding + w] = x
    offsets, flips = _to_device(offsets, x.device), _to_device(flips, x.device)
    rows = offsets[..., 0, None] + torch.arange(h, device=x.device)  # (S, B, H)
    cols = offsets[..., 1, None] + torch.arange(w, device=x.device)  # (S, B, W)
    cols = torch.where(flips[..., None], cols.flip(-1), cols)  # a flip reads the columns backwards
    flat = padded.reshape(s * b, c, h + 2 * padding, w + 2 * padding)
    sample = torch.arange(s * b, device=x.device)[:, None, None]
    out = flat[sample, :, rows.reshape(s * b, h, 1), cols.reshape(s * b, 1, w)]  # (S*B, H, W, C)
    return out.permute(0, 3, 1, 2).reshape(s, b, c, h, w)


def augment(x: torch.Tensor, kind: str, generators: Sequence[torch.Generator], fill: torch.Tensor,
            n_seeds: int) -> torch.Tensor:
    """The augmented batch (S, B, C, H, W) of ``x``: (S, B, C, H, W) per seed or (B, C, H, W) shared by every
    seed (then each seed still draws its own crops and flips); ``x`` itself when ``kind`` is ``none``."""
    return augment_drawn(x, kind, generators, fill, n_seeds)[0]


def augment_drawn(x: torch.Tensor, kind: str, generators: Sequence[torch.Generator], fill: torch.Tensor,
                  n_seeds: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``augment``, and which variant (``variant_index``) each seed's image became (S, B) on the CPU;
    None for ``none``."""
    padding, flips = _settings(kind)
    if padding == 0 and not flips:  # ``none``
        return x, None
    if x.dim() == 4:
        x = x.unsqueeze(0).expand(n_seeds, *x.shape)
    if x.dim() != 5 or x.shape[0] != n_seeds or len(generators) != n_seeds:
        raise ConfigError(f"augmentation {kind!r} needs images (S={n_seeds}, B, C, H, W) or (B, C, H, W) and one "
                          f"generator per seed, but got shape {tuple(x.shape)} and {len(generators)} generator(s)")
    offsets, flipped = draw(kind, generators, x.shape[1])
    return crop_and_flip(x, offsets, flipped, padding, fill), variant_index(kind, offsets, flipped)


def variant_count(kind: str) -> int:
    """How many images augmentation ``kind`` makes of one: (2 * padding + 1)^2 offsets, times 2 with flips
    (``crop_flip``: 162; ``shift``: 9; ``none``: 1)."""
    padding, flips = _settings(kind)
    return (2 * padding + 1) ** 2 * (2 if flips else 1)


def variant_index(kind: str, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """The variant number of crop offsets (..., 2) and flips (...): ``(row * (2p + 1) + col) * F + flip``,
    F = 2 with flips, else 1 (0 .. ``variant_count(kind)`` - 1)."""
    padding, flipping = _settings(kind)
    cell = offsets[..., 0].long() * (2 * padding + 1) + offsets[..., 1].long()
    return cell * 2 + flips.long() if flipping else cell


def variants(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every variant of ``kind`` in the order of ``variant_index``: offsets (V, 2) and flips (V,)."""
    padding, flipping = _settings(kind)
    side = torch.arange(2 * padding + 1)
    grid = torch.cartesian_prod(side, side, torch.arange(2 if flipping else 1)).reshape(-1, 3)  # (V, 3)
    return grid[:, :2], grid[:, 2].bool()


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; a CPU tensor bound for CUDA goes from pinned memory without blocking (a copy from
    pageable memory waits for every queued kernel). The pinned block is fresh, so nothing overwrites it
    before the copy has run."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _settings(kind: str) -> tuple[int, bool]:
    if kind not in AUGMENTATIONS:
        raise ConfigError(f"augment must be one of {list(AUGMENTATIONS)}, but got {kind!r}")
    return AUGMENTATIONS[kind]
