"""Measuring a seed-batched model on a set: its logits in chunks, each seed's accuracy and cross-entropy,
per-class accuracy, and its size. Evaluation runs in eval mode without gradients, in float32.

The per-seed figures of one evaluation stay on the device until they are complete and then come to the host
in one copy (``to_host``): on an accelerator each copy waits for all queued work, so one per evaluation
rather than one per figure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from kdcore import losses
from kdcore.batching import SeedModel
from kdcore.prepared import Subset

EVAL_CHUNK = 8192  # rows per forward pass when evaluating a large set (CIFAR's 10,000 test images, 5 seeds)


def logits_of(model: torch.nn.Module, subset: Subset) -> torch.Tensor:
    """``model`` on every row of ``subset`` -> (S, N, C), in chunks of ``EVAL_CHUNK`` rows (shared or per-seed
    rows, gathered chunk by chunk)."""
    parts = subset.chunks(EVAL_CHUNK)
    return model(parts[0]) if len(parts) == 1 else torch.cat([model(part) for part in parts], dim=1)


def trainable_parameters(model: SeedModel) -> int:
    """Trainable parameters of one network of a seed-batched model (every parameter is stacked over seeds)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad) // model.n_seeds


def to_host(*values: torch.Tensor) -> list[np.ndarray]:
    """Per-seed figures (S,) on any device -> numpy arrays of their own dtypes, in one copy to the host
    (through float64, which holds float32 and float64 values exactly)."""
    host = torch.stack([v.double() for v in values]).cpu().numpy()
    return [row.astype(torch.empty(0, dtype=v.dtype).numpy().dtype) for row, v in zip(host, values)]


def accuracy_and_ce(logits: torch.Tensor, subset: Subset) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-seed accuracy (float64) and mean cross-entropy over the set's real rows, on the device.
    logits (S, M, C) -> (S,), (S,)."""
    # In float64: an accuracy is a ratio of counts, and float32 would print 0.974 as 0.9740000247955322.
    hits = (logits.argmax(dim=-1) == subset.y).double()
    weight = None if subset.weight is None else subset.weight.double()
    acc = losses.weighted_mean(hits, weight)
    return acc, losses.cross_entropy(logits, subset.y, subset.weight)


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of a seed-batched model: the logits on the selection and holdout sets (on the device)
    and each seed's figures (S,) on the host; ``select_loss`` when a selection loss was given."""

    select_logits: torch.Tensor
    holdout_logits: torch.Tensor
    inner_acc: np.ndarray
    inner_loss: np.ndarray
    holdout_acc: np.ndarray
    holdout_loss: np.ndarray
    select_loss: np.ndarray | None = None


def evaluate(model: torch.nn.Module, select: Subset, holdout: Subset,
             select_loss: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Evaluation:
    """Eval-mode logits on the selection and holdout sets, each seed's accuracy and CE on both and, given
    ``select_loss`` (logits (S, M, C) -> (S,)), its value: computed on the device, copied over once."""
    model.eval()
    with torch.no_grad():
        sel_logits, hold_logits = logits_of(model, select), logits_of(model, holdout)
        figures = [*accuracy_and_ce(sel_logits, select), *accuracy_and_ce(hold_logits, holdout)]
        if select_loss is not None:
            figures.append(select_loss(sel_logits))
    host = to_host(*figures)
    return Evaluation(sel_logits, hold_logits, *host[:4], select_loss=host[4] if select_loss is not None else None)


def class_accuracy(logits: torch.Tensor, subset: Subset) -> np.ndarray:
    """(S, C) accuracy on each class's real rows (NaN where the set has none). logits (S, M, C)."""
    n_classes = logits.shape[-1]
    hits = (logits.argmax(dim=-1) == subset.y).double()  # (S, M)
    y = subset.y.expand(hits.shape)
    weight = torch.ones_like(hits) if subset.weight is None else subset.weight.double().expand(hits.shape)
    onehot = torch.nn.functional.one_hot(y, n_classes).double() * weight.unsqueeze(-1)  # (S, M, C)
    counts = onehot.sum(dim=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((hits.unsqueeze(-1) * onehot).sum(dim=1) / counts).cpu().numpy()
