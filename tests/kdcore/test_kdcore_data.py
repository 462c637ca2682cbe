"""kdcore.dataset, .pickles, .generator, .splits, .sources: reference pickles, built-in sets, validation of
bad files, unsafe pickles, the inner split.

The other sources (NPZ, CIFAR folders, builtin:digits) are tested in test_kdcore_sources.py.
"""

from __future__ import annotations

import builtins
import collections
import datetime
import hashlib
import math
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kdcore import dataset, generator, sources, splits
from kdcore.errors import DataError, KDCoreError

# sha256 prefixes from ../shared/data/README.md
REFERENCE_SHA256 = {"0.25": "6beae8f0", "0.5": "90043b6a", "0.75": "32263393", "1.0": "679aa462"}
BUILTIN_NAMES = ["d0.25", "d0.5", "d0.75", "d1.0"]
# Recorded before data of any shape and optional groups came in: a dataset's identity must never drift, or
# every study made before would stop matching its data.
BUILTIN_FINGERPRINTS = {
    "d0.25": "a42300f816412d06a5824d08f55d493880692a6199160ce71033d276ef201a37",
    "d0.5": "00ae5759a9bb757426b25b2fa75665800c5bba15249518133e16474ed701d3de",
    "d0.75": "57d60717bd4ba46aa62eae028f381b28fef13e3dd8d872977afbd40dc20e80cb",
    "d1.0": "dc9631e541e401d34c36f1e34f1455aee10096cddbc5a91a8e38eeb08525ee23",
}
REFERENCE_FINGERPRINTS = {
    "0.25": "cebf30aa2094b8ff50fa7fe297ffc293bf9996bcc3957e40187247a6c8455208",
    "0.5": "d892d8976bddf3247d15f5ab52da0510424ad2f6474da1d0731e91aee2934726",
    "0.75": "23f0ad62e51123e6aa9527fcabeda03a2ceba816602a4abbcc22b0a317f71677",
    "1.0": "5f5441d9dde44af57823f060b40d071e09e31d465949c59a3ec9aadffc4b3614",
}


def _centres(distance: float, k: int = 3) -> np.ndarray:
    theta = 2 * math.pi * np.arange(k) / k
    return 4 * distance * np.stack([np.cos(theta), np.sin(theta)], axis=1)


# ---------------------------------------------------------------- reference pickles


@pytest.mark.parametrize("distance", list(REFERENCE_SHA256))
def test_reference_pickle_loads_with_documented_shapes(reference_path: Callable[[str], Path],
                                                        distance: str) -> None:
    path = reference_path(distance)
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith(REFERENCE_SHA256[distance])
    data = sources.load_pickle(path)
    assert data.x_train.shape == (2400, 2) and data.x_valid.shape == (300, 2)
    for key in ("y_train", "d_train"):
        assert getattr(data, key).shape == (2400,)
    for key in ("y_valid", "d_valid"):
        assert getattr(data, key).shape == (300,)
    assert data.x_train.dtype == np.float32
    assert data.y_train.dtype == data.d_train.dtype == data.y_valid.dtype == np.int64
    assert (data.n_features, data.n_classes, data.n_domains) == (2, 2, 3)
    assert np.bincount(data.y_train).tolist() == [1227, 1173]
    assert np.bincount(data.y_valid).tolist() == [130, 170]
    # 800 / 100 per domain, stored in contiguous blocks
    assert (data.d_train == np.repeat([0, 1, 2], 800)).all()
    assert (data.d_valid == np.repeat([0, 1, 2], 100)).all()
    assert not data.x_train.flags.writeable  # the dataset is immutable once validated
    assert data.source == str(path.resolve())


def test_reference_pickles_share_noise_and_labels(reference_path: Callable[[str], Path]) -> None:
    sets = {d: sources.load_pickle(reference_path(d)) for d in REFERENCE_SHA256}
    base = sets["1.0"]
    for d, data in sets.items():
        assert (data.y_train == base.y_train).all() and (data.y_valid == base.y_valid).all()
        noise = data.x_train - _centres(float(d))[data.d_train]
        base_noise = base.x_train - _centres(1.0)[base.d_train]
        np.testing.assert_allclose(noise, base_noise, atol=1e-4)


