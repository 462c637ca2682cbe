"""The one training loop: a ``Phase`` (what to train, on which losses, for how long, and how to select)
run over the prepared sets, all seeds at once.

Every phase trains one seed-batched model (``kdcore.batching.batched``) whose seed axis holds the runs of all
seeds. The loss is the sum over seeds of each seed's batch-mean loss, and the optimizers act elementwise, so
seed s receives exactly the updates it would receive alone (tests hold a batched run against standalone
runs).

Selection: a phase evaluates every ``eval_every`` epochs on its *selection* set (the inner split under the
honest protocol, the given validation set under the seed protocol), keeps each seed's best weights by
selection loss, stops early when no seed improved for ``patience`` epochs, and restores the best weights.
With early stopping the batched run stops when *every* seed has stalled, so a seed may train past the point
where it would have stopped alone and find a later best; without it, batched equals standalone. The holdout
(the given validation set) is only ever reported.

A training step never waits for the device: it reads no tensor on the host (the LR is a Python float, each
epoch's shuffle is copied over once, the augmentation's draws go over without blocking, the teachers'
routing is computed once), so an accelerator's queue stays full; the figures of an evaluation come over in
one copy (``kdcore.evaluation``). Under ``precision: bf16`` the step's forward passes (the model's and, where
it runs per batch, the teacher's) and its loss run under ``torch.autocast(dtype=torch.bfloat16)``, the loss
on float32 copies of the model's outputs; evaluation and selection stay in float32. fp32 runs without
autocast, so the default path is what it was.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from kdcore import augment
from kdcore.batching import SeedModel
from kdcore.config import FitConfig
from kdcore.errors import TrainingError, one_line
from kdcore.evaluation import class_accuracy, evaluate, logits_of, trainable_parameters
from kdcore.prepared import Subset
from kdcore.result import EpochReport, FitResult, ReportFn
from kdcore.schedules import lr_at

# A batch loss maps (the model's training output: logits (S, B, C), or what ``train_forward`` returns; sample
# indices (S, B) into the fit set; epoch; the batch the model saw, augmented if the fit augments) -> per-seed
# loss (S,). A loss that needs the teacher on the batch runs it on that x.
BatchLoss = Callable[[Any, torch.Tensor, int, torch.Tensor], torch.Tensor]
# A selection loss maps logits on the selection set (S, M, C) -> per-seed loss (S,).
SelectLoss = Callable[[torch.Tensor], torch.Tensor]
# What the batch loss receives of a model on a batch x (default: ``model(x)``, the logits).
Forward = Callable[[torch.nn.Module, torch.Tensor], Any]


class Members(Protocol):
    """What a pack (``kdcore.pack``) adds to a phase whose members are configurations x seeds: each member's
    optimizer settings and learning rate, and which members go on after an evaluation (a configuration
    pruned or stalled leaves, and costs nothing from then on). The loop owns its bookkeeping; this owns the
    members' models, optimizer and data."""

    def optimizer(self, model: SeedModel) -> Any:
        """The optimizer of the members' parameters (``zero_grad``, ``step``)."""

    def set_lr(self, optimizer: Any, step: int, steps_per_epoch: int, total_steps: int) -> None:
        """Each member's learning rate for optimizer step ``step``."""

    def keep(self, report: EpochReport, stalled: np.ndarray, failed: np.ndarray) -> np.ndarray | None:
        """After an evaluation (``report``; (M,) bools: ``stalled``, the members past their patience;
        ``failed``, those whose selection loss is NaN or infinite): a bool (M,) of the members that go on,
        or None for all of them."""

    def shrink(self, model: SeedModel, optimizer: Any, index: torch.Tensor) -> None:
        """``model`` and ``optimizer`` cut, in place, to the members ``index``."""

    def take(self, model: SeedModel, index: torch.Tensor) -> SeedModel:
        """A new model of ``model``'s members ``index``."""

    def subset(self, part: Subset, index: torch.Tensor) -> Subset:
        """A set cut to the members ``index``."""

    def left(self, result: FitResult) -> None:
        """The outcome of the members that just left (their selected weights and metrics)."""


