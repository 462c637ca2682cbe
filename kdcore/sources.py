"""Where datasets come from: every form ``--data`` takes, each giving a ``ClassificationData``.

``load(spec)`` dispatches: ``builtin:d0.25`` .. ``builtin:d1.0`` (``kdcore.generator``), ``builtin:digits``
(scikit-learn's 8x8 handwritten digits, no download), an ``.npz`` archive of named arrays, a CIFAR-10 /
CIFAR-100 "python version" folder, or else a reference-format pickle. Every problem with a file is one
``DataError`` line. Pickles (the reference files, CIFAR's batches) are read only through the numpy-only
unpickler (``kdcore.pickles``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from kdcore.dataset import GROUP_KEYS, REQUIRED_KEYS, ClassificationData, validate_arrays, validate_keys
from kdcore.errors import DataError, one_line
from kdcore.generator import BUILTIN_DISTANCES, BUILTIN_SEED, generate
from kdcore.pickles import read_pickle

BUILTIN_NAMES = tuple(f"d{d}" for d in BUILTIN_DISTANCES) + ("digits",)
_FORMS = "an .npz file, a CIFAR-10/100 folder, builtin:NAME or a reference-format pickle"

# builtin:digits keeps this share of every class for the holdout; the seed fixes which samples, for good.
DIGITS_HOLDOUT_FRACTION = 0.3
DIGITS_HOLDOUT_SEED = 1797

CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = ("test_batch",)
CIFAR100_TRAIN = ("train",)
CIFAR100_TEST = ("test",)
CIFAR_IMAGE = (3, 32, 32)  # channel-major: 1024 red, 1024 green, 1024 blue values, each a row-major 32x32
_CIFAR_EXPECTED = ("data_batch_1 .. data_batch_5 and test_batch (CIFAR-10, as in cifar-10-batches-py/) or "
                   "train and test (CIFAR-100, as in cifar-100-python/)")
_NPZ_LAYOUT = (f"numpy.savez(path, x_train=..., y_train=..., x_valid=..., y_valid=...), optionally with "
               f"{' and '.join(GROUP_KEYS)}")
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip


# ------------------------------------------------------------------------------------ the dispatcher

def builtin(name: str) -> ClassificationData:
    """``'d0.5'`` -> the built-in 2-D set at that centre distance (fixed seed, reference sizes);
    ``'digits'`` -> scikit-learn's 8x8 handwritten digits with a fixed holdout (``digits``)."""
    if name == "digits":
        return digits()
    try:
        distance = float(name.removeprefix("d"))
    except ValueError:
        distance = -1.0
    if not name.startswith("d") or distance not in BUILTIN_DISTANCES:
        names = [f"builtin:{n}" for n in BUILTIN_NAMES]
        raise DataError(f"unknown built-in dataset 'builtin:{name}'; choose one of {names}")
    return generate(distance, seed=BUILTIN_SEED, source=f"builtin:d{distance}")


def load(spec: str) -> ClassificationData:
    """Every form ``--data`` takes: ``builtin:NAME``, a CIFAR-10/100 python-version folder, an ``.npz``
    file, or else a reference-format pickle. Any problem is one DataError line."""
    if spec.startswith("builtin:"):
        return builtin(spec.removeprefix("builtin:"))
    path = Path(spec)
    if path.is_dir() or path.suffix.lower() == ".npz":
        return load_cifar(path) if path.is_dir() else load_npz(path)
    return load_pickle(path)