def test_fingerprint_is_stable_and_differs_between_files(reference_path: Callable[[str], Path]) -> None:
    prints = {}
    for d in REFERENCE_SHA256:
        first = sources.load_pickle(reference_path(d)).fingerprint()
        assert first == sources.load_pickle(reference_path(d)).fingerprint()
        assert len(first) == 64 and all(c in "0123456789abcdef" for c in first)
        prints[d] = first
    assert len(set(prints.values())) == 4


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_fingerprints_are_unchanged(name: str) -> None:
    assert sources.builtin(name).fingerprint() == BUILTIN_FINGERPRINTS[name]
    assert sources.load(f"builtin:{name}").fingerprint() == BUILTIN_FINGERPRINTS[name]


@pytest.mark.parametrize("distance", list(REFERENCE_FINGERPRINTS))
def test_reference_fingerprints_are_unchanged(reference_path: Callable[[str], Path], distance: str) -> None:
    data = sources.load(str(reference_path(distance)))
    assert data.fingerprint() == REFERENCE_FINGERPRINTS[distance]
    assert (data.feature_shape, data.n_features) == ((2,), 2)


def test_fingerprint_changes_with_one_label() -> None:
    data = generator.generate(0.5, train_per_domain=20, valid_per_domain=5, seed=0)
    arrays: dict[str, Any] = {k: np.array(getattr(data, k)) for k in dataset.ARRAY_KEYS}
    same = dataset.ClassificationData(**arrays)
    assert same.fingerprint() == data.fingerprint()  # source name is not part of the identity
    arrays["y_valid"][0] = 1 - arrays["y_valid"][0]
    assert dataset.ClassificationData(**arrays).fingerprint() != data.fingerprint()


# ---------------------------------------------------------------- built-in sets


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_sets(name: str) -> None:
    data = sources.load(f"builtin:{name}")
    distance = float(name[1:])
    assert data.x_train.shape == (2400, 2) and data.x_valid.shape == (300, 2)
    assert data.y_train.shape == data.d_train.shape == (2400,)
    assert data.y_valid.shape == data.d_valid.shape == (300,)
    assert (data.d_train == np.repeat([0, 1, 2], 800)).all()
    assert (data.d_valid == np.repeat([0, 1, 2], 100)).all()
    for y in (data.y_train, data.y_valid):
        assert set(np.unique(y)) == {0, 1}
        assert 0.4 < y.mean() < 0.6  # balanced in expectation (median radius)
    for d in range(3):
        assert 0.4 < data.y_train[data.d_train == d].mean() < 0.6
    # class 0 inside radius sqrt(2 ln 2) of c_k = 4 d (cos t_k, sin t_k), class 1 outside
    radius = math.sqrt(2 * math.log(2))
    for x, y, dom in ((data.x_train, data.y_train, data.d_train), (data.x_valid, data.y_valid, data.d_valid)):
        dist = np.linalg.norm(x.astype(np.float64) - _centres(distance)[dom], axis=1)
        assert ((dist > radius) == (y == 1)).mean() > 0.999
    for k, centre in enumerate(_centres(distance)):
        np.testing.assert_allclose(data.x_train[data.d_train == k].mean(axis=0), centre, atol=0.15)
    assert data.source == f"builtin:d{distance}"


def test_builtin_is_deterministic_and_distinct() -> None:
    prints = [sources.builtin(n).fingerprint() for n in BUILTIN_NAMES]
    assert prints == [sources.builtin(n).fingerprint() for n in BUILTIN_NAMES]
    assert len(set(prints)) == 4


def test_generate_other_sizes_and_domains() -> None:
    data = generator.generate(1.0, train_per_domain=30, valid_per_domain=7, n_domains=4, seed=5)
    assert data.x_train.shape == (120, 2) and data.x_valid.shape == (28, 2)
    assert (data.d_train == np.repeat(np.arange(4), 30)).all()
    assert data.n_domains == 4
    for k, centre in enumerate([(4, 0), (0, 4), (-4, 0), (0, -4)]):  # 90 degrees apart for K = 4
        np.testing.assert_allclose(data.x_train[data.d_train == k].mean(axis=0), centre, atol=0.75)
    again = generator.generate(1.0, train_per_domain=30, valid_per_domain=7, n_domains=4, seed=5)
    other = generator.generate(1.0, train_per_domain=30, valid_per_domain=7, n_domains=4, seed=6)
    assert again.fingerprint() == data.fingerprint() != other.fingerprint()
    one = generator.generate(0.0, train_per_domain=10, valid_per_domain=3, n_domains=1, seed=0)
    assert one.n_domains == 1 and one.x_train.shape == (10, 2)


