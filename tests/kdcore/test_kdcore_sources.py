"""kdcore.sources through kdcore.load_data: NPZ archives, builtin:digits and CIFAR-10/100 folders.

Everything is made here, small, in the real formats; nothing is downloaded.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kdcore import dataset, sources
from kdcore.errors import DataError

ROOT = Path(__file__).resolve().parents[2]


def _one_line_error(spec: str | Path, match: str) -> str:
    """Load ``spec`` and return the DataError's text, checking it matches and is one line."""
    with pytest.raises(DataError, match=match) as info:
        sources.load(str(spec))
    text = str(info.value)
    assert "\n" not in text, text
    return text


class _RunsShell:
    """Unpickling this runs a shell command (what a hostile data file would do)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def test_sources_import_neither_scikit_learn_nor_torch() -> None:
    probe = ("import json, sys; import kdcore.dataset, kdcore.sources; "
             "print(json.dumps([m for m in ('sklearn', 'torch') if m in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


# ---------------------------------------------------------------- NPZ


def _table(n_features: int = 5, n_classes: int = 4, groups: bool = False) -> dict[str, np.ndarray]:
    """40 training and 12 holdout rows of a 5-feature, 4-class table; groups 0 and 1 when asked."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.standard_normal((40, n_features)), "y_train": np.arange(40) % n_classes,
        "x_valid": rng.standard_normal((12, n_features)), "y_valid": np.arange(12) % n_classes,
    }
    if groups:
        arrays["d_train"] = (np.arange(40) // n_classes) % 2
        arrays["d_valid"] = (np.arange(12) // n_classes) % 2
    return arrays


def _npz(tmp_path: Path, arrays: dict[str, Any], name: str = "data.npz", compressed: bool = False) -> Path:
    path = tmp_path / name
    with path.open("wb") as f:  # a handle: given a name, numpy would append ".npz" to "IMAGES.NPZ"
        (np.savez_compressed if compressed else np.savez)(f, **arrays)
    return path


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_without_groups_is_one_group(tmp_path: Path, compressed: bool) -> None:
    arrays = _table()
    path = _npz(tmp_path, arrays, compressed=compressed)
    data = sources.load(str(path))
    assert (data.n_classes, data.n_domains, data.feature_shape, data.n_features) == (4, 1, (5,), 5)
    assert data.d_train.shape == (40,) and data.d_valid.shape == (12,)
    assert (data.d_train == 0).all() and (data.d_valid == 0).all()
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    np.testing.assert_array_equal(data.x_valid, arrays["x_valid"].astype(np.float32))
    np.testing.assert_array_equal(data.y_train, arrays["y_train"])
    assert data.source == str(path.resolve())


def test_npz_with_groups(tmp_path: Path) -> None:
    arrays = _table(groups=True)
    data = sources.load(str(_npz(tmp_path, arrays)))
    assert data.n_domains == 2
    np.testing.assert_array_equal(data.d_train, arrays["d_train"])
    np.testing.assert_array_equal(data.d_valid, arrays["d_valid"])
    # the same arrays as a reference-format pickle are the same dataset
    pkl = tmp_path / "same.pkl"
    pkl.write_bytes(pickle.dumps(arrays, protocol=3))
    assert sources.load(str(pkl)).fingerprint() == data.fingerprint()


def test_npz_of_images_with_integer_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arrays: dict[str, np.ndarray] = {
        "x_train": rng.integers(0, 256, (30, 1, 8, 8), dtype=np.uint8), "y_train": np.arange(30) % 3,
        "x_valid": rng.integers(0, 256, (9, 1, 8, 8), dtype=np.uint8), "y_valid": np.arange(9, dtype=np.int32) % 3,
    }
    data = sources.load(str(_npz(tmp_path, arrays, name="IMAGES.NPZ")))
    assert data.feature_shape == (1, 8, 8) and data.n_features == 64 and data.x_train.shape == (30, 1, 8, 8)
    assert data.x_train.dtype == np.float32
    np.testing.assert_array_equal(data.x_train, arrays["x_train"].astype(np.float32))  # as given, unscaled
    assert data.y_valid.dtype == np.int64 and data.n_classes == 3


def _drop(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda a: {k: v for k, v in a.items() if k != key}


def _put(key: str, value: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda a: {**a, key: value(a)}


NPZ_REFUSALS: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], str]] = {
    "object array": (_put("x_train", lambda a: np.array([object()] * 40, dtype=object)),
                     (r"x_train holds an object array \(pickled Python objects\), which kdtune does not load; "
                      "save plain numeric arrays")),
    "missing key": (_drop("y_valid"), "missing key 'y_valid'; a dataset needs"),
    "unknown key": (_put("labels", lambda a: a["y_train"]),
                    (r"unknown key\(s\) 'labels'; a dataset needs \['x_train', 'y_train', 'x_valid', 'y_valid'\] "
                     r"and may add the groups \['d_train', 'd_valid'\]")),
    "only d_train": (_put("d_train", lambda a: np.zeros(40, dtype=np.int64)), "d_train is given without d_valid"),
    "only d_valid": (_put("d_valid", lambda a: np.zeros(12, dtype=np.int64)), "d_valid is given without d_train"),
    "feature shapes differ": (_put("x_valid", lambda a: a["x_valid"].reshape(12, 1, 5)),
                              r"x_train and x_valid must have the same feature shape .* \(5,\) and \(1, 5\)"),
    "feature counts differ": (_put("x_valid", lambda a: a["x_valid"][:, :4]), r"\(5,\) and \(4,\)"),
    "y float": (_put("y_train", lambda a: a["y_train"].astype(np.float64)),
                "y_train must hold integers, but got dtype float64"),
    "label missing from training": (_put("y_train", lambda a: np.where(a["y_train"] == 2, 3, a["y_train"])),
                                    r"class\(es\) \[2\] never occur in y_train"),
    "string features": (_put("x_train", lambda a: a["x_train"].astype(str)), "x_train must be floating point"),
    "NaN": (_put("x_valid", lambda a: np.full_like(a["x_valid"], np.nan)), "x_valid holds NaN"),
}


@pytest.mark.parametrize("case", list(NPZ_REFUSALS))
def test_bad_npz_contents_are_one_line(tmp_path: Path, case: str) -> None:
    mutate, message = NPZ_REFUSALS[case]
    path = _npz(tmp_path, mutate(_table()))
    assert str(path) in _one_line_error(path, message)


def test_object_array_that_would_run_code_is_refused_unopened(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    arrays = {**_table(), "y_valid": np.array([_RunsShell(f"touch {marker}")] * 12, dtype=object)}
    path = _npz(tmp_path, arrays)
    _one_line_error(path, "y_valid holds an object array")
    assert not marker.exists()


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    arrays: dict[str, Any] = _table()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "not a readable NPZ archive: the file is empty"),
    (b"x_train,y_train\n0.1,0\n", r"not a zip file \(it starts with b'x_trai'\); write it with numpy.savez"),
    (pickle.dumps(_table()), "not a zip file"),  # a pickle named .npz is not read as one
    (_zip_bytes()[:-30], "the zip is damaged or truncated"),
    (_zip_bytes()[: len(_zip_bytes()) // 2], "the zip is damaged or truncated"),
    (_zip_bytes()[:60], "the zip is damaged or truncated"),
])
def test_bad_npz_files_are_one_line(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(raw)
    assert str(path) in _one_line_error(path, message)


def test_npz_member_damaged_inside_an_intact_zip(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w") as zf:
        good = io.BytesIO()
        np.save(good, np.zeros((40, 5)))
        zf.writestr("x_train.npy", good.getvalue()[:-100])  # cut: the header promises more bytes
        for key in ("y_train", "x_valid", "y_valid"):
            buf = io.BytesIO()
            np.save(buf, _table()[key])
            zf.writestr(f"{key}.npy", buf.getvalue())
    _one_line_error(path, "not a readable NPZ archive: x_train is damaged")


def test_npy_file_named_npz(tmp_path: Path) -> None:
    path = tmp_path / "one.npz"
    with path.open("wb") as f:
        np.save(f, np.zeros((3, 2)))
    _one_line_error(path, r"holds one array in \.npy format, not an NPZ archive of named arrays")


def test_npz_missing_file_and_folder(tmp_path: Path) -> None:
    _one_line_error(tmp_path / "nope.npz", "data file not found")
    (tmp_path / "folder.npz").mkdir()
    _one_line_error(tmp_path / "folder.npz", "is a folder")
    with pytest.raises(DataError, match="is a folder; an NPZ dataset is a file"):
        sources.load_npz(tmp_path)


def test_a_zip_named_pkl_says_what_it_is(tmp_path: Path) -> None:
    path = tmp_path / "data.pkl"
    path.write_bytes(_zip_bytes())
    _one_line_error(path, "a zip archive's signature: an .npz file needs a name ending in .npz")


# ---------------------------------------------------------------- builtin:digits

# The digits' identity: fixed by scikit-learn's copy of the data and DIGITS_HOLDOUT_SEED. A change here means
# builtin:digits is no longer the data set earlier studies used.
DIGITS_FINGERPRINT = "99666230c93ab68ced79efd93c7bef15f91e06505ee84dd85a405ec2063647cc"


@pytest.fixture(scope="module")
def digits() -> dataset.ClassificationData:
    return sources.load("builtin:digits")


def test_digits_shapes_and_values(digits: dataset.ClassificationData) -> None:
    assert digits.x_train.shape == (1258, 1, 8, 8) and digits.x_valid.shape == (539, 1, 8, 8)
    assert digits.y_train.size + digits.y_valid.size == 1797
    assert (digits.feature_shape, digits.n_features, digits.n_classes, digits.n_domains) == ((1, 8, 8), 64, 10, 1)
    assert (digits.d_train == 0).all() and (digits.d_valid == 0).all()
    for x in (digits.x_train, digits.x_valid):
        assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
        assert set(np.unique(x * 16).tolist()) <= set(range(17))  # grey levels 0..16, divided by 16
    assert digits.source == "builtin:digits"


def test_digits_are_scikit_learns_images(digits: dataset.ClassificationData) -> None:
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]

    bunch = load_digits()
    together = np.concatenate([digits.x_train, digits.x_valid]).reshape(1797, 64) * 16
    labels = np.concatenate([digits.y_train, digits.y_valid])
    # each image exactly once: compare the row multisets, ordered by (label, pixels)
    mine = np.column_stack([labels, together]).astype(np.int64)
    theirs = np.column_stack([bunch.target, bunch.data]).astype(np.int64)
    assert np.array_equal(mine[np.lexsort(mine.T[::-1])], theirs[np.lexsort(theirs.T[::-1])])


def test_digits_holdout_is_stratified(digits: dataset.ClassificationData) -> None:
    train = np.bincount(digits.y_train, minlength=10)
    valid = np.bincount(digits.y_valid, minlength=10)
    assert (train > 0).all() and (valid > 0).all()
    total = train + valid
    assert valid.tolist() == [round(sources.DIGITS_HOLDOUT_FRACTION * n) for n in total]
    assert np.abs(valid / total - 0.3).max() < 0.005


def test_digits_are_the_same_on_every_call(digits: dataset.ClassificationData) -> None:
    again = sources.builtin("digits")
    for key in dataset.ARRAY_KEYS:
        assert np.array_equal(getattr(again, key), getattr(digits, key))
    assert again.fingerprint() == digits.fingerprint() == DIGITS_FINGERPRINT


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100


_PurePythonPickler: Any = pickle._Pickler  # type: ignore[attr-defined]  # its dispatch table can be extended


class _Python2Pickler(_PurePythonPickler):
    """Writes protocol 2 as Python 2's cPickle did: str and bytes both as (SHORT_)BINSTRING, and numpy's
    reconstructor under its Python 2 module ``numpy.core.multiarray``, as in the real CIFAR batch files."""

    dispatch = _PurePythonPickler.dispatch.copy()

    def save_py2_str(self, obj: str | bytes) -> None:
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


def _pickle_batch(batch: dict[bytes, Any], python2: bool) -> bytes:
    if not python2:
        return pickle.dumps(batch, protocol=2)
    buf = io.BytesIO()
    _Python2Pickler(buf, protocol=2).dump(batch)
    return buf.getvalue()


def test_python2_pickler_writes_what_python2_wrote() -> None:
    raw = _pickle_batch({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, python2=True)
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(raw)]
    names = {name for name, _ in ops}
    assert {"SHORT_BINSTRING", "BINSTRING"} <= names and not names & {"BINUNICODE", "SHORT_BINUNICODE"}
    assert ("GLOBAL", "numpy.core.multiarray _reconstruct") in ops
    assert ("GLOBAL", "_codecs encode") not in ops


def _cifar_batch(rng: np.random.Generator, labels: list[int], label_key: bytes, index: int) -> dict[bytes, Any]:
    n = len(labels)
    batch: dict[bytes, Any] = {
        b"batch_label": f"training batch {index} of 5".encode(),
        label_key: labels,  # a Python list, as in the real files
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{index}_{k}.png".encode() for k in range(n)],
    }
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [19 - (label % 20) for label in labels]
    return batch


def _write_cifar10(folder: Path, python2: bool = True) -> dict[str, dict[bytes, Any]]:
    """data_batch_1..5 of 6 images each (labels 0..9, three of each) and a test_batch of 6."""
    rng = np.random.default_rng(10)
    folder.mkdir(parents=True)
    batches = {}
    for i, name in enumerate(sources.CIFAR10_TRAIN + sources.CIFAR10_TEST):
        labels = [(6 * i + k) % 10 for k in range(6)]
        batches[name] = _cifar_batch(rng, labels, b"labels", i + 1)
        (folder / name).write_bytes(_pickle_batch(batches[name], python2))
    (folder / "batches.meta").write_bytes(_pickle_batch({b"label_names": [b"airplane"] * 10}, python2))
    return batches


def _write_cifar100(folder: Path, python2: bool = False) -> dict[str, dict[bytes, Any]]:
    """A train file of 20 images (fine labels 0..9, twice each) and a test file of 5."""
    rng = np.random.default_rng(100)
    folder.mkdir(parents=True)
    batches = {"train": _cifar_batch(rng, [k % 10 for k in range(20)], b"fine_labels", 1),
               "test": _cifar_batch(rng, [3, 1, 4, 1, 5], b"fine_labels", 2)}
    for name, batch in batches.items():
        (folder / name).write_bytes(_pickle_batch(batch, python2))
    return batches


def _expected_images(raw: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(n, 3, 32, 32) from the format's rule: pixel (c, i, j) is value c*1024 + i*32 + j of a row."""
    out = np.empty((raw.shape[0], 3, 32, 32))
    for c in range(3):
        for i in range(32):
            for j in range(32):
                out[:, c, i, j] = (raw[:, c * 1024 + i * 32 + j] / 255.0 - mean[c]) / std[c]
    return out


def _check_cifar(data: dataset.ClassificationData, batches: dict[str, dict[bytes, Any]],
                 train: tuple[str, ...], test: tuple[str, ...], label_key: bytes) -> None:
    """The folder's images and labels where the format puts them, standardised with the training images'
    own statistics (``:normalise=computed``)."""
    raw_train = np.concatenate([batches[n][b"data"] for n in train])
    raw_test = np.concatenate([batches[n][b"data"] for n in test])
    assert data.x_train.shape == (raw_train.shape[0], 3, 32, 32)
    assert data.x_valid.shape == (raw_test.shape[0], 3, 32, 32)
    assert data.feature_shape == (3, 32, 32) and data.n_features == 3072 and data.n_domains == 1
    assert data.y_train.tolist() == [label for n in train for label in batches[n][label_key]]
    assert data.y_valid.tolist() == [label for n in test for label in batches[n][label_key]]
    assert (data.d_train == 0).all() and (data.d_valid == 0).all()
    # per channel, the training images' mean and population std on the [0, 1] scale
    per_channel = raw_train.reshape(-1, 3, 1024).transpose(1, 0, 2).reshape(3, -1) / 255.0
    mean, std = per_channel.mean(axis=1), per_channel.std(axis=1)
    np.testing.assert_allclose(data.x_train, _expected_images(raw_train, mean, std), atol=1e-5)
    np.testing.assert_allclose(data.x_valid, _expected_images(raw_test, mean, std), atol=1e-5)
    np.testing.assert_allclose(data.x_train.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.x_train.std(axis=(0, 2, 3)), 1.0, atol=1e-5)


@pytest.mark.parametrize("python2", [True, False])
def test_cifar10_folder(tmp_path: Path, python2: bool) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    batches = _write_cifar10(folder, python2)
    data = sources.load(f"{folder}:normalise=computed")
    _check_cifar(data, batches, sources.CIFAR10_TRAIN, sources.CIFAR10_TEST, b"labels")
    assert data.n_classes == 10 and data.x_train.shape[0] == 30 and data.x_valid.shape[0] == 6
    assert data.source == f"{folder.resolve()}:normalise=computed"
    assert sources.load(data.source).fingerprint() == data.fingerprint()  # the source loads the same arrays


@pytest.mark.parametrize("python2", [True, False])
def test_cifar100_folder_uses_fine_labels(tmp_path: Path, python2: bool) -> None:
    folder = tmp_path / "cifar-100-python"
    batches = _write_cifar100(folder, python2)
    data = sources.load(f"{folder}:normalise=computed")
    _check_cifar(data, batches, sources.CIFAR100_TRAIN, sources.CIFAR100_TEST, b"fine_labels")
    assert data.y_valid.tolist() == [3, 1, 4, 1, 5]  # fine labels, not the coarse ones
    assert data.n_classes == 10


# The literature's constants, written out here as the papers' code prints them (RepDistiller, mdistiller).
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@pytest.mark.parametrize(("kind", "mean", "std"), [("cifar-100-python", CIFAR100_MEAN, CIFAR100_STD),
                                                   ("cifar-10-batches-py", CIFAR10_MEAN, CIFAR10_STD)])
def test_a_cifar_folder_is_normalised_with_the_literature_s_constants_by_default(
        tmp_path: Path, kind: str, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    """Three pixels of the first training image set by hand: red 255 at (0, 0), green 0 at (5, 9), blue 51
    at (31, 31); each must be ``(value / 255 - mean[c]) / std[c]`` with the constants, not the batch's own."""
    folder = tmp_path / kind
    batches = _write_cifar100(folder) if "100" in kind else _write_cifar10(folder)
    first = "train" if "100" in kind else "data_batch_1"
    batch = batches[first]
    batch[b"data"][0, 0 * 1024 + 0] = 255
    batch[b"data"][0, 1 * 1024 + 5 * 32 + 9] = 0
    batch[b"data"][0, 2 * 1024 + 31 * 32 + 31] = 51
    (folder / first).write_bytes(_pickle_batch(batch, python2=False))
    data = sources.load(str(folder))
    image = data.x_train[0]
    assert image[0, 0, 0] == pytest.approx((1.0 - mean[0]) / std[0], abs=1e-6)
    assert image[1, 5, 9] == pytest.approx((0.0 - mean[1]) / std[1], abs=1e-6)
    assert image[2, 31, 31] == pytest.approx((0.2 - mean[2]) / std[2], abs=1e-6)
    raw_test = batches["test" if "100" in kind else "test_batch"][b"data"]
    np.testing.assert_allclose(data.x_valid[:raw_test.shape[0]],
                               _expected_images(raw_test, np.array(mean), np.array(std)), atol=1e-5)
    assert data.source == f"{folder.resolve()}:normalise=standard"
    assert sources.load(f"{folder}:normalise=standard").fingerprint() == data.fingerprint()
    # the other normalisation is other data: a cache keyed by the fingerprint never mixes the two
    assert sources.load(f"{folder}:normalise=computed").fingerprint() != data.fingerprint()


def test_a_study_records_a_cifar_folder_with_its_normalisation(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    _write_cifar100(folder)
    assert sources.canonical(str(folder)) == f"{folder.resolve()}:normalise=standard"
    assert sources.canonical(f"{folder}:normalise=computed") == f"{folder.resolve()}:normalise=computed"
    assert sources.canonical("builtin:d0.5") == "builtin:d0.5"
    npz = tmp_path / "x.npz"
    assert sources.canonical(str(npz)) == str(npz.resolve())


@pytest.mark.parametrize(("suffix", "match"), [
    (":normalise=mean", r"normalise must be one of \['standard', 'computed'\], but got 'mean'"),
    (":normalize=computed", r"unknown option 'normalize'; a CIFAR folder takes :normalise=standard\|computed"),
    (":normalise=computed:normalise=standard", "normalise is given twice"),
])
def test_a_bad_normalisation_is_one_line(tmp_path: Path, suffix: str, match: str) -> None:
    folder = tmp_path / "cifar-100-python"
    _write_cifar100(folder)
    _one_line_error(f"{folder}{suffix}", match)


def test_a_normalisation_of_data_that_is_no_cifar_folder_is_one_line(tmp_path: Path) -> None:
    _one_line_error("builtin:digits:normalise=computed", "applies to CIFAR folders only")
    _one_line_error(f"{tmp_path / 'x.npz'}:normalise=computed", "applies to CIFAR folders only")


def test_pixel_lands_where_the_format_says(tmp_path: Path) -> None:
    """One bright pixel at (green, row 3, column 7) of the first training image, every other pixel dark."""
    folder = tmp_path / "cifar-10-batches-py"
    batches = _write_cifar10(folder)
    first = batches["data_batch_1"]
    first[b"data"] = np.zeros_like(first[b"data"])
    first[b"data"][0, 1 * 1024 + 3 * 32 + 7] = 255
    (folder / "data_batch_1").write_bytes(_pickle_batch(first, python2=True))
    data = sources.load(f"{folder}:normalise=computed")
    image = data.x_train[0]
    assert np.unravel_index(image.argmax(), image.shape) == (1, 3, 7)
    assert (np.delete(image[1].ravel(), 3 * 32 + 7) == image[1].min()).all()


@pytest.mark.parametrize("where", ["the whole file", "b'data'", "a label"])
def test_cifar_file_that_would_run_code_is_refused(tmp_path: Path, where: str) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    batches = _write_cifar10(folder)
    marker = tmp_path / "pwned"
    evil = _RunsShell(f"touch {marker}")
    batch = batches["test_batch"]
    payload: Any = {"the whole file": evil, "b'data'": {**batch, b"data": evil},
                    "a label": {**batch, b"labels": [evil] + batch[b"labels"][1:]}}[where]
    (folder / "test_batch").write_bytes(pickle.dumps(payload, protocol=2))
    text = _one_line_error(folder, r"test_batch: refusing to load posix\.system|refusing to load os\.system")
    assert "numpy arrays only" in text
    assert not marker.exists()


def test_the_cifar_payload_is_real(tmp_path: Path) -> None:
    """Guards the test above: unpickled without protection, the payload does run."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_RunsShell(f"touch {marker}"), protocol=2))
    assert marker.exists()


def test_folder_that_is_no_cifar_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    text = _one_line_error(tmp_path, "is a folder, but not a CIFAR-10 or CIFAR-100 python-version folder")
    for expected in ("data_batch_1 .. data_batch_5 and test_batch", "train and test", ".npz", "builtin:NAME"):
        assert expected in text


def test_parent_of_a_cifar_folder_names_it(tmp_path: Path) -> None:
    _write_cifar10(tmp_path / "cifar-10-batches-py")
    _one_line_error(tmp_path, r"\(it holds cifar-10-batches-py/: give that folder\)")


def test_incomplete_cifar_folders(tmp_path: Path) -> None:
    ten = tmp_path / "ten"
    _write_cifar10(ten)
    (ten / "data_batch_4").unlink()
    (ten / "test_batch").unlink()
    _one_line_error(ten, "a CIFAR-10 python-version folder needs data_batch_1, .*, but data_batch_4, test_batch "
                         "are missing")
    hundred = tmp_path / "hundred"
    _write_cifar100(hundred)
    (hundred / "test").unlink()
    _one_line_error(hundred, "a CIFAR-100 python-version folder needs train, test, but test is missing")


def _rewrite(folder: Path, name: str, change: Callable[[dict[bytes, Any]], Any]) -> None:
    batch = pickle.loads((folder / name).read_bytes(), encoding="bytes")
    (folder / name).write_bytes(pickle.dumps(change(batch), protocol=2))


CIFAR_DAMAGE: dict[str, tuple[Callable[[Path], object], str]] = {
    "pixels of the wrong shape": (lambda f: _rewrite(f, "data_batch_2", lambda b: {**b, b"data": b[b"data"][:, :100]}),
                                  (r"data_batch_2: b'data' must be a uint8 array of shape \(n, 3072\), but got "
                                   r"uint8 array of shape \(6, 100\)")),
    "pixels as floats": (lambda f: _rewrite(f, "test_batch", lambda b: {**b, b"data": b[b"data"] / 255.0}),
                         "b'data' must be a uint8 array"),
    "a label too few": (lambda f: _rewrite(f, "data_batch_1", lambda b: {**b, b"labels": b[b"labels"][:-1]}),
                        "b'labels' must be 6 integer labels, one per image, but got 5"),
    "no labels": (lambda f: _rewrite(f, "data_batch_5", lambda b: {k: v for k, v in b.items() if k != b"labels"}),
                  "data_batch_5: a CIFAR batch needs the key b'labels'"),
    "not a dict": (lambda f: _rewrite(f, "data_batch_3", lambda b: [b]), "a CIFAR batch must be a dict"),
    "empty file": (lambda f: (f / "test_batch").write_bytes(b""),
                   "test_batch: not a readable CIFAR batch pickle: the file is empty"),
    "truncated file": (lambda f: (f / "data_batch_1").write_bytes((f / "data_batch_1").read_bytes()[:5000]),
                       r"data_batch_1: not a readable CIFAR batch pickle: .*\(truncated\)"),
    "not a pickle": (lambda f: (f / "data_batch_1").write_bytes(b"P6\n32 32\n255\n" + bytes(100)),
                     "not a pickle at all"),
}


@pytest.mark.parametrize("case", list(CIFAR_DAMAGE))
def test_damaged_cifar_files_are_one_line(tmp_path: Path, case: str) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar10(folder)
    damage, message = CIFAR_DAMAGE[case]
    damage(folder)
    _one_line_error(folder, message)


def test_cifar_files_resaved_with_str_keys_load(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    batches = _write_cifar100(folder)
    for name in ("train", "test"):
        _rewrite(folder, name, lambda b: {k.decode(): v for k, v in b.items()})
    data = sources.load(str(folder))
    assert data.y_valid.tolist() == batches["test"][b"fine_labels"]
