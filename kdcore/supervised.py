"""Training on hard labels alone: the baseline (every class, every group) and a teacher of a class subset
(its classes, its group, in its own label space), each one cross-entropy phase."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kdcore import batching, losses
from kdcore.batching import SeedModel
from kdcore.config import ExperimentConfig, FitConfig
from kdcore.loop import BatchLoss, Phase, SelectLoss, run_phase
from kdcore.prepared import Prepared, Subset
from kdcore.result import FitResult, ReportFn


def new_model(prep: Prepared, fit: FitConfig, seeds: Sequence[int], n_out: int | None = None) -> SeedModel:
    """A fresh seed-batched network of ``fit``'s architecture for ``prep``'s inputs (``n_out`` classes)."""
    n_out = prep.n_classes if n_out is None else n_out
    return batching.batched(fit.model_spec, prep.input_shape, n_out, seeds,
                            seed_batching=batching.seed_batching_for(fit.seed_batching, prep.device),
                            channels_last=fit.channels_last).to(prep.device)


def hard_label_losses(train: Subset, select: Subset) -> tuple[BatchLoss, SelectLoss]:
    """Cross-entropy on ``train``'s labels (the batch loss) and on ``select``'s real rows (the selection loss)."""
    def batch_loss(logits: torch.Tensor, idx: torch.Tensor, epoch: int, x: torch.Tensor) -> torch.Tensor:
        return losses.cross_entropy(logits, train.take(train.y, idx))

    def select_loss(logits: torch.Tensor) -> torch.Tensor:
        return losses.cross_entropy(logits, select.y, select.weight)

    return batch_loss, select_loss


def train_supervised(
    prep: Prepared,
    fit: FitConfig,
    seeds: Sequence[int],
    *,
    method: str,
    eval_every: int = 1,
    on_epoch: ReportFn | None = None,
    classes: Sequence[int] | None = None,
    group: int | None = None,
) -> FitResult:
    """Cross-entropy training on hard labels: the baseline (every class, every group), or a teacher of
    ``classes`` (in their order, its own label space) and of ``group``."""
    train, select, holdout = prep.fit, prep.select, prep.holdout
    every = tuple(range(prep.n_classes))
    classes = every if classes is None else tuple(classes)
    if classes != every or group is not None:
        train, select, holdout = prep.part(classes, group)
    batch_loss, select_loss = hard_label_losses(train, select)
    phase = Phase.of(method, new_model(prep, fit, seeds, len(classes)), fit, batch_loss, select_loss,
                     eval_every=eval_every, classes=classes)
    return run_phase(phase, train, select, holdout, on_epoch)


def train_baseline(prep: Prepared, config: ExperimentConfig, on_epoch: ReportFn | None = None) -> FitResult:
    """The baseline: the student's task (every class, every group) trained on hard labels alone."""
    return train_supervised(prep, config.baseline, config.seeds, method="baseline",
                            eval_every=config.eval_every, on_epoch=on_epoch)