@pytest.mark.parametrize("kwargs", [
    {"distance": -1.0}, {"distance": float("nan")}, {"distance": float("inf")},
    {"distance": 0.5, "n_domains": 0}, {"distance": 0.5, "train_per_domain": 1},
    {"distance": 0.5, "valid_per_domain": 0},
])
def test_generate_rejects_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(DataError, match="must"):
        generator.generate(seed=0, **kwargs)


@pytest.mark.parametrize("name", ["d0.3", "d2", "x0.5", "", "dfoo", "0.5", "d-0.5"])
def test_unknown_builtin_name(name: str) -> None:
    with pytest.raises(DataError, match="unknown built-in dataset") as info:
        sources.load(f"builtin:{name}")
    for valid in ("builtin:d0.25", "builtin:d0.5", "builtin:d0.75", "builtin:d1.0", "builtin:digits"):
        assert valid in str(info.value)  # names every valid choice


# ---------------------------------------------------------------- bad files


def _valid_arrays() -> dict[str, np.ndarray]:
    """A small well-formed dict in the reference layout (float64 features, int64 labels and domains)."""
    data = generator.generate(0.5, train_per_domain=12, valid_per_domain=4, seed=3)
    out = {k: np.array(getattr(data, k)) for k in dataset.ARRAY_KEYS}
    out["x_train"] = out["x_train"].astype(np.float64)
    out["x_valid"] = out["x_valid"].astype(np.float64)
    return out


def _write(tmp_path: Path, obj: Any, name: str = "data.pkl", protocol: int = 3) -> Path:
    path = tmp_path / name
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [
    2,
    3, 4, 5,
])
def test_well_formed_pickle_round_trips(tmp_path: Path, protocol: int) -> None:
    arrays: dict[str, Any] = _valid_arrays()
    data = sources.load_pickle(_write(tmp_path, arrays, protocol=protocol))
    for key in dataset.ARRAY_KEYS:
        np.testing.assert_allclose(getattr(data, key), arrays[key], rtol=1e-6)
    assert data.fingerprint() == dataset.ClassificationData(**arrays).fingerprint()