def load_pickle(path: str | Path) -> ClassificationData:
    """Load a reference-format pickle (a dict of numpy arrays, groups optional) safely and validate it."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"data file not found: {path} is a folder; give {_FORMS}")
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    obj = read_pickle(path, hint=f"; --data takes {_FORMS} (a pickle of a dict of numpy arrays "
                                 f"{list(REQUIRED_KEYS)}, optionally with {list(GROUP_KEYS)})")
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict of numpy arrays, but the pickle holds {type(obj).__name__}")
    validate_arrays(obj, str(path))
    return ClassificationData.from_arrays(obj, source=str(path.resolve()))


# ------------------------------------------------------------------------------------ builtin:digits

def digits() -> ClassificationData:
    """scikit-learn's 1,797 real 8x8 handwritten digits (10 classes), with a fixed stratified holdout.

    Features (N, 1, 8, 8) float32: the grey levels 0..16 divided by 16, so in [0, 1]. The holdout is
    ``DIGITS_HOLDOUT_FRACTION`` of each class (rounded), drawn with ``DIGITS_HOLDOUT_SEED``:
    1,258 training and 539 holdout images, the same on every call. No groups (d = 0).
    """
    try:
        from sklearn.datasets import load_digits  # type: ignore[import-untyped]  # only digits needs it
    except ImportError:
        raise DataError("builtin:digits needs scikit-learn, which ships the digits; install it "
                        "(pip install scikit-learn) or give other --data") from None
    bunch = load_digits()
    x = (np.asarray(bunch.images, dtype=np.float64) / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    holdout = _stratified_holdout(y, DIGITS_HOLDOUT_FRACTION, np.random.default_rng(DIGITS_HOLDOUT_SEED))
    return ClassificationData.from_arrays(
        {"x_train": x[~holdout], "y_train": y[~holdout], "x_valid": x[holdout], "y_valid": y[holdout]},
        source="builtin:digits",
    )


def _stratified_holdout(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """(N,) bool mask: ``round(fraction * n_c)`` samples of each class c, drawn class after class."""
    mask = np.zeros(y.size, dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        mask[idx[rng.permutation(idx.size)[: round(fraction * idx.size)]]] = True
    return mask


# ------------------------------------------------------------------------------------------------ NPZ

def load_npz(path: str | Path) -> ClassificationData:
    """An ``.npz`` archive (``numpy.savez`` / ``savez_compressed``) of named arrays, read without pickle.

    Keys: ``x_train`` (N, *feature_shape), ``y_train`` (N,), ``x_valid``, ``y_valid``, and optionally both
    ``d_train`` and ``d_valid`` (the group of each sample; absent: one group). Features may be floating point
    or integer (e.g. uint8 pixels) and become float32 as they are, unscaled; labels and groups must be
    integers. An archive holding object arrays (pickled Python objects) is refused, as is any other key.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"data file not found: {path} is a folder; an NPZ dataset is a file written by "
                        f"{_NPZ_LAYOUT}")
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    with path.open("rb") as f:
        head = f.read(6)
    if not head:
        raise DataError(f"{path}: not a readable NPZ archive: the file is empty")
    if not head.startswith(_ZIP_SIGNATURES):
        if head.startswith(b"\x93NUMPY"):
            raise DataError(f"{path}: holds one array in .npy format, not an NPZ archive of named arrays; "
                            f"write it with {_NPZ_LAYOUT}")
        raise DataError(f"{path}: not a readable NPZ archive: it is not a zip file (it starts with "
                        f"{head!r}); write it with {_NPZ_LAYOUT}")
    arrays: dict[str, np.ndarray] = {}
    key = ""
    try:
        with np.load(path, allow_pickle=False) as npz:
            validate_keys(npz.files, str(path))
            for key in npz.files:
                arrays[key] = npz[key]
    except DataError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(f"{path}: {key} holds an object array (pickled Python objects), which kdtune does "
                            "not load; save plain numeric arrays") from None
        raise DataError(f"{path}: not a readable NPZ archive: {key or 'the archive'} is damaged "
                        f"({one_line(exc)})") from None
    except zipfile.BadZipFile as exc:
        raise DataError(f"{path}: not a readable NPZ archive: the zip is damaged or truncated "
                        f"({one_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - zlib, EOF and header errors all mean a damaged or cut file
        where = f"{key} is" if key else "the archive is"
        raise DataError(f"{path}: not a readable NPZ archive: {where} damaged or truncated "
                        f"({type(exc).__name__}: {one_line(exc)})") from None
    validate_arrays(arrays, str(path))
    return ClassificationData.from_arrays(arrays, source=str(path.resolve()))


# ---------------------------------------------------------------------------------------------- CIFAR

def load_cifar(path: str | Path) -> ClassificationData:
    """A CIFAR-10 or CIFAR-100 "python version" folder; its test set is the holdout.

    CIFAR-10 holds ``data_batch_1..5`` and ``test_batch`` (labels under b"labels"), CIFAR-100 ``train`` and
    ``test`` (b"fine_labels"; the coarse labels are ignored); each file a Python 2 pickle of a dict with
    b"data", a (n, 3072) uint8 array in channel-major order. Features are (N, 3, 32, 32) float32: pixels
    / 255, then standardised per channel with the training images' mean and (population) standard
    deviation, the same shift and scale applied to the holdout. No groups (d = 0).
    """
    path = Path(path)
    train_files, test_files, label_key = _cifar_layout(path)
    raw_train, y_train = _read_cifar_files(path, train_files, label_key)
    raw_test, y_test = _read_cifar_files(path, test_files, label_key)
    mean, std = _channel_moments(raw_train)
    return ClassificationData.from_arrays(
        {"x_train": _standardise(raw_train, mean, std), "y_train": y_train,
         "x_valid": _standardise(raw_test, mean, std), "y_valid": y_test},
        source=str(path.resolve()),
    )


def _cifar_layout(path: Path) -> tuple[tuple[str, ...], tuple[str, ...], bytes]:
    """(training files, test files, label key) of the CIFAR folder at ``path``, or one line saying why not."""
    if not path.is_dir():
        raise DataError(f"data file not found: {path} is no folder; a CIFAR dataset is a folder holding "
                        f"{_CIFAR_EXPECTED}")
    layouts = (
        ("CIFAR-10", CIFAR10_TRAIN, CIFAR10_TEST, b"labels"),
        ("CIFAR-100", CIFAR100_TRAIN, CIFAR100_TEST, b"fine_labels"),
    )
    # only the names that matter are looked up: --data may name a large folder by mistake
    names = {n for _, train, test, _ in layouts for n in train + test if (path / n).is_file()}
    for _, train, test, label_key in layouts:
        if names.issuperset(train + test):
            return train, test, label_key
    for kind, train, test, _ in layouts:
        present = [n for n in train + test if n in names]
        if present:
            missing = [n for n in train + test if n not in names]
            raise DataError(f"{path}: a {kind} python-version folder needs {', '.join(train + test)}, but "
                            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
    inside = [p.name for p in (path / "cifar-10-batches-py", path / "cifar-100-python") if p.is_dir()]
    also = f" (it holds {inside[0]}/: give that folder)" if inside else ""
    raise DataError(f"data file not found: {path} is a folder, but not a CIFAR-10 or CIFAR-100 python-version "
                    f"folder, which holds {_CIFAR_EXPECTED}{also}; give such a folder, an .npz file, "
                    "builtin:NAME or a reference-format pickle")


def _read_cifar_files(folder: Path, names: tuple[str, ...], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
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


def _channel_moments(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _standardise(raw: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(N, 3072) uint8 -> (N, 3, 32, 32) float32 ``(pixel / 255 - mean[c]) / std[c]``, by a per-channel table."""
    images = raw.reshape(-1, *CIFAR_IMAGE)
    table = ((np.arange(256, dtype=np.float64)[None] / 255.0 - mean[:, None]) / std[:, None]).astype(np.float32)
    out = np.empty(images.shape, dtype=np.float32)
    for c in range(3):
        out[:, c] = table[c][images[:, c]]
    return out

