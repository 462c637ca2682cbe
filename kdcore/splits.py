"""The inner validation data carved out of a training set: one stratified split, or K stratified folds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdcore.dataset import ClassificationData
from kdcore.errors import DataError


@dataclass(frozen=True)
class Split:
    """Index arrays into the training set: what trains (``fit``), what selects (``select``)."""

    fit: np.ndarray
    select: np.ndarray


def inner_split(data: ClassificationData, fraction: float, seed: int) -> Split:
    """Stratified (group × class) split of the training set: ``fraction`` of each cell goes to ``select``.

    Every non-empty cell keeps at least one training sample; cells of one sample stay wholly in ``fit``.
    """
    if not 0 < fraction < 1:
        raise DataError(f"0 < fraction < 1 must hold, but got fraction={fraction}")
    rng = np.random.default_rng(seed)
    fit: list[np.ndarray] = []
    select: list[np.ndarray] = []
    cells = data.d_train * data.n_classes + data.y_train
    for cell in np.unique(cells):
        idx = np.flatnonzero(cells == cell)
        idx = idx[rng.permutation(idx.size)]
        n_select = min(round(fraction * idx.size), idx.size - 1)
        select.append(idx[:n_select])
        fit.append(idx[n_select:])
    return Split(fit=np.sort(np.concatenate(fit)), select=np.sort(np.concatenate(select)))


def inner_folds(data: ClassificationData, n_folds: int, seed: int) -> np.ndarray:
    """Fold of each training sample (N,) in 0..n_folds-1: a stratified (group × class) K-fold partition.

    Each cell is shuffled with ``seed`` and dealt round-robin, the dealer's position carrying over from one
    cell to the next (cells in group-major order), so every cell, every group and the whole set split into
    folds whose sizes differ by at most one.
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise DataError(f"n_folds >= 2 must hold, but got n_folds={n_folds!r}")
    rng = np.random.default_rng(seed)
    folds = np.empty(data.y_train.size, dtype=np.int64)
    cells = data.d_train * data.n_classes + data.y_train
    dealt = 0
    for cell in np.unique(cells):
        idx = np.flatnonzero(cells == cell)
        idx = idx[rng.permutation(idx.size)]
        folds[idx] = (dealt + np.arange(idx.size)) % n_folds
        dealt += idx.size
    return folds