def _set(key: str, value: Callable[[dict[str, np.ndarray]], Any]) -> Callable[[dict[str, np.ndarray]], Any]:
    def mutate(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        a[key] = value(a)
        return a

    return mutate


def _del(key: str) -> Callable[[dict[str, np.ndarray]], Any]:
    def mutate(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        del a[key]
        return a

    return mutate


def _with(key: str, index: Any, value: Any) -> Callable[[dict[str, np.ndarray]], Any]:
    def mutate(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arr = a[key].copy()
        arr[index] = value
        a[key] = arr
        return a

    return mutate


def _empty_domain(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    a["d_train"] = np.where(a["d_train"] == 1, 2, a["d_train"])
    return a


def _empty_valid(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    a["x_valid"] = np.zeros((0, 2))
    a["y_valid"] = np.zeros(0, dtype=np.int64)
    a["d_valid"] = np.zeros(0, dtype=np.int64)
    return a


BAD_CASES: dict[str, tuple[Callable[[dict[str, np.ndarray]], Any], str]] = {
    "missing key": (_del("y_valid"), "missing key 'y_valid'"),
    "x 1-D": (_set("x_train", lambda a: a["x_train"][:, 0]), r"x_train must have shape \(N, F\)"),
    "x no features": (_set("x_train", lambda a: a["x_train"][:, :0]), r"x_train must have shape \(N, F\)"),
    "y 2-D": (_set("y_train", lambda a: a["y_train"][:, None]), r"y_train must have shape \(N,\)"),
    "float labels": (_set("y_train", lambda a: a["y_train"].astype(np.float64)),
                     "y_train must hold integers"),
    "bool labels": (_set("y_valid", lambda a: a["y_valid"].astype(bool)), "y_valid must hold integers"),
    "bool features": (_set("x_valid", lambda a: a["x_valid"] > 0), "x_valid must be floating point or integer"),
    "object features": (_set("x_train", lambda a: a["x_train"].astype(object)),
                        "x_train must be floating point"),
    "label out of range": (_with("y_valid", 0, 5), "y_valid holds class 5"),
    "group out of range": (_with("d_valid", 0, 7), r"d_valid holds group \(domain\) 7"),
    "negative label": (_with("y_train", 3, -1), "y_train must be >= 0"),
    "negative domain": (_with("d_valid", 0, -2), "d_valid must be >= 0"),
    "NaN in x": (_with("x_valid", (0, 0), np.nan), "x_valid holds NaN"),
    "inf in x": (_with("x_train", (5, 1), np.inf), "x_train holds NaN or infinite"),
    "empty group": (_empty_domain, r"group\(s\) \(domains\) \[1\] have no training samples"),
    "group without validation": (_with("d_valid", slice(None), 0),
                                 r"group\(s\) \(domains\) \[1, 2\] have no validation samples"),
    "class gap": (_set("y_train", lambda a: a["y_train"] * 2), r"class\(es\) \[1\] never occur in y_train"),
    "no class 0": (_set("y_train", lambda a: a["y_train"] + 1), r"class\(es\) \[0\] never occur in y_train"),
    "one group key": (_del("d_valid"), "d_train is given without d_valid; give both"),
    "unknown key": (_set("d_tarin", lambda a: a["d_train"]), r"unknown key\(s\) 'd_tarin'; a dataset needs"),
    "misspelt key": (lambda a: {("x_trian" if k == "x_train" else k): v for k, v in a.items()},
                     r"missing key 'x_train' \(and holds unknown key\(s\) 'x_trian'\)"),
    "beyond float32": (_with("x_train", (0, 0), 1e300), "beyond float32's range"),
    "mismatched lengths": (_set("y_train", lambda a: a["y_train"][:-1]), "must have the same length"),
    "empty arrays": (_empty_valid, "x_valid is empty"),
    "one class": (_set("y_train", lambda a: np.zeros_like(a["y_train"])), "at least two classes"),
    "feature count": (_set("x_valid", lambda a: np.hstack([a["x_valid"], a["x_valid"]])),
                      "same number of features"),
    "feature layout": (_set("x_valid", lambda a: a["x_valid"][:, None, :]),
                       r"same feature shape .* but got \(2,\) and \(1, 2\)"),
    "list not array": (_set("y_train", lambda a: a["y_train"].tolist()),
                       "y_train must be a numpy array, but got list"),
    "not a dict": (lambda a: [a[k] for k in dataset.ARRAY_KEYS],
                   "expected a dict of numpy arrays, but the pickle holds list"),
    "none": (lambda a: None, "expected a dict"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_file_gives_clear_data_error(tmp_path: Path, case: str) -> None:
    mutate, message = BAD_CASES[case]
    path = _write(tmp_path, mutate(_valid_arrays()))
    with pytest.raises(DataError, match=message) as info:
        sources.load_pickle(path)
    assert str(path) in str(info.value)  # the message names the file
    assert isinstance(info.value, KDCoreError)


@pytest.mark.parametrize("case", [c for c in BAD_CASES if c not in ("not a dict", "none")])
def test_bad_arrays_are_refused_in_memory_too(case: str) -> None:
    mutate, message = BAD_CASES[case]
    arrays = mutate(_valid_arrays())
    with pytest.raises(DataError, match=message) as info:
        dataset.validate_arrays(arrays, "arrays")
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match=message):
        dataset.ClassificationData.from_arrays(arrays)


# ---------------------------------------------------------------- any shape, optional groups


def test_pickle_without_groups_is_one_group(tmp_path: Path) -> None:
    arrays = _valid_arrays()
    del arrays["d_train"], arrays["d_valid"]
    data = sources.load(str(_write(tmp_path, arrays)))
    assert data.n_domains == 1
    assert data.d_train.dtype == np.int64 and (data.d_train == 0).all() and data.d_train.shape == (36,)
    assert (data.d_valid == 0).all() and data.d_valid.shape == (12,)
    assert not data.d_train.flags.writeable


def test_integer_features_become_float32_unscaled() -> None:
    arrays = _valid_arrays()
    arrays["x_train"] = np.round(arrays["x_train"] * 10).astype(np.int16)
    arrays["x_valid"] = np.round(arrays["x_valid"] * 10).astype(np.int64)
    data = dataset.ClassificationData.from_arrays(arrays)
    assert data.x_train.dtype == data.x_valid.dtype == np.float32
    np.testing.assert_array_equal(data.x_train, arrays["x_train"].astype(np.float32))


@pytest.mark.parametrize("shape", [(2,), (1, 8, 8), (3, 4, 5), (7, 1)])
def test_features_of_any_shape(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.standard_normal((9, *shape)), "y_train": np.arange(9) % 3,
              "x_valid": rng.standard_normal((4, *shape)), "y_valid": np.arange(4) % 3}
    data = dataset.ClassificationData.from_arrays(arrays, source="mine")
    assert data.feature_shape == shape and data.n_features == math.prod(shape)
    assert data.x_train.shape == (9, *shape) and data.n_classes == 3 and data.n_domains == 1
    assert data.source == "mine"
    # the split helpers see one group and stratify by class alone
    assert set(splits.inner_folds(data, 3, seed=0).tolist()) == {0, 1, 2}


def test_groups_given_explicitly_equal_absent_groups() -> None:
    arrays = _valid_arrays()
    grouped = dataset.ClassificationData.from_arrays(
        {**arrays, "d_train": np.zeros_like(arrays["d_train"]), "d_valid": np.zeros_like(arrays["d_valid"])})
    del arrays["d_train"], arrays["d_valid"]
    assert dataset.ClassificationData.from_arrays(arrays).fingerprint() == grouped.fingerprint()


def test_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data file not found"):
        sources.load(str(tmp_path / "nope.pkl"))
    with pytest.raises(DataError, match="data file not found"):
        sources.load_pickle(tmp_path)  # a directory is not a data file


@pytest.mark.parametrize("raw", [
    b"\x00\x01garbage bytes that are not a pickle\xff",
    b"",
    pickle.dumps({"x_train": np.zeros((3, 2))}, protocol=3)[:-20],  # truncated
    b"x_train,y_train\n0.1,0\n",
])
def test_garbage_bytes(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "bad.pkl"
    path.write_bytes(raw)
    with pytest.raises(DataError, match="not a readable dataset pickle"):
        sources.load_pickle(path)


# ---------------------------------------------------------------- unsafe pickles


class _RunsShell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


class _RunsEval:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.eval, (self.code,))


def _malicious(kind: str, marker: Path) -> Any:
    shell = _RunsShell(f"touch {marker}")
    evil_eval = _RunsEval(f"open({str(marker)!r}, 'w').close()")
    if kind == "os.system":
        return shell
    if kind == "eval":
        return evil_eval
    arrays: dict[str, Any] = _valid_arrays()
    if kind == "inside the dict":
        arrays["x_train"] = shell
        return arrays
    if kind == "extra key":
        arrays["readme"] = evil_eval
        return arrays
    if kind == "object array":
        arrays["y_train"] = np.array([shell] + [0] * (arrays["y_train"].size - 1), dtype=object)
        return arrays
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["os.system", "eval", "inside the dict", "extra key", "object array"])
@pytest.mark.parametrize("protocol", [2, 5])
def test_malicious_pickle_is_refused_before_it_runs(tmp_path: Path, kind: str, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = _write(tmp_path, _malicious(kind, marker), protocol=protocol)
    with pytest.raises(DataError, match="refusing to load") as info:
        sources.load_pickle(path)
    assert not marker.exists()
    assert "numpy arrays only" in str(info.value)


def test_the_malicious_payload_is_real(tmp_path: Path) -> None:
    """Guards the test above: the payload does create the marker when unpickled without protection."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_malicious("eval", marker)))
    assert marker.exists()


@pytest.mark.parametrize("global_ref", [b"numpy\nload", b"numpy\nsave", b"os\nsystem", b"subprocess\nPopen",
                                        b"numpy.dtypes\nStringDTypeX"])
def test_only_array_globals_are_admitted(tmp_path: Path, global_ref: bytes) -> None:
    # protocol 0 by hand: GLOBAL module name, MARK, a string, TUPLE, REDUCE, STOP
    path = tmp_path / "handmade.pkl"
    path.write_bytes(b"c" + global_ref + b"\n(S'/dev/null'\ntR.")
    with pytest.raises(DataError, match="refusing to load"):
        sources.load_pickle(path)


@pytest.mark.parametrize("value", [
    collections.OrderedDict(a=1), datetime.datetime(2021, 1, 1), datetime.date(2021, 1, 1), {3}, [[0.5, 1.0]],
])
def test_dict_holding_non_numpy_objects_is_refused(tmp_path: Path, value: Any) -> None:
    arrays = _valid_arrays()
    arrays["x_train"] = value
    path = _write(tmp_path, arrays)
    with pytest.raises(DataError) as info:
        sources.load_pickle(path)
    text = str(info.value)
    assert "refusing to load" in text or "must be a numpy array" in text


def test_ordered_dict_container_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, collections.OrderedDict(_valid_arrays()))
    with pytest.raises(DataError, match="refusing to load collections.OrderedDict"):
        sources.load_pickle(path)


# ---------------------------------------------------------------- inner split


@pytest.fixture(scope="module")
def builtin_half() -> dataset.ClassificationData:
    return sources.builtin("d0.5")


@pytest.mark.parametrize("fraction", [0.2, 0.1, 0.5, 0.33])
def test_inner_split_is_stratified_disjoint_and_complete(builtin_half: dataset.ClassificationData,
                                                         fraction: float) -> None:
    data = builtin_half
    split = splits.inner_split(data, fraction, seed=0)
    n = data.y_train.size
    assert np.intersect1d(split.fit, split.select).size == 0
    assert np.array_equal(np.sort(np.concatenate([split.fit, split.select])), np.arange(n))
    assert abs(split.select.size - fraction * n) <= 6  # 6 cells, each within one sample
    for d in range(data.n_domains):
        for c in range(data.n_classes):
            cell = np.flatnonzero((data.d_train == d) & (data.y_train == c))
            chosen = np.isin(cell, split.select).sum()
            assert abs(chosen - fraction * cell.size) <= 1, (d, c, chosen, cell.size)


def test_inner_split_is_deterministic_per_seed(builtin_half: dataset.ClassificationData) -> None:
    a = splits.inner_split(builtin_half, 0.2, seed=7)
    b = splits.inner_split(builtin_half, 0.2, seed=7)
    c = splits.inner_split(builtin_half, 0.2, seed=8)
    assert np.array_equal(a.select, b.select) and np.array_equal(a.fit, b.fit)
    assert not np.array_equal(a.select, c.select)
    assert a.select.size == c.select.size


def test_inner_split_keeps_a_training_sample_in_tiny_cells() -> None:
    arrays: dict[str, Any] = {
        "x_train": np.zeros((5, 2)), "y_train": np.array([0, 1, 1, 0, 0]),
        "d_train": np.array([0, 0, 0, 1, 1]),
        "x_valid": np.zeros((2, 2)), "y_valid": np.array([0, 1]), "d_valid": np.array([0, 1]),
    }
    data = dataset.ClassificationData(**arrays)
    split = splits.inner_split(data, 0.9, seed=0)
    # every (domain, class) cell keeps at least one sample in fit
    cells = data.d_train * 2 + data.y_train
    assert set(cells[split.fit]) == set(cells)
    assert 0 in split.fit  # the one-sample cell (domain 0, class 0) stays wholly in fit
    assert split.select.size == 2  # each two-sample cell gives exactly one away


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_inner_split_rejects_bad_fraction(builtin_half: dataset.ClassificationData, fraction: float) -> None:
    with pytest.raises(DataError, match="fraction"):
        splits.inner_split(builtin_half, fraction, seed=0)


@pytest.mark.parametrize(("raw", "says"), [
    (b"", "the file is empty"),
    (pickle.dumps({"x_train": np.zeros((3, 2))}, protocol=3)[:-20], "truncated"),
    (b"x_train,y_train\n0.1,0\n", "not a pickle at all (it starts with 'x_train,y_train')"),
])
def test_empty_truncated_and_text_files_say_what_they_are(tmp_path: Path, raw: bytes, says: str) -> None:
    path = tmp_path / "bad.pkl"
    path.write_bytes(raw)
    with pytest.raises(DataError, match="not a readable dataset pickle") as info:
        sources.load_pickle(path)
    assert says in str(info.value) and "\n" not in str(info.value)


def test_a_folder_as_data_says_it_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a folder"):
        sources.load_pickle(tmp_path)
