"""Training: the baseline, the teachers of a task and the distilled student, all seeds at once.

Every method trains one seed-batched model (``kdcore.batching.batched``) whose seed axis holds the runs of
all seeds. The loss is the sum over seeds of each seed's batch-mean loss, and the optimizers act
elementwise, so seed s receives exactly the updates it would receive alone (tests hold a batched run
against standalone runs). The teachers and the routing come from the task (``kdcore.task``): each teacher
trains on the samples of its classes (and group), in its own label space; the student learns every class
from the teachers routed to each sample.

Selection: each method evaluates every ``eval_every`` epochs on its *selection* set (the inner split under
the honest protocol, the given validation set under the seed protocol), keeps each seed's best weights by
selection loss, stops early when no seed improved for ``patience`` epochs, and restores the best weights.
With early stopping the batched run stops when *every* seed has stalled, so a seed may train past the
point where it would have stopped alone and find a later best; without it, batched equals standalone.
The holdout (the given validation set) is only ever reported.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, SupportsFloat

import numpy as np
import torch

from kdcore import losses
from kdcore.batching import SeedModel, StackedModel, batched
from kdcore.checkpoint import load_teacher
from kdcore.config import ExperimentConfig, FitConfig, KDConfig
from kdcore.dataset import ClassificationData
from kdcore.errors import ConfigError, DataError, TrainingError
from kdcore.networks import build
from kdcore.schedules import annealing_phi, lr_at
from kdcore.splits import inner_folds, inner_split
from kdcore.task import Task, Teacher, check_method, resolve


def _rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` (S, B) of a per-seed tensor t (S, N, ...), each seed from its own rows: -> (S, B, ...)."""
    if t.dim() == 2:
        return t.gather(1, idx)
    if t.dim() == 3:
        return t.gather(1, idx.unsqueeze(-1).expand(*idx.shape, t.shape[-1]))
    return t[torch.arange(t.shape[0], device=t.device)[:, None], idx]


