"""CIFAR-10 and CIFAR-100 "python version" folders: their layout, their batch files and how their pixels are
normalised.

``standard`` (the default) normalises with the literature's per-channel constants, so that a teacher from
the toolboxes' zoo sees the inputs it was trained on: CIFAR-100 mean (0.5071, 0.4867, 0.4408), std
(0.2675, 0.2565, 0.2761), as RepDistiller (``dataset/cifar100.py``) and mdistiller
(``mdistiller/dataset/cifar100.py``) write them in ``transforms.Normalize``, and SimKD inherits from
RepDistiller. Those toolboxes ship no CIFAR-10; its constants are the CIFAR-10 training set's per-channel
mean (0.4914, 0.4822, 0.4465) and population std (0.2470, 0.2435, 0.2616), as CuriousAI's mean-teacher
writes them (not the (0.2023, 0.1994, 0.2010) that some repositories copy, which are no population std).
``computed`` standardises with the mean and population std of the folder's own training images instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kdcore.dataset import ClassificationData
from kdcore.errors import DataError
from kdcore.pickles import read_pickle

CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = ("test_batch",)
CIFAR100_TRAIN = ("train",)
CIFAR100_TEST = ("test",)
CIFAR_IMAGE = (3, 32, 32)  # channel-major: 1024 red, 1024 green, 1024 blue values, each a row-major 32x32
CIFAR_EXPECTED = ("data_batch_1 .. data_batch_5 and test_batch (CIFAR-10, as in cifar-10-batches-py/) or "
                  "train and test (CIFAR-100, as in cifar-100-python/)")
_LAYOUTS = (
    ("CIFAR-10", CIFAR10_TRAIN, CIFAR10_TEST, b"labels"),
    ("CIFAR-100", CIFAR100_TRAIN, CIFAR100_TEST, b"fine_labels"),
)

# kind -> (mean, std) per channel on the [0, 1] scale: the literature's constants (the module's docstring).
STANDARD: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "CIFAR-10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "CIFAR-100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}
NORMALISATIONS = ("standard", "computed")
DEFAULT_NORMALISATION = "standard"


def load_cifar(path: str | Path, normalise: str = DEFAULT_NORMALISATION) -> ClassificationData:
    """A CIFAR-10 or CIFAR-100 "python version" folder; its test set is the holdout.

    CIFAR-10 holds ``data_batch_1..5`` and ``test_batch`` (labels under b"labels"), CIFAR-100 ``train`` and
    ``test`` (b"fine_labels"; the coarse labels are ignored); each file a Python 2 pickle of a dict with
    b"data", a (n, 3072) uint8 array in channel-major order. Features are (N, 3, 32, 32) float32: pixels
    / 255, then ``(x - mean[c]) / std[c]`` per channel, the same shift and scale for the holdout; ``normalise``
    says which mean and std: ``standard``, the literature's constants of the folder's kind (``STANDARD``), or
    ``computed``, the training images' mean and population std. No groups (d = 0). The source names the
    normalisation (``/abs/cifar-100-python:normalise=standard``), a ``--data`` that loads the same arrays.
    """
    if normalise not in NORMALISATIONS:
        raise DataError(f"normalise must be one of {list(NORMALISATIONS)}, but got {normalise!r}")
    path = Path(path)
    kind, train_files, test_files, label_key = _layout(path)
    raw_train, y_train = _read_files(path, train_files, label_key)
    raw_test, y_test = _read_files(path, test_files, label_key)
    if normalise == "computed":
        mean, std = channel_moments(raw_train)
    else:
        mean, std = (np.asarray(v, dtype=np.float64) for v in STANDARD[kind])
    return ClassificationData.from_arrays(
        {"x_train": standardise(raw_train, mean, std), "y_train": y_train,
         "x_valid": standardise(raw_test, mean, std), "y_valid": y_test},
        source=f"{path.resolve()}:normalise={normalise}",
    )


def _layout(path: Path) -> tuple[str, tuple[str, ...], tuple[str, ...], bytes]:
    """(kind, training files, test files, label key) of the CIFAR folder at ``path``, or one line saying why
    not."""
    if not path.is_dir():
        raise DataError(f"data file not found: {path} is no folder; a CIFAR dataset is a folder holding "
                        f"{CIFAR_EXPECTED}")
    # only the names that matter are looked up: --data may name a large folder by mistake
    names = {n for _, train, test, _ in _LAYOUTS for n in train + test if (path / n).is_file()}
    for kind, train, test, label_key in _LAYOUTS:
        if names.issuperset(train + test):
            return kind, train, test, label_key
    for kind, train, test, _ in _LAYOUTS:
        present = [n for n in train + test if n in names]
        if present:
            missing = [n for n in train + test if n not in names]
            raise DataError(f"{path}: a {kind} python-version folder needs {', '.join(train + test)}, but "
                            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
    inside = [p.name for p in (path / "cifar-10-batches-py", path / "cifar-100-python") if p.is_dir()]
    also = f" (it holds {inside[0]}/: give that folder)" if inside else ""
    raise DataError(f"data file not found: {path} is a folder, but not a CIFAR-10 or CIFAR-100 python-version "
                    f"folder, which holds {CIFAR_EXPECTED}{also}; give such a folder, an .npz file, "
                    "builtin:NAME or a reference-format pickle")


def _read_files(folder: Path, names: tuple[str, ...], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3072) uint8 pixels and (N,) int64 labels of the named batch files, concatenated in order."""
    pixels: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for name in names:
        path = folder / name
        batch = read_pickle(path, what="CIFAR batch pickle", encoding="bytes")
        if not isinstance(batch, dict):
            raise DataError(f"{path}: a CIFAR batch must be a dict, but the pickle holds {type(batch).__name__}")
        data = _entry(batch, b"data", path)
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
                and data.shape[1] == 3 * 32 * 32):
            got = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise DataError(f"{path}: b'data' must be a uint8 array of shape (n, 3072), but got {got}")
        y = np.asarray(_entry(batch, label_key, path))
        if y.ndim != 1 or y.size != data.shape[0] or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: {label_key!r} must be {data.shape[0]} integer labels, one per image, but "
                            f"got {y.size} of dtype {y.dtype}")
        pixels.append(data)
        labels.append(y.astype(np.int64))
    return np.concatenate(pixels), np.concatenate(labels)