@dataclass(frozen=True)
class Phase:
    """One training phase: ``model`` trained on ``batch_loss`` with ``fit``'s optimizer, LR schedule and batch
    size for ``epochs`` epochs, selected by ``select_loss`` every ``eval_every`` epochs.

    ``patience`` (epochs, None: never stop early) and ``restore_best`` (keep each seed's best weights by
    selection loss, else the last ones) are the best-weights rule. ``train_forward(model, x)`` is what the
    batch loss receives (SimKD's logits and projected features); evaluation always uses ``model(x)``, the
    logits of the head that predicts at test time (named by ``head``). ``classes[j]`` is the global class of
    output j; ``epoch_offset`` numbers this phase's epochs after an earlier phase's; ``params_detail`` counts
    the parameters of each part where there are several. ``name`` is the method the reports carry.
    ``members`` (a pack's, ``Members``): per-member learning rates and weight decays, and members leaving.
    """

    name: str
    model: SeedModel
    fit: FitConfig
    batch_loss: BatchLoss
    select_loss: SelectLoss
    epochs: int
    patience: int | None
    restore_best: bool
    eval_every: int
    classes: tuple[int, ...]
    train_forward: Forward | None = None
    head: str = "student"
    epoch_offset: int = 0
    params_detail: Mapping[str, int] = field(default_factory=dict)
    wants_variant: bool = False  # the batch loss also takes ``variant=``: each image's augmentation (S, B)
    members: Members | None = None

    @classmethod
    def of(cls, name: str, model: SeedModel, fit: FitConfig, batch_loss: BatchLoss, select_loss: SelectLoss, *,
           eval_every: int, classes: Sequence[int], **changes: Any) -> Phase:
        """A phase that trains as ``fit`` says (its epochs, patience and best-weights rule) but for ``changes``."""
        settings: dict[str, Any] = {"epochs": fit.epochs, "patience": fit.patience, "restore_best": fit.restore_best,
                                    **changes}
        return cls(name, model, fit, batch_loss, select_loss, eval_every=eval_every, classes=tuple(classes),
                   **settings)


