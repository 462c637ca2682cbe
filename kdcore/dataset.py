"""The dataset of a classification task and its validation: what every source of data produces.

A dataset is train and holdout arrays: features of any shape, integer classes and, optionally, the group
(domain) of each sample. Where datasets come from is ``kdcore.sources`` (``load(spec)``); the built-in 2-D
family is ``kdcore.generator``; the inner splits are ``kdcore.splits``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdcore.errors import DataError

# The order is part of ``fingerprint``: never reorder.
ARRAY_KEYS = ("x_train", "y_train", "d_train", "x_valid", "y_valid", "d_valid")
REQUIRED_KEYS = ("x_train", "y_train", "x_valid", "y_valid")
GROUP_KEYS = ("d_train", "d_valid")


@dataclass(frozen=True, eq=False)
class ClassificationData:
    """Train and holdout (the given validation set) arrays of a classification task.

    x: (N, *feature_shape) float32 features, at least one feature axis ((N, F) tables, (N, C, H, W) images);
    y: (N,) int64 class in 0..C-1, every class present in y_train; d: (N,) int64 group (domain) in 0..K-1,
    all zeros (one group) for data without groups. Arrays are copied and read-only once validated.
    ``from_arrays`` builds one from a mapping whose groups may be absent.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    d_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    d_valid: np.ndarray
    source: str = "arrays"

    def __post_init__(self) -> None:
        validate_arrays({k: getattr(self, k) for k in ARRAY_KEYS}, self.source)
        for key in ARRAY_KEYS:
            arr = getattr(self, key)
            arr = arr.astype(np.float32 if key.startswith("x") else np.int64, copy=True)
            arr.setflags(write=False)
            object.__setattr__(self, key, arr)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any], source: str = "arrays") -> ClassificationData:
        """The dataset of ``x_train, y_train, x_valid, y_valid`` and optionally both ``d_train, d_valid``.

        Without groups every sample is in group 0. Unknown keys are refused, so a misspelt group key is not
        silently read as "no groups".
        """
        validate_keys(arrays, source)
        return cls(**_with_groups(arrays), source=source)

    @property
    def n_domains(self) -> int:
        """Number of groups (domains) K: the largest group + 1; 1 for data without groups."""
        return int(self.d_train.max()) + 1

    @property
    def n_classes(self) -> int:
        """Number of classes C: the largest label + 1 (validation ensures each of 0..C-1 is in y_train)."""
        return int(max(self.y_train.max(), self.y_valid.max())) + 1

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape of one sample's features: ``(F,)`` for a table, ``(C, H, W)`` for images."""
        return tuple(int(n) for n in self.x_train.shape[1:])

    @property
    def n_features(self) -> int:
        """Number of feature values per sample: the product of ``feature_shape`` (its flattened size)."""
        return math.prod(self.feature_shape)

    def fingerprint(self) -> str:
        """sha256 over every array's dtype, shape and bytes, in a fixed order: the dataset's identity."""
        digest = hashlib.sha256()
        for key in ARRAY_KEYS:
            arr = np.ascontiguousarray(getattr(self, key))
            digest.update(f"{key}:{arr.dtype.str}:{arr.shape};".encode())
            digest.update(arr.tobytes())
        return digest.hexdigest()


def validate_keys(keys: Iterable[object], source: str) -> None:
    """Raise DataError unless ``keys`` are the four required ones plus, optionally, both group keys."""
    keys = list(keys)
    missing = [k for k in REQUIRED_KEYS if k not in keys]
    unknown = [k for k in keys if k not in ARRAY_KEYS]
    valid = f"a dataset needs {list(REQUIRED_KEYS)} and may add the groups {list(GROUP_KEYS)}"
    if missing:
        also = f" (and holds unknown key(s) {', '.join(map(repr, unknown))})" if unknown else ""
        raise DataError(f"{source}: missing key {missing[0]!r}{also}; {valid}")
    if unknown:
        raise DataError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; {valid}")
    given = [k for k in GROUP_KEYS if k in keys]
    if len(given) == 1:
        lacking = next(k for k in GROUP_KEYS if k not in keys)
        raise DataError(f"{source}: {given[0]} is given without {lacking}; give both (the group of each "
                        "sample, e.g. its domain) or neither (all samples one group)")