def _entry(batch: dict[Any, Any], key: bytes, path: Path) -> Any:
    """``batch[key]``; files re-saved by Python 3 may use ``str`` keys, so those are accepted too."""
    for k in (key, key.decode()):
        if k in batch:
            return batch[k]
    raise DataError(f"{path}: a CIFAR batch needs the key {key!r}, but it has {sorted(map(repr, batch))}")


def channel_moments(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(3,) mean and population std of each channel of (N, 3072) uint8 pixels, on the [0, 1] scale.

    Computed exactly from each channel's histogram of the 256 levels: no float32 sums, no large temporaries.
    """
    levels = np.arange(256, dtype=np.float64) / 255.0
    mean, std = np.empty(3), np.empty(3)
    for c in range(3):
        counts = np.bincount(raw[:, c * 1024:(c + 1) * 1024].ravel(), minlength=256).astype(np.float64)
        mean[c] = counts @ levels / counts.sum()
        std[c] = np.sqrt(counts @ (levels - mean[c]) ** 2 / counts.sum())
    return mean, np.where(std > 0, std, 1.0)  # a constant channel is only centred


def standardise(raw: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(N, 3072) uint8 -> (N, 3, 32, 32) float32 ``(pixel / 255 - mean[c]) / std[c]``, by a per-channel table."""
    images = raw.reshape(-1, *CIFAR_IMAGE)
    table = ((np.arange(256, dtype=np.float64)[None] / 255.0 - mean[:, None]) / std[:, None]).astype(np.float32)
    out = np.empty(images.shape, dtype=np.float32)
    for c in range(3):
        out[:, c] = table[c][images[:, c]]
    return out