def make_optimizer(model: torch.nn.Module, fit: FitConfig) -> torch.optim.Optimizer:
    """The optimizer over the trainable parameters (a frozen part, SimKD's reused head, is left out)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if fit.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=fit.lr, weight_decay=fit.weight_decay)
    if fit.optimizer == "adam_coupled":  # L2 added to the gradient before Adam's scaling (not AdamW)
        return torch.optim.Adam(params, lr=fit.lr, weight_decay=fit.weight_decay)
    if fit.optimizer == "sgd":
        return torch.optim.SGD(params, lr=fit.lr, momentum=fit.momentum, nesterov=fit.nesterov,
                               weight_decay=fit.weight_decay)
    return torch.optim.Adam(params, lr=fit.lr)


def autocast(fit: FitConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The context a training step of ``fit`` runs in: bf16 autocast on ``device`` under ``precision: bf16``,
    nothing at all under fp32 (so that fp32 is bit for bit the path without autocast)."""
    if fit.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def as_float(out: Any) -> Any:
    """The model's training output with every floating tensor in float32 (a loss's log-softmax of bf16
    logits loses most of its digits); float32 tensors are returned as they are, not copied."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (tuple, list)):
        return type(out)(as_float(o) for o in out)
    return out


def run_phase(phase: Phase, train: Subset, select: Subset, holdout: Subset,
              on_epoch: ReportFn | None = None) -> FitResult:
    """Train ``phase`` on ``train`` (shuffled per-seed mini-batches, scheduled LR), select on ``select``, report
    on ``holdout``; the result holds the selected weights, every evaluation and the phase's size."""
    start = time.perf_counter()
    method, model, fit, epoch_offset = phase.name, phase.model, phase.fit, phase.epoch_offset
    epochs, stop_after, restore_best = phase.epochs, phase.patience, phase.restore_best
    if train.per_seed and train.y.shape[0] != model.n_seeds:
        raise TrainingError(f"{method}: the data was prepared for {train.y.shape[0]} seeds (one fold each), "
                            f"but {model.n_seeds} seed(s) train; prepare it with the same seeds")
    seeds = model.seeds
    n_seeds, n = model.n_seeds, len(train)
    device = train.device
    full_batch = fit.batch_size is None or fit.batch_size >= n
    batch_size = n if full_batch else int(fit.batch_size)  # type: ignore[arg-type]
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = steps_per_epoch * epochs
    # Shuffling draws from its own generator per seed, so the order seed s sees does not depend on S.
    shufflers = [torch.Generator().manual_seed(s) for s in seeds]
    members = phase.members
    optimizer = make_optimizer(model, fit) if members is None else members.optimizer(model)
    all_idx = torch.arange(n, device=device).expand(n_seeds, n)

    best_loss = np.full(n_seeds, np.inf)
    best_epoch = np.zeros(n_seeds, dtype=np.int64)
    last_improved = np.full(n_seeds, epoch_offset, dtype=np.int64)  # patience counts from here
    best_metrics = {k: np.full(n_seeds, np.nan) for k in ("inner_acc", "inner_loss", "holdout_acc", "holdout_loss")}
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    history: list[EpochReport] = []
    step = 0
    epoch = 0
    whole = train.inputs() if full_batch else None  # a full batch is every row, every step: gathered once
    augmenting = fit.augments
    if augmenting:  # each seed draws its own crops and flips, from its own generator
        crops, fill = augment.generators(seeds), augment.black(train.x)
    for epoch in range(1, epochs + 1):
        model.train()
        if full_batch:
            batches: Sequence[torch.Tensor] = [all_idx]
        else:
            perm = torch.stack([torch.randperm(n, generator=g) for g in shufflers]).to(device)  # (S, N)
            batches = perm.split(batch_size, dim=1)
        try:
            for idx in batches:
                if members is None:
                    lr = lr_at(fit, step, steps_per_epoch, total_steps)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                else:
                    members.set_lr(optimizer, step, steps_per_epoch, total_steps)
                x = whole if whole is not None else train.take_x(idx)  # (N, ...) or (S, N, ...), or (S, B, ...)
                variant = None
                if augmenting:  # x (S, B, C, H, W); variant (S, B): which crop and flip each image became
                    x, variant = augment.augment_drawn(x, fit.augment, crops, fill, n_seeds)
                extra = {"variant": variant} if phase.wants_variant else {}
                with autocast(fit, device):
                    out = model(x) if phase.train_forward is None else phase.train_forward(model, x)
                    loss = phase.batch_loss(as_float(out), idx, epoch - 1, x, **extra).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
        except RuntimeError as exc:  # e.g. an update too large for float32: the run diverged
            raise TrainingError(f"{method}: training failed at epoch {epoch_offset + epoch}: "
                                f"{one_line(exc)}") from None

        if epoch % phase.eval_every and epoch != epochs:
            continue
        ev = evaluate(model, select, holdout, phase.select_loss)
        inner_acc, inner_ce, holdout_acc, holdout_ce = ev.inner_acc, ev.inner_loss, ev.holdout_acc, ev.holdout_loss
        sel_loss: np.ndarray = ev.select_loss  # type: ignore[assignment]  # given a selection loss
        if not np.isfinite(sel_loss).all() and members is None:  # a pack's diverged members leave (``keep``)
            bad = [seeds[i] for i in np.flatnonzero(~np.isfinite(sel_loss))]
            raise TrainingError(f"{method}: loss became NaN or infinite at epoch {epoch_offset + epoch} (seeds {bad})")
        report = EpochReport(method, epoch_offset + epoch, inner_acc, inner_ce, holdout_acc, holdout_ce)
        history.append(report)
        improved = sel_loss < best_loss
        last_improved = np.where(improved, epoch_offset + epoch, last_improved)
        if improved.any() or not restore_best:
            keep = improved if restore_best else np.ones(n_seeds, dtype=bool)
            best_loss = np.where(improved, sel_loss, best_loss)
            best_epoch = np.where(keep, epoch_offset + epoch, best_epoch)
            for key, value in (("inner_acc", inner_acc), ("inner_loss", inner_ce),
                               ("holdout_acc", holdout_acc), ("holdout_loss", holdout_ce)):
                best_metrics[key] = np.where(keep, value, best_metrics[key])
            mask = torch.as_tensor(keep, device=device)
            for key, value in model.state_dict().items():
                shape = (n_seeds,) + (1,) * (value.dim() - 1)
                best_state[key] = torch.where(mask.view(shape), value.detach(), best_state[key])
        if on_epoch is not None:
            on_epoch(report)
        stalled = (epoch_offset + epoch - last_improved >= stop_after) if stop_after is not None else None
        if members is not None:
            keep = members.keep(report, np.zeros(n_seeds, dtype=bool) if stalled is None else stalled,
                                ~np.isfinite(sel_loss))
            if keep is not None and not keep.all():
                # The members that leave get their outcome now; the rest train on, the model cut to them.
                gone, index = (torch.as_tensor(np.flatnonzero(k)) for k in (~keep, keep))
                members.left(_outcome(phase, members.take(model, gone),
                                      {k: v[gone.to(v.device)] for k, v in best_state.items()},
                                      members.subset(holdout, gone), best_epoch[~keep], epoch_offset + epoch,
                                      start, [], {k: v[~keep] for k, v in best_metrics.items()}))
                if not keep.any():
                    return None  # type: ignore[return-value]  # every member left: ``Members.left`` had them all
                members.shrink(model, optimizer, index)
                train, select, holdout = (members.subset(part, index) for part in (train, select, holdout))
                seeds, n_seeds = model.seeds, model.n_seeds
                shufflers = [shufflers[i] for i in index.tolist()]
                if augmenting:
                    crops = [crops[i] for i in index.tolist()]
                all_idx = torch.arange(n, device=device).expand(n_seeds, n)
                whole = train.inputs() if full_batch else None
                best_loss, best_epoch, last_improved = best_loss[keep], best_epoch[keep], last_improved[keep]
                best_metrics = {k: v[keep] for k, v in best_metrics.items()}
                best_state = {k: v[index.to(v.device)] for k, v in best_state.items()}
                stalled = None if stalled is None else stalled[keep]
        if stalled is not None and stalled.all():
            break

    return _outcome(phase, model, best_state, holdout, best_epoch, epoch_offset + epoch, start, history,
                    best_metrics)


def _outcome(phase: Phase, model: SeedModel, best_state: dict[str, torch.Tensor], holdout: Subset,
             best_epoch: np.ndarray, epochs_run: int, start: float, history: list[EpochReport],
             best_metrics: dict[str, np.ndarray]) -> FitResult:
    """The phase's result for ``model``'s members: their selected weights loaded, their class accuracy on
    the holdout measured."""
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        class_acc = class_accuracy(logits_of(model, holdout), holdout)
    return FitResult(
        method=phase.name,
        seeds=model.seeds,
        best_epoch=best_epoch,
        epochs_run=epochs_run,
        seconds=time.perf_counter() - start,
        model=model,
        history=history,
        classes=phase.classes,
        class_acc=class_acc,
        params=trainable_parameters(model),
        head=phase.head,
        params_detail=dict(phase.params_detail),
        **best_metrics,  # type: ignore[arg-type]  # the four metric arrays
    )