def _with_groups(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """The six arrays of ARRAY_KEYS, in that order; absent groups become zeros (one group)."""
    out = {}
    for key in ARRAY_KEYS:
        if key in arrays:
            out[key] = arrays[key]
        else:
            out[key] = np.zeros(np.shape(arrays[key.replace("d_", "y_")])[:1], dtype=np.int64)
    return out


def validate_arrays(arrays: Mapping[str, Any], source: str) -> None:
    """Raise DataError naming ``source`` and the first thing wrong with the arrays (groups may be absent)."""
    validate_keys(arrays, source)
    for key in REQUIRED_KEYS + tuple(k for k in GROUP_KEYS if k in arrays):
        if not isinstance(arrays[key], np.ndarray):
            raise DataError(f"{source}: {key} must be a numpy array, but got {type(arrays[key]).__name__}")
    arrays = _with_groups(arrays)
    for split in ("train", "valid"):
        x, y, d = (arrays[f"{p}_{split}"] for p in "xyd")
        if x.ndim < 2 or 0 in x.shape[1:]:
            raise DataError(f"{source}: x_{split} must have shape (N, F), or (N, *feature_shape) with at least "
                            f"one non-empty feature axis such as (N, C, H, W), but got {x.shape}")
        if x.shape[0] == 0:
            raise DataError(f"{source}: x_{split} is empty")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise DataError(f"{source}: x_{split} must be floating point or integer (read as float32), "
                            f"but got dtype {x.dtype}")
        if not np.isfinite(x).all():
            raise DataError(f"{source}: x_{split} holds NaN or infinite values")
        if x.dtype.itemsize > 4 and np.issubdtype(x.dtype, np.floating):
            largest = float(np.abs(x).max())
            if largest > float(np.finfo(np.float32).max):
                raise DataError(f"{source}: x_{split} holds values beyond float32's range (largest |x| = "
                                f"{largest:.3g}); kdtune computes in float32: rescale the features")
        for name, arr in ((f"y_{split}", y), (f"d_{split}", d)):
            if arr.ndim != 1:
                raise DataError(f"{source}: {name} must have shape (N,), but got {arr.shape}")
            if not np.issubdtype(arr.dtype, np.integer):
                raise DataError(f"{source}: {name} must hold integers, but got dtype {arr.dtype}")
            if arr.shape[0] != x.shape[0]:
                raise DataError(
                    f"{source}: x_{split}, y_{split} and d_{split} must have the same length, "
                    f"but got {x.shape[0]}, {y.shape[0]}, {d.shape[0]}"
                )
            if arr.min() < 0:
                raise DataError(f"{source}: {name} must be >= 0, but got min {arr.min()}")
    train_shape, valid_shape = arrays["x_train"].shape[1:], arrays["x_valid"].shape[1:]
    if train_shape != valid_shape:
        raise DataError(
            f"{source}: x_train and x_valid must have the same feature shape (the same number of features, "
            f"laid out alike), but got {train_shape} and {valid_shape}"
        )
    n_domains = int(arrays["d_train"].max()) + 1
    n_classes = int(arrays["y_train"].max()) + 1
    if n_classes < 2:
        raise DataError(f"{source}: y_train must hold at least two classes, but only class 0 occurs")
    if int(arrays["y_valid"].max()) >= n_classes:
        raise DataError(
            f"{source}: y_valid holds class {int(arrays['y_valid'].max())}, "
            f"which never occurs in y_train (classes 0..{n_classes - 1})"
        )
    class_counts = np.bincount(arrays["y_train"], minlength=n_classes)
    if (class_counts == 0).any():
        absent_classes = [int(c) for c in np.flatnonzero(class_counts == 0)]
        raise DataError(
            f"{source}: class(es) {absent_classes} never occur in y_train, whose largest label is "
            f"{n_classes - 1}; every class 0..{n_classes - 1} needs training samples: number the classes "
            "0..C-1 without gaps"
        )
    if int(arrays["d_valid"].max()) >= n_domains:
        raise DataError(
            f"{source}: d_valid holds group (domain) {int(arrays['d_valid'].max())}, "
            f"but d_train has groups 0..{n_domains - 1} only"
        )
    valid_domains = set(np.unique(arrays["d_valid"]).tolist())
    absent = [k for k in range(n_domains) if k not in valid_domains]
    if absent:
        raise DataError(f"{source}: group(s) (domains) {absent} have no validation samples; every group needs "
                        "some")
    counts = np.bincount(arrays["d_train"], minlength=n_domains)
    if (counts == 0).any():
        empty = [int(k) for k in np.flatnonzero(counts == 0)]
        raise DataError(f"{source}: group(s) (domains) {empty} have no training samples; groups must be "
                        "0..K-1, each used")
