"""Where datasets come from: every form ``--data`` takes, each giving a ``ClassificationData``.

``load(spec)`` dispatches: ``builtin:d0.25`` .. ``builtin:d1.0`` (``kdcore.generator``), ``builtin:digits``
(scikit-learn's 8x8 handwritten digits, no download), an ``.npz`` archive of named arrays, a CIFAR-10 /
CIFAR-100 "python version" folder (``kdcore.cifar``: the literature's constants normalise it, or with
``FOLDER:normalise=computed`` the training images' statistics), or else a reference-format pickle. Every
problem with a file is one ``DataError`` line. Pickles (the reference files, CIFAR's batches) are read only through the numpy-only
unpickler (``kdcore.pickles``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from kdcore.cifar import (  # noqa: F401 - CIFAR's names, re-exported where the data forms are
    CIFAR10_TEST,
    CIFAR10_TRAIN,
    CIFAR100_TEST,
    CIFAR100_TRAIN,
    DEFAULT_NORMALISATION,
    NORMALISATIONS,
    load_cifar,
)
from kdcore.dataset import GROUP_KEYS, REQUIRED_KEYS, ClassificationData, validate_arrays, validate_keys
from kdcore.errors import DataError, one_line
from kdcore.generator import BUILTIN_DISTANCES, BUILTIN_SEED, generate
from kdcore.pickles import read_pickle

BUILTIN_NAMES = tuple(f"d{d}" for d in BUILTIN_DISTANCES) + ("digits",)
_FORMS = "an .npz file, a CIFAR-10/100 folder, builtin:NAME or a reference-format pickle"

# builtin:digits keeps this share of every class for the holdout; the seed fixes which samples, for good.
DIGITS_HOLDOUT_FRACTION = 0.3
DIGITS_HOLDOUT_SEED = 1797

# ``--data FOLDER:normalise=computed``: the options a data spec may end with, and the values each takes.
DATA_OPTIONS: dict[str, tuple[str, ...]] = {"normalise": NORMALISATIONS}
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
    """Every form ``--data`` takes: ``builtin:NAME``, a CIFAR-10/100 python-version folder (optionally
    ``FOLDER:normalise=computed``), an ``.npz`` file, or else a reference-format pickle. Any problem is one
    DataError line."""
    if spec.startswith("builtin:"):
        name, options = split_options(spec.removeprefix("builtin:"))
        _refuse_options(options, spec)
        return builtin(name)
    text, options = split_options(spec)
    path = Path(text)
    if path.is_dir():
        return load_cifar(path, options.get("normalise", DEFAULT_NORMALISATION))
    _refuse_options(options, text)
    return load_npz(path) if path.suffix.lower() == ".npz" else load_pickle(path)


def split_options(spec: str) -> tuple[str, dict[str, str]]:
    """``'/data/cifar-100-python:normalise=computed'`` -> ``('/data/cifar-100-python', {'normalise':
    'computed'})``: the options a spec ends with (``:KEY=VALUE``, each ``DATA_OPTIONS``' own), checked; a
    spec without any as it is."""
    options: dict[str, str] = {}
    head = spec
    while not Path(head).exists():  # a path that exists is a path, whatever its name holds
        rest, sep, tail = head.rpartition(":")
        key, eq, value = tail.partition("=")
        if not (sep and eq and key.isidentifier() and "/" not in tail):
            break
        if key not in DATA_OPTIONS:
            raise DataError(f"--data {spec}: unknown option {key!r}; a CIFAR folder takes "
                            f"{', '.join(f':{k}=' + '|'.join(v) for k, v in DATA_OPTIONS.items())}")
        if value not in DATA_OPTIONS[key]:
            raise DataError(f"--data {spec}: {key} must be one of {list(DATA_OPTIONS[key])}, but got {value!r}")
        if key in options:
            raise DataError(f"--data {spec}: {key} is given twice; give it once")
        options[key] = value
        head = rest
    return head, options


def _refuse_options(options: dict[str, str], what: str) -> None:
    if options:
        given = ", ".join(f"{k}={v}" for k, v in options.items())
        raise DataError(f"--data {what}: {given} applies to CIFAR folders only, and {what} is none; "
                        "other data is used as it is")


def canonical(spec: str) -> str:
    """The spec a study records for ``spec``: ``builtin:NAME`` as given; a file's absolute path; a CIFAR
    folder's absolute path with its normalisation named (``:normalise=standard`` when not given), so that
    a change of the default can never change what a study's trials load."""
    if spec.startswith("builtin:"):
        return spec
    text, options = split_options(spec)
    path = Path(text).resolve()
    if path.is_dir():
        return f"{path}:normalise={options.get('normalise', DEFAULT_NORMALISATION)}"
    _refuse_options(options, text)
    return str(path)


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
