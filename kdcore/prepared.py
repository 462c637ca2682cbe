"""The prepared data: the three roles data plays in an experiment (fit on, select on, report on) as tensors
on the training device, shared by every seed or one set per seed, and the task resolved against them.

Per-seed sets of unequal sizes are padded to a common length (``Subset``), so that one seed-batched model
trains all seeds at once; ``rows_of`` takes each seed's own rows of a per-seed tensor. The features exist
once: a per-seed set holds each seed's rows as indices into the one copy of the training features, and a
batch gathers its rows when it is used, so five seeds' folds of CIFAR cost one copy of CIFAR, not eight.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kdcore.config import ExperimentConfig
from kdcore.dataset import ClassificationData
from kdcore.errors import DataError
from kdcore.splits import inner_folds, inner_split
from kdcore.task import Task, resolve


def rows_of(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` (S, B) of a per-seed tensor t (S, N, ...), each seed from its own rows: -> (S, B, ...)."""
    if t.dim() == 2:
        return t.gather(1, idx)
    if t.dim() == 3:
        return t.gather(1, idx.unsqueeze(-1).expand(*idx.shape, t.shape[-1]))
    return t[torch.arange(t.shape[0], device=t.device)[:, None], idx]


@dataclass(frozen=True)
class Subset:
    """Samples on the training device, shared by every seed or one set per seed.

    Shared: x (N, ...), y (N,), d (N,). Per seed: y (S, M), d (S, M), each seed its own rows, and ``rows``
    (S, M), where each seed's features sit in x (N, ...), the one copy every seed's set indexes (read them
    with ``inputs``, ``take_x`` or ``chunks``, never by indexing x). d is each sample's group (its domain in the multi-domain task; zeros when the data has none).
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
    rows: torch.Tensor | None = None

    @property
    def per_seed(self) -> bool:
        return self.y.dim() == 2

    @property
    def device(self) -> torch.device:
        return self.y.device

    def inputs(self, start: int | None = None, stop: int | None = None) -> torch.Tensor:
        """The features of rows ``start:stop``: (m, ...) shared, or (S, m, ...) gathered for each seed."""
        if self.rows is None:
            return self.x[start:stop] if not self.per_seed else self.x[:, start:stop]
        return self.x[self.rows[:, start:stop]]

    def take_x(self, idx: torch.Tensor) -> torch.Tensor:
        """The features of rows ``idx`` ((B,) shared, or (S, B) each seed its own): (B, ...) or (S, B, ...)."""
        if self.rows is None:
            return self.take(self.x, idx)
        return self.x[rows_of(self.rows, idx)]

    def chunks(self, size: int) -> list[torch.Tensor]:
        """The features of every row, in chunks of at most ``size`` rows along the row axis."""
        n = len(self)
        return [self.inputs(i, min(i + size, n)) for i in range(0, n, size)] if n > size else [self.inputs()]

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
        out = _padded(self.x, self.y, self.d, rows, evaluation=self.evaluation, length=length, base=self.rows)
        return out if relabel is None else dataclasses.replace(out, y=relabel[out.y])

    def take(self, t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` (S, B) of one of this set's tensors, each seed from its own rows: -> (S, B, ...)."""
        if not self.per_seed:
            return t[idx]
        return rows_of(t, idx)

    def __len__(self) -> int:
        """Rows per seed (padding included)."""
        return int(self.y.shape[-1])


def _padded(x: torch.Tensor, y: torch.Tensor, d: torch.Tensor, rows: Sequence[torch.Tensor], *,
            evaluation: bool, length: int | None = None, base: torch.Tensor | None = None) -> Subset:
    """Per-seed subset: seed s gets ``rows[s]`` of y (N,) / d (N,), or of its own slice if they are per seed
    already (S, N) with ``base`` (S, N) their rows in x; padded to ``length`` (default: the longest), an
    evaluation set with weight-0 rows, a fitting set by repeating the seed's own rows. x (N, ...) is not
    copied: the subset indexes it."""
    if any(r.numel() == 0 for r in rows):
        raise DataError("a seed's subset is empty")
    m = max(int(r.numel()) for r in rows) if length is None else length
    padded = [r.repeat(-(-m // r.numel()))[:m] for r in rows]  # cycle a seed's own rows up to m
    idx = torch.stack(padded)  # (S, M)
    if y.dim() == 1:
        at, out_y, out_d = idx, y[idx], d[idx]
    else:
        if base is None:
            raise DataError("a per-seed subset needs the rows of its features")
        at, out_y, out_d = base.gather(1, idx), y.gather(1, idx), d.gather(1, idx)
    counts = tuple(int(r.numel()) for r in rows)
    short = any(c < m for c in counts)
    weight = None
    if evaluation and short:
        weight = torch.stack([(torch.arange(m, device=idx.device) < c).float() for c in counts])
    return Subset(x, out_y, out_d, weight, evaluation=evaluation,
                  real=counts if short and not evaluation else None, rows=at)


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


def task_of(prep: Prepared, config: ExperimentConfig) -> Task:
    """The experiment's task resolved against the prepared data (ConfigError naming a bad layout)."""
    pairs = [torch.stack([s.y.reshape(-1), s.d.reshape(-1)], dim=1) for s in (prep.fit, prep.select, prep.holdout)]
    cells = torch.unique(torch.cat(pairs), dim=0).cpu().numpy()
    return resolve(config.task, config.teacher, prep.n_classes, prep.n_groups, cells)
