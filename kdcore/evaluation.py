"""Measuring a seed-batched model on a set: its logits in chunks, each seed's accuracy and cross-entropy,
per-class accuracy, and its size. Evaluation runs in eval mode without gradients.
"""

from __future__ import annotations

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


def accuracy_and_ce(logits: torch.Tensor, subset: Subset) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed accuracy and mean cross-entropy over the set's real rows. logits (S, M, C) -> (S,), (S,)."""
    # In float64: an accuracy is a ratio of counts, and float32 would print 0.974 as 0.9740000247955322.
    hits = (logits.argmax(dim=-1) == subset.y).double()
    weight = None if subset.weight is None else subset.weight.double()
    acc = losses.weighted_mean(hits, weight)
    return acc.cpu().numpy(), losses.cross_entropy(logits, subset.y, subset.weight).cpu().numpy()


def evaluate(model: torch.nn.Module, select: Subset, holdout: Subset
             ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Eval-mode logits on the selection and holdout sets and each seed's accuracy and CE on both."""
    model.eval()
    with torch.no_grad():
        sel_logits, hold_logits = logits_of(model, select), logits_of(model, holdout)
    return (sel_logits, hold_logits, *accuracy_and_ce(sel_logits, select), *accuracy_and_ce(hold_logits, holdout))


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