@dataclass(frozen=True)
class Subset:
    """Samples on the training device, shared by every seed or one set per seed.

    Shared: x (N, ...), y (N,), d (N,). Per seed: x (S, M, ...), y (S, M), d (S, M), each seed its own rows.
    d is each sample's group (its domain in the multi-domain task; zeros when the data has none).
    Per-seed sets of unequal sizes are padded to a common M: a fitting set repeats some of the seed's own
    rows (so every position is a real sample and batches stay plain), an ``evaluation`` set pads with rows
    of ``weight`` 0, which every metric and loss leaves out. ``weight`` (S, M) is None when no row is
    padding; ``real`` holds each seed's number of real rows (they come first) when a fitting set was padded.
    """

    x: torch.Tensor
    y: torch.Tensor
    d: torch.Tensor
    weight: torch.Tensor | None = None
    evaluation: bool = False
    real: tuple[int, ...] | None = None

    @property
    def per_seed(self) -> bool:
        return self.y.dim() == 2

    def restrict(self, keep: torch.Tensor, relabel: torch.Tensor | None = None, length: int | None = None) -> Subset:
        """The rows where ``keep`` (shaped like y) holds, each seed's own, re-padded the way this set was
        padded to ``length`` (default: the longest); labels mapped through ``relabel`` (C,) when given."""
        if not self.per_seed:
            y = self.y[keep]
            return Subset(self.x[keep], y if relabel is None else relabel[y], self.d[keep])
        keep = keep.clone()
        if self.weight is not None:
            keep &= self.weight > 0
        if self.real is not None:  # a fitting set's repeated rows are its padding: keep each row once
            keep &= torch.arange(keep.shape[1], device=keep.device) < torch.tensor(self.real, device=keep.device)[:, None]
        rows = [torch.nonzero(keep[s]).squeeze(1) for s in range(keep.shape[0])]
        out = _padded(self.x, self.y, self.d, rows, evaluation=self.evaluation, length=length)
        return out if relabel is None else dataclasses.replace(out, y=relabel[out.y])

    def take(self, t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` (S, B) of one of this set's tensors, each seed from its own rows: -> (S, B, ...)."""
        if not self.per_seed:
            return t[idx]
        return _rows(t, idx)

    def __len__(self) -> int:
        """Rows per seed (padding included)."""
        return int(self.y.shape[-1])


def _padded(x: torch.Tensor, y: torch.Tensor, d: torch.Tensor, rows: Sequence[torch.Tensor], *,
            evaluation: bool, length: int | None = None) -> Subset:
    """Per-seed subset: seed s gets ``rows[s]`` of x (N, ...) / y (N,) / d (N,), or of its own slice if
    they are per seed already (S, N, ...); padded to ``length`` (default: the longest), an evaluation set
    with weight-0 rows, a fitting set by repeating the seed's own rows."""
    if any(r.numel() == 0 for r in rows):
        raise DataError("a seed's subset is empty")
    m = max(int(r.numel()) for r in rows) if length is None else length
    padded = [r.repeat(-(-m // r.numel()))[:m] for r in rows]  # cycle a seed's own rows up to m
    idx = torch.stack(padded)  # (S, M)
    if y.dim() == 1:
        out_x, out_y, out_d = x[idx], y[idx], d[idx]
    else:
        out_x, out_y, out_d = _rows(x, idx), y.gather(1, idx), d.gather(1, idx)
    counts = tuple(int(r.numel()) for r in rows)
    short = any(c < m for c in counts)
    weight = None
    if evaluation and short:
        weight = torch.stack([(torch.arange(m, device=idx.device) < c).float() for c in counts])
    return Subset(out_x, out_y, out_d, weight, evaluation=evaluation,
                  real=counts if short and not evaluation else None)


@dataclass(frozen=True)
class Prepared:
    """The three roles data plays in an experiment, as tensors: fit on, select on, report on.

    ``folds`` (N,) is the fold of each training sample under the ``folds`` inner validation (else None),
    with ``train_y``/``train_d`` the training labels and groups: what a part of the data (one teacher's)
    needs to be padded to the same length whichever seeds train beside each other.
    """

    fit: Subset
    select: Subset
    holdout: Subset
    input_shape: tuple[int, ...]
    n_classes: int
    n_groups: int
    device: torch.device
    folds: np.ndarray | None = None
    n_folds: int = 0
    train_y: np.ndarray | None = None
    train_d: np.ndarray | None = None

    def part(self, classes: Sequence[int], group: int | None) -> tuple[Subset, Subset, Subset]:
        """Fit, select and holdout sets of the samples of ``classes`` (and ``group``), labelled by position
        in ``classes``: what a teacher of those classes trains, selects and is reported on."""
        cls = torch.as_tensor(list(classes), device=self.device)
        relabel = torch.full((self.n_classes,), -1, dtype=torch.int64, device=self.device)
        relabel[cls] = torch.arange(len(classes), device=self.device)

        def keep(subset: Subset) -> torch.Tensor:
            mask = torch.isin(subset.y, cls)
            return mask if group is None else mask & (subset.d == group)

        fit_len = select_len = None
        if self.folds is not None and self.train_y is not None and self.train_d is not None:
            # Pad to the largest size over all K folds, so a seed's batches do not depend on its neighbours.
            rows = np.isin(self.train_y, list(classes)) & (True if group is None else self.train_d == group)
            per_fold = np.bincount(self.folds[rows], minlength=self.n_folds)
            fit_len, select_len = int((per_fold.sum() - per_fold).max()), int(per_fold.max())
        who = f"the samples of classes {list(classes)}" + ("" if group is None else f" of group {group}")
        try:
            parts = (self.fit.restrict(keep(self.fit), relabel, fit_len),
                     self.select.restrict(keep(self.select), relabel, select_len),
                     self.holdout.restrict(keep(self.holdout), relabel))
        except DataError:
            raise DataError(f"{who} do not reach every seed's training and selection fold; use more data, "
                            "inner 'split' or protocol 'seed'") from None
        if any(len(p) == 0 for p in parts):
            raise DataError(f"{who} are missing from the training, selection or holdout set; every teacher needs "
                            "samples in each")
        return parts


def _role_check(data: ClassificationData, idx: np.ndarray, role: str, config: ExperimentConfig) -> None:
    missing = sorted(set(range(data.n_domains)) - set(data.d_train[idx].tolist()))
    if missing:
        raise DataError(
            f"{data.source}: the honest protocol's {role} data has no samples of group(s) {missing} "
            f"(inner={config.inner!r}, inner_fraction={config.inner_fraction}); use more data, another "
            "inner_fraction, or --protocol seed"
        )


def prepare(data: ClassificationData, config: ExperimentConfig, device: str | torch.device = "cpu") -> Prepared:
    """Split ``data`` by ``config.protocol`` (and ``config.inner``) and move it to ``device``.

    The ``seed`` protocol and the ``split`` inner validation give every seed the same sets (shared tensors);
    ``folds`` gives seed number j its own: fit on every fold but ``config.fold_of(j)``, select on that fold.
    """
    dev = torch.device(device)

    def tensors(x: np.ndarray, y: np.ndarray, d: np.ndarray) -> Subset:
        return Subset(torch.tensor(x, device=dev), torch.tensor(y, device=dev), torch.tensor(d, device=dev))

    holdout = tensors(data.x_valid, data.y_valid, data.d_valid)
    train = tensors(data.x_train, data.y_train, data.d_train)
    shape = (tuple(data.x_train.shape[1:]), data.n_classes, data.n_domains, dev)
    if config.protocol == "seed":
        return Prepared(train, holdout, holdout, *shape)
    if config.inner == "split":
        split = inner_split(data, config.inner_fraction, config.split_seed)
        _role_check(data, split.select, "inner-validation", config)
        _role_check(data, split.fit, "training", config)
        fit = tensors(data.x_train[split.fit], data.y_train[split.fit], data.d_train[split.fit])
        select = tensors(data.x_train[split.select], data.y_train[split.select], data.d_train[split.select])
        return Prepared(fit, select, holdout, *shape)
    folds = inner_folds(data, config.n_folds, config.split_seed)
    fit_rows, select_rows = [], []
    for j in range(len(config.seeds)):
        fold = config.fold_of(j)
        fit_idx, select_idx = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        _role_check(data, select_idx, f"inner-validation (fold {fold})", config)
        _role_check(data, fit_idx, f"training (all but fold {fold})", config)
        fit_rows.append(torch.as_tensor(fit_idx, device=dev))
        select_rows.append(torch.as_tensor(select_idx, device=dev))
    # Pad to the largest size over all K folds (sizes differ by at most one overall), so a seed's batches
    # do not depend on which other seeds train beside it.
    k, n = config.n_folds, data.y_train.size
    fit = _padded(train.x, train.y, train.d, fit_rows, evaluation=False, length=n - n // k)
    select = _padded(train.x, train.y, train.d, select_rows, evaluation=True, length=-(-n // k))
    return Prepared(fit, select, holdout, *shape, folds=folds, n_folds=k, train_y=data.y_train, train_d=data.d_train)


@dataclass(frozen=True)
class EpochReport:
    """Metrics of every seed after ``epoch`` epochs (1-based) of one method; arrays are (S,)."""

    method: str
    epoch: int
    inner_acc: np.ndarray
    inner_loss: np.ndarray
    holdout_acc: np.ndarray
    holdout_loss: np.ndarray

    @property
    def inner_acc_mean(self) -> float:
        return float(self.inner_acc.mean())


ReportFn = Callable[[EpochReport], None]


ACC_DECIMALS = 9  # accuracies in summaries: a ratio of counts, rounded far below any set's resolution


def round_acc(value: SupportsFloat) -> float:
    """An accuracy (or a mean of them) as reported: float64, rounded to ``ACC_DECIMALS``."""
    return round(float(value), ACC_DECIMALS)


@dataclass
class FitResult:
    """One method's outcome at its selected epoch, per seed; ``model`` holds the selected weights.

    ``classes[j]`` is the global class of output j (a teacher of a class subset has its own label space);
    ``class_acc`` (S, len(classes)) is the holdout accuracy on each class at the selected weights (NaN for a
    class the holdout lacks); ``params`` counts one network's trainable parameters (``params_detail`` by
    part where there are several, e.g. SimKD's student and projector); ``head`` names the classifier whose
    logits every metric is measured on.
    """

    method: str
    seeds: tuple[int, ...]
    inner_acc: np.ndarray
    inner_loss: np.ndarray
    holdout_acc: np.ndarray
    holdout_loss: np.ndarray
    best_epoch: np.ndarray
    epochs_run: int
    seconds: float
    model: SeedModel
    history: list[EpochReport] = field(default_factory=list)
    classes: tuple[int, ...] = ()
    class_acc: np.ndarray | None = None
    params: int = 0
    head: str = "student"
    params_detail: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """Seed means and sample standard deviations (ddof=1; 0 for a single seed) plus per-seed rows.

        Accuracies are rounded to ``ACC_DECIMALS`` (far below any evaluation set's resolution), so that
        0.974 is 0.974 in JSON and Parquet, not 0.9740000000000001.
        """

        def std(a: np.ndarray) -> float:
            return round_acc(a.std(ddof=1)) if a.size > 1 else 0.0

        def per_class(i: int) -> list[float | None]:
            if self.class_acc is None:
                return []
            return [None if np.isnan(v) else round_acc(v) for v in self.class_acc[i]]

        return {
            "holdout_acc_mean": round_acc(self.holdout_acc.mean()),
            "holdout_acc_std": std(self.holdout_acc),
            "inner_acc_mean": round_acc(self.inner_acc.mean()),
            "inner_acc_std": std(self.inner_acc),
            "inner_loss_mean": float(self.inner_loss.mean()),
            "holdout_loss_mean": float(self.holdout_loss.mean()),
            "best_epoch_mean": float(self.best_epoch.mean()),
            "epochs_run": self.epochs_run,
            "seconds": self.seconds,
            "classes": list(self.classes),
            "params": self.params,
            "params_detail": dict(self.params_detail),
            "head": self.head,
            "per_seed": [
                {
                    "seed": s,
                    "holdout_acc": round_acc(self.holdout_acc[i]),
                    "inner_acc": round_acc(self.inner_acc[i]),
                    "inner_loss": float(self.inner_loss[i]),
                    "holdout_loss": float(self.holdout_loss[i]),
                    "best_epoch": int(self.best_epoch[i]),
                    "holdout_class_acc": per_class(i),
                }
                for i, s in enumerate(self.seeds)
            ],
        }


# A batch loss maps (the model's training output: logits (S, B, C), or what ``train_forward`` returns; sample
# indices (S, B) into the fit set; epoch) -> per-seed loss (S,).
BatchLoss = Callable[[Any, torch.Tensor, int], torch.Tensor]
# A selection loss maps logits on the selection set (S, M, C) -> per-seed loss (S,).
SelectLoss = Callable[[torch.Tensor], torch.Tensor]

EVAL_CHUNK = 8192  # rows per forward pass when evaluating a large set (CIFAR's 10,000 test images, 5 seeds)


def _make_optimizer(model: torch.nn.Module, fit: FitConfig) -> torch.optim.Optimizer:
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


def logits_of(model: torch.nn.Module, subset: Subset) -> torch.Tensor:
    """``model(subset.x)`` -> (S, N, C), in chunks of ``EVAL_CHUNK`` rows (shared or per-seed rows)."""
    x, axis = subset.x, 1 if subset.per_seed else 0
    if x.shape[axis] <= EVAL_CHUNK:
        return model(x)
    return torch.cat([model(part) for part in x.split(EVAL_CHUNK, dim=axis)], dim=1)


def trainable_parameters(model: SeedModel) -> int:
    """Trainable parameters of one network of a seed-batched model (every parameter is stacked over seeds)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad) // model.n_seeds


def _accuracy_and_ce(logits: torch.Tensor, subset: Subset) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed accuracy and mean cross-entropy over the set's real rows. logits (S, M, C) -> (S,), (S,)."""
    # In float64: an accuracy is a ratio of counts, and float32 would print 0.974 as 0.9740000247955322.
    hits = (logits.argmax(dim=-1) == subset.y).double()
    weight = None if subset.weight is None else subset.weight.double()
    acc = losses.weighted_mean(hits, weight)
    return acc.cpu().numpy(), losses.cross_entropy(logits, subset.y, subset.weight).cpu().numpy()


def _evaluate(model: torch.nn.Module, select: Subset, holdout: Subset
              ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Eval-mode logits on the selection and holdout sets and each seed's accuracy and CE on both."""
    model.eval()
    with torch.no_grad():
        sel_logits, hold_logits = logits_of(model, select), logits_of(model, holdout)
    return (sel_logits, hold_logits, *_accuracy_and_ce(sel_logits, select), *_accuracy_and_ce(hold_logits, holdout))


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


def _run_fit(
    method: str,
    model: SeedModel,
    fit: FitConfig,
    train: Subset,
    select: Subset,
    holdout: Subset,
    batch_loss: BatchLoss,
    select_loss: SelectLoss,
    *,
    eval_every: int,
    on_epoch: ReportFn | None,
    epoch_offset: int = 0,
    epochs: int | None = None,
    patience: int | None | str = "config",  # "config": the FitConfig's
    restore_best: bool | None = None,
    classes: Sequence[int] = (),
    train_forward: Callable[[torch.nn.Module, torch.Tensor], Any] | None = None,
    head: str = "student",
) -> FitResult:
    """The one training loop: shuffled per-seed mini-batches, scheduled LR, selection and early stopping.

    ``train_forward(model, x)`` is what the batch loss receives (default ``model(x)``, the logits; SimKD's
    logits and projected features); evaluation always uses ``model(x)``, the logits of the head that
    predicts at test time (named by ``head`` in the results).
    """
    start = time.perf_counter()
    if train.per_seed and train.x.shape[0] != model.n_seeds:
        raise TrainingError(f"{method}: the data was prepared for {train.x.shape[0]} seeds (one fold each), "
                            f"but {model.n_seeds} seed(s) train; prepare it with the same seeds")
    epochs = fit.epochs if epochs is None else epochs
    stop_after: int | None = fit.patience if isinstance(patience, str) else patience
    restore_best = fit.restore_best if restore_best is None else restore_best
    seeds = model.seeds
    n_seeds, n = model.n_seeds, len(train)
    device = train.x.device
    full_batch = fit.batch_size is None or fit.batch_size >= n
    batch_size = n if full_batch else int(fit.batch_size)  # type: ignore[arg-type]
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = steps_per_epoch * epochs
    # Shuffling draws from its own generator per seed, so the order seed s sees does not depend on S.
    shufflers = [torch.Generator().manual_seed(s) for s in seeds]
    optimizer = _make_optimizer(model, fit)
    all_idx = torch.arange(n, device=device).expand(n_seeds, n)

    best_loss = np.full(n_seeds, np.inf)
    best_epoch = np.zeros(n_seeds, dtype=np.int64)
    last_improved = np.full(n_seeds, epoch_offset, dtype=np.int64)  # patience counts from here
    best_metrics = {k: np.full(n_seeds, np.nan) for k in ("inner_acc", "inner_loss", "holdout_acc", "holdout_loss")}
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    history: list[EpochReport] = []
    step = 0
    epoch = 0
    for epoch in range(1, epochs + 1):
        model.train()
        if full_batch:
            batches: Sequence[torch.Tensor] = [all_idx]
        else:
            perm = torch.stack([torch.randperm(n, generator=g) for g in shufflers]).to(device)  # (S, N)
            batches = perm.split(batch_size, dim=1)
        try:
            for idx in batches:
                lr = lr_at(fit, step, steps_per_epoch, total_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x = train.x if full_batch else train.take(train.x, idx)  # (N, ...) or (S, N, ...), or (S, B, ...)
                out = model(x) if train_forward is None else train_forward(model, x)
                loss = batch_loss(out, idx, epoch - 1).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
        except RuntimeError as exc:  # e.g. an update too large for float32: the run diverged
            raise TrainingError(f"{method}: training failed at epoch {epoch_offset + epoch}: "
                                f"{str(exc).splitlines()[0]}") from None

        if epoch % eval_every and epoch != epochs:
            continue
        sel_logits, _, inner_acc, inner_ce, holdout_acc, holdout_ce = _evaluate(model, select, holdout)
        with torch.no_grad():
            sel_loss = select_loss(sel_logits).cpu().numpy()
        if not np.isfinite(sel_loss).all():
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
        if stop_after is not None and (epoch_offset + epoch - last_improved >= stop_after).all():
            break

    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        class_acc = class_accuracy(logits_of(model, holdout), holdout)
    return FitResult(
        method=method,
        seeds=seeds,
        best_epoch=best_epoch,
        epochs_run=epoch_offset + epoch,
        seconds=time.perf_counter() - start,
        model=model,
        history=history,
        classes=tuple(classes),
        class_acc=class_acc,
        params=trainable_parameters(model),
        head=head,
        **best_metrics,  # type: ignore[arg-type]  # the four metric arrays
    )


def new_model(prep: Prepared, fit: FitConfig, seeds: Sequence[int], n_out: int | None = None) -> SeedModel:
    """A fresh seed-batched network of ``fit``'s architecture for ``prep``'s inputs (``n_out`` classes)."""
    n_out = prep.n_classes if n_out is None else n_out
    return batched(fit.model_spec, prep.input_shape, n_out, seeds).to(prep.device)


def _ce_losses(train: Subset, select: Subset) -> tuple[BatchLoss, SelectLoss]:
    def batch_loss(logits: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
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
    batch_loss, select_loss = _ce_losses(train, select)
    return _run_fit(method, new_model(prep, fit, seeds, len(classes)), fit, train, select, holdout, batch_loss,
                    select_loss, eval_every=eval_every, on_epoch=on_epoch, classes=classes)


def train_baseline(prep: Prepared, config: ExperimentConfig, on_epoch: ReportFn | None = None) -> FitResult:
    """The baseline: the student's task (every class, every group) trained on hard labels alone."""
    return train_supervised(prep, config.baseline, config.seeds, method="baseline",
                            eval_every=config.eval_every, on_epoch=on_epoch)


def task_of(prep: Prepared, config: ExperimentConfig) -> Task:
    """The experiment's task resolved against the prepared data (ConfigError naming a bad layout)."""
    pairs = [torch.stack([s.y.reshape(-1), s.d.reshape(-1)], dim=1) for s in (prep.fit, prep.select, prep.holdout)]
    cells = torch.unique(torch.cat(pairs), dim=0).cpu().numpy()
    return resolve(config.task, config.teacher, prep.n_classes, prep.n_groups, cells)


def evaluate_teacher(prep: Prepared, teacher: Teacher, model: SeedModel, seconds: float = 0.0) -> FitResult:
    """A teacher that was not trained here (a checkpoint): its metrics on its own classes' samples."""
    _, select, holdout = prep.part(teacher.classes, teacher.group)
    _, hold_logits, inner_acc, inner_ce, holdout_acc, holdout_ce = _evaluate(model, select, holdout)
    class_acc = class_accuracy(hold_logits, holdout)
    zeros = np.zeros(model.n_seeds, dtype=np.int64)
    return FitResult(teacher.name, model.seeds, inner_acc, inner_ce, holdout_acc, holdout_ce, zeros, 0, seconds,
                     model, classes=teacher.classes, class_acc=class_acc, params=trainable_parameters(model))


def train_teachers(prep: Prepared, config: ExperimentConfig, on_epoch: ReportFn | None = None) -> list[FitResult]:
    """The task's teachers: each trained (or loaded from its checkpoint) on its own classes and group,
    selected and reported on those samples only, in its own label space."""
    out = []
    for teacher in task_of(prep, config).teachers:
        if teacher.checkpoint is not None:
            start = time.perf_counter()
            model = load_teacher(teacher, prep.input_shape, config.seeds, prep.device)
            out.append(evaluate_teacher(prep, teacher, model, time.perf_counter() - start))
            continue
        out.append(train_supervised(prep, teacher.fit, config.seeds, method=teacher.name,
                                    eval_every=config.eval_every, on_epoch=on_epoch, classes=teacher.classes,
                                    group=teacher.group))
    return out


@dataclass(frozen=True)
class Targets:
    """The teachers' targets for a set of samples, slot r of sample i holding one routed teacher.

    logits (S, N, R, C): teacher logits placed in the global class slots (0 where the teacher does not know
    the class); mask (S, N, R, C): the classes that slot's teacher knows, None when every teacher knows every
    class; weight (S, N, R): 1 for a routed teacher, 0 for an empty slot, None when no slot is empty. R is
    the largest number of teachers routed to one sample (1 in the multi-domain task, which has neither mask
    nor weight).
    """

    logits: torch.Tensor
    mask: torch.Tensor | None
    weight: torch.Tensor | None

    def rows(self, idx: torch.Tensor) -> Targets:
        """Each seed's rows ``idx`` (S, B) -> targets of shape (S, B, ...)."""
        return Targets(_rows(self.logits, idx), None if self.mask is None else _rows(self.mask, idx),
                       None if self.weight is None else _rows(self.weight, idx))


def teacher_targets(task: Task, teachers: Sequence[SeedModel], subset: Subset) -> Targets:
    """The routed teachers' targets for ``subset``, each teacher run once (``teacher_outputs``)."""
    if len(teachers) != len(task.teachers):
        raise TrainingError(f"the task has {len(task.teachers)} teachers, but {len(teachers)} models were given")
    device = subset.y.device
    route = torch.as_tensor(task.route(subset.y.cpu().numpy(), subset.d.cpu().numpy()), device=device)
    n_seeds = teachers[0].n_seeds
    route = route.expand(n_seeds, *route.shape[-2:])  # (S, N, K)
    n_slots = max(1, int(route.sum(dim=-1).max()))
    slot = torch.nn.functional.one_hot((route.cumsum(dim=-1) - 1).clamp_min(0), n_slots).bool()  # (S, N, K, R)
    slot &= route.unsqueeze(-1)
    shape = (*route.shape[:2], n_slots, task.n_classes)
    logits = torch.zeros(shape, device=device)
    mask = torch.zeros(shape, dtype=torch.bool, device=device)
    known = torch.as_tensor(task.class_mask, device=device)  # (K, C)
    for teacher, model in zip(task.teachers, teachers):
        local, _ = teacher_outputs(model, subset.x)  # (S, N, |S_k|): every row, kept where routed to this teacher
        full = torch.zeros((*local.shape[:2], task.n_classes), device=device)
        full[..., list(teacher.classes)] = local
        here = slot[:, :, teacher.index].unsqueeze(-1)  # (S, N, R, 1)
        logits = torch.where(here, full.unsqueeze(2), logits)
        mask = mask | (here & known[teacher.index])
    filled = slot.any(dim=2)  # (S, N, R)
    # An empty slot (a sample with fewer teachers than R) counts for nothing (weight 0); every class is
    # "known" there so that its softmax stays finite.
    mask = mask | ~filled.unsqueeze(-1)
    return Targets(logits, None if bool(mask.all()) else mask, None if bool(filled.all()) else filled.float())


def train_student(
    prep: Prepared,
    config: ExperimentConfig,
    teachers: Sequence[SeedModel] | None,
    on_epoch: ReportFn | None = None,
) -> FitResult:
    """The student distilled from the task's teachers (Hinton KD over each routed teacher's classes, or
    annealing KD).

    Without a KD term (Hinton with alpha = 0: the ablation of a configuration) the student trains on
    hard labels alone, exactly as ``(1 - 0) * CE`` would, and ``teachers`` may be None.
    """
    kd: KDConfig = config.kd
    fit = config.student
    train, select, holdout = prep.fit, prep.select, prep.holdout
    every = tuple(range(prep.n_classes))
    if kd.method == "simkd":
        if teachers is None:
            raise TrainingError("kd.method 'simkd' needs its teacher, but none was given")
        return _train_simkd(prep, config, teachers, on_epoch)
    model = new_model(prep, fit, config.seeds)
    if not kd.uses_teachers:
        batch_ce, select_ce = _ce_losses(train, select)
        return _run_fit("student", model, fit, train, select, holdout, batch_ce, select_ce,
                        eval_every=config.eval_every, on_epoch=on_epoch, classes=every)
    if teachers is None:
        raise TrainingError(f"kd.method {kd.method!r} with alpha={kd.alpha} needs teachers, but none were given")
    task = task_of(prep, config)
    targets = teacher_targets(task, teachers, train)  # (S, N, R, C) routed by the task
    if model.n_seeds != targets.logits.shape[0]:
        raise TrainingError(f"teachers have {targets.logits.shape[0]} seeds, but the student has {model.n_seeds}")

    if kd.method == "hinton":
        _, select_ce = _ce_losses(train, select)

        def hinton_loss(logits: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
            t = targets.rows(idx)
            return losses.subset_hinton_kd(logits, t.logits, t.mask, t.weight, train.take(train.y, idx), kd.alpha,
                                           kd.temperature)

        return _run_fit("student", model, fit, train, select, holdout, hinton_loss, select_ce,
                        eval_every=config.eval_every, on_epoch=on_epoch, classes=every)

    check_method(task, "annealing", fit.model)
    # Annealing KD, phase 1: regress on phi * teacher logits, no labels; select by MSE to the full teacher.
    full = targets.logits[:, :, 0]  # (S, N, C): the one routed teacher of each sample
    select_targets = teacher_targets(task, teachers, select).logits[:, :, 0]

    def phase1_loss(logits: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        phi = annealing_phi(epoch, epochs=kd.anneal_epochs, tau_max=kd.tau_max)
        return losses.annealing_mse(logits, losses.annealing_target(_rows(full, idx), phi))

    def phase1_select(logits: torch.Tensor) -> torch.Tensor:
        return losses.annealing_mse(logits, select_targets, select.weight)

    phase1 = _run_fit("student", model, fit, train, select, holdout, phase1_loss, phase1_select,
                      eval_every=config.eval_every, on_epoch=on_epoch, epochs=kd.anneal_epochs,
                      patience=None, restore_best=True, classes=every)
    # Phase 2 starts from the best phase-1 weights with a fresh optimizer and a restarted LR schedule.
    batch_ce, select_ce = _ce_losses(train, select)
    phase2 = _run_fit("student", phase1.model, fit, train, select, holdout, batch_ce, select_ce,
                      eval_every=config.eval_every, on_epoch=on_epoch, epoch_offset=phase1.epochs_run, classes=every)
    phase2.history = phase1.history + phase2.history
    phase2.seconds += phase1.seconds
    return phase2


TEACHER_CACHE_ELEMENTS = 2**28  # teacher feature maps of the whole fit set up to 1 GiB are computed once


def teacher_outputs(teacher: SeedModel, x: torch.Tensor, stages: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The teacher's logits (S, N, C) on x (N, ...) or (S, N, ...) and, for feature distillation, its last
    ``stages`` feature maps (S, N, C_i, H_i, W_i): the only place teachers run (eval mode, no gradient, so a
    row's outputs do not depend on the rows beside it), in chunks of ``EVAL_CHUNK`` rows."""
    axis = 0 if x.dim() == len(teacher.input_shape) + 1 else 1
    logits, maps = [], []
    teacher.eval()
    with torch.no_grad():
        for part in x.split(EVAL_CHUNK, dim=axis):
            logits.append(teacher(part))
            if stages:
                if not isinstance(teacher, StackedModel):
                    raise ConfigError(f"feature distillation needs a teacher with feature maps, but got "
                                      f"{type(teacher).__name__}")
                maps.append(teacher.call("features", part)[-stages:])
    return torch.cat(logits, dim=1), [torch.cat([m[i] for m in maps], dim=1) for i in range(stages)]


def simkd_model(prep: Prepared, config: ExperimentConfig, teacher: SeedModel) -> StackedModel:
    """Seed s's SimKD network: the student built for seed s, projectors initialised from seed s, and seed s's
    teacher classifier copied and frozen; batched over the seeds like any architecture."""
    from kdcore import simkd

    teacher_spec = task_of(prep, config).teachers[0].fit.model_spec
    nets = []
    for i, seed in enumerate(config.seeds):
        student = build(config.student.model_spec, prep.input_shape, prep.n_classes, seed)
        frozen = build(teacher_spec, prep.input_shape, prep.n_classes, seed)
        frozen.load_state_dict(teacher.seed_state(i))
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(int(seed))
            nets.append(simkd.build_student(student, frozen, prep.input_shape, factor=config.kd.factor,
                                            placement=config.kd.placement))
    return StackedModel(nets, config.seeds, prep.input_shape).to(prep.device)


def _train_simkd(prep: Prepared, config: ExperimentConfig, teachers: Sequence[SeedModel],
                 on_epoch: ReportFn | None) -> FitResult:
    """SimKD: only the student's encoder and the projectors train; the reused teacher classifier predicts."""
    from kdcore import simkd

    kd, fit = config.kd, config.student
    check_method(task_of(prep, config), "simkd", fit.model)
    teacher = teachers[0]
    model = simkd_model(prep, config, teacher)
    stages = 2 if kd.placement == "last_two" else 1
    train, select, holdout = prep.fit, prep.select, prep.holdout
    cache: tuple[torch.Tensor, list[torch.Tensor]] | None = None
    probe_logits, probe_maps = teacher_outputs(teacher, train.x[:, :1] if train.per_seed else train.x[:1], stages)
    per_row = sum(m[0, 0].numel() for m in probe_maps) + probe_logits.shape[-1]
    if per_row * len(train) * len(config.seeds) <= TEACHER_CACHE_ELEMENTS:  # no augmentation: compute once
        cache = teacher_outputs(teacher, train.x, stages)

    def batch_loss(out: tuple[torch.Tensor, list[torch.Tensor]], idx: torch.Tensor, epoch: int) -> torch.Tensor:
        logits, projected = out
        if cache is not None:
            t_logits, t_maps = _rows(cache[0], idx), [_rows(m, idx) for m in cache[1]]
        else:
            t_logits, t_maps = teacher_outputs(teacher, train.take(train.x, idx), stages)
        return simkd.simkd_loss(logits, projected, t_maps, t_logits, train.take(train.y, idx),
                                kind=kd.feature_loss, prev_weight=kd.prev_weight, use_labels=kd.use_labels,
                                ce_weight=kd.ce_weight, logit_weight=kd.logit_weight, temperature=kd.temperature)

    _, select_ce = _ce_losses(train, select)
    result = _run_fit("student", model, fit, train, select, holdout, batch_loss, select_ce,
                      eval_every=config.eval_every, on_epoch=on_epoch, classes=tuple(range(prep.n_classes)),
                      train_forward=lambda m, x: m(x, features=True), head="teacher classifier (reused, frozen)")
    net = model.net
    assert isinstance(net, simkd.SimKDStudent)  # built so by simkd_model just above
    result.params_detail = {
        name: sum(p.numel() for p in part.parameters()) // model.n_seeds
        for name, part in (("student", net.encoder), ("projector", net.projectors), ("reused_head_frozen", net.head))
    }
    return result


@dataclass
class ExperimentResult:
    """Every method's FitResult, keyed ``baseline``, ``teacher_0`` .. ``teacher_{K-1}``, ``student``."""

    config: ExperimentConfig
    fingerprint: str
    methods: dict[str, FitResult]
    task: Task | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "methods": {name: r.summary() for name, r in self.methods.items()},
            "protocol": self.config.protocol,
            "seeds": list(self.config.seeds),
            "config": self.config.to_dict(),
            "data": {"fingerprint": self.fingerprint},
            "task": None if self.task is None else self.task.describe(),
        }


def run_experiment(
    data: ClassificationData,
    config: ExperimentConfig,
    *,
    device: str | torch.device = "cpu",
    on_epoch: ReportFn | None = None,
    methods: Sequence[str] = ("baseline", "teachers", "student"),
) -> ExperimentResult:
    """Train the baseline, the teachers and the student of one configuration over all its seeds."""
    prep = prepare(data, config, device)
    task = task_of(prep, config)
    out: dict[str, FitResult] = {}
    if "baseline" in methods:
        out["baseline"] = train_baseline(prep, config, on_epoch)
    if "teachers" in methods or ("student" in methods and config.kd.uses_teachers):
        teachers = train_teachers(prep, config, on_epoch)
        for t in teachers:
            out[t.method] = t
        if "student" in methods:
            out["student"] = train_student(prep, config, [t.model for t in teachers], on_epoch)
    elif "student" in methods:
        out["student"] = train_student(prep, config, None, on_epoch)
    return ExperimentResult(config, data.fingerprint(), out, task)
