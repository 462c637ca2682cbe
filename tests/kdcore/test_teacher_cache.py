"""The teacher cache: one training per key, shared safely by concurrent trials, never half-written."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest
import torch

from kdcore import sources
from kdcore.config import ExperimentConfig
from kdcore.prepared import Prepared, prepare
from kdcore.result import FitResult
from kdcore.student import train_student
from kdcore.task import Teacher
from kdcore.teacher_cache import TeacherCache, teacher_key
from kdcore.teachers import train_teacher

FIT = {"epochs": 3, "batch_size": 256}


def _config(**overrides: object) -> ExperimentConfig:
    return ExperimentConfig.from_dict({"seeds": [0, 10], "teacher": FIT, "student": FIT}).with_overrides(overrides)


def _get(root: Path, config: ExperimentConfig) -> tuple[bool, list[float]]:
    torch.set_num_threads(1)
    data = sources.load("builtin:d0.5")
    cached = TeacherCache(root).get_or_train(prepare(data, config), config, data.fingerprint())
    return cached.hit, [s["holdout_acc_mean"] for s in cached.summaries]


def test_second_get_hits_and_gives_the_same_teachers(tmp_path: Path) -> None:
    config = _config()
    data = sources.load("builtin:d0.5")
    prep = prepare(data, config)
    cache = TeacherCache(tmp_path)
    first = cache.get_or_train(prep, config, data.fingerprint())
    second = cache.get_or_train(prep, config, data.fingerprint())
    assert (first.hit, second.hit) == (False, True)
    assert first.summaries == second.summaries
    for a, b in zip(first.models, second.models):
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert ka == kb and torch.equal(va, vb)
    # A student distilled from cached teachers is the student distilled from fresh ones.
    s1 = train_student(prep, config, first.models)
    s2 = train_student(prep, config, second.models)
    assert (s1.holdout_acc == s2.holdout_acc).all()
    # no temp file or teacher part left behind: the entry and the locks (the key's, one per teacher)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".lock"] * 4 + [".pt"]


def test_key_depends_on_what_teachers_depend_on_and_nothing_else() -> None:
    base = _config()
    fp = "f" * 64
    assert teacher_key(fp, base) == teacher_key(fp, base.with_overrides({"kd.alpha": 0.1, "student.lr": 0.01}))
    for change in ({"teacher.lr": 0.01}, {"seeds": [0, 11]}, {"protocol": "seed"}, {"split_seed": 1}):
        assert teacher_key(fp, base) != teacher_key(fp, base.with_overrides(change)), change
    assert teacher_key(fp, base) != teacher_key("e" * 64, base)


def test_concurrent_getters_train_once(tmp_path: Path) -> None:
    """Two processes asking for the same key at once: one trains, the other waits and loads."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        outcomes = pool.starmap(_get, [(tmp_path, _config()), (tmp_path, _config())])
    assert sorted(hit for hit, _ in outcomes) == [False, True]
    assert outcomes[0][1] == outcomes[1][1]
    assert len(list(tmp_path.glob("*.pt"))) == 1


def test_damaged_entry_is_trained_again_and_replaced(tmp_path: Path) -> None:
    config = _config()
    data = sources.load("builtin:d0.5")
    prep = prepare(data, config)
    cache = TeacherCache(tmp_path)
    first = cache.get_or_train(prep, config, data.fingerprint())
    path = cache.path(teacher_key(data.fingerprint(), config))
    path.write_bytes(b"not a torch file")
    again = cache.get_or_train(prep, config, data.fingerprint())
    assert not again.hit
    assert [s["per_seed"] for s in again.summaries] == [s["per_seed"] for s in first.summaries]
    assert cache.get_or_train(prep, config, data.fingerprint()).hit
    assert path.read_bytes()[:2] == b"PK"  # a torch zip archive again


def test_keys_of_studies_made_before_tasks_existed_stay_valid() -> None:
    """Computed by kdtune 57c8969 (before tasks, models and new optimizers): the same key today."""
    assert teacher_key("f" * 64, ExperimentConfig()) == (
        "fa6e8e1da15f1d059be4285f5f3ebe5f10876df9fcba2a655e24dd5e566e25fa")
    assert teacher_key("f" * 64, ExperimentConfig(protocol="seed")) == (
        "95413ef4480e03f224da575eb682c1258fa92370c6bebe5765c448a9bd34a359")


def test_the_key_follows_the_teachers_but_not_the_routing(tmp_path: Path) -> None:
    subsets = [{"classes": [0, 1, 2]}, {"classes": [3, 4]}]
    base = _config(**{"task.teachers": subsets, "task.routing": "label"})
    key = teacher_key("f" * 64, base)
    assert key != teacher_key("f" * 64, _config())
    assert teacher_key("f" * 64, base.with_overrides({"task.routing": "all"})) == key  # the student's targets only
    assert teacher_key("f" * 64, base.with_overrides(
        {"task.teachers": [{"classes": [0, 1]}, {"classes": [2, 3, 4]}]})) != key
    assert teacher_key("f" * 64, base.with_overrides({"teacher.model": "cnn"})) != key
    assert teacher_key("f" * 64, base.with_overrides({"teacher.width": 2})) != key
    ckpt = tmp_path / "t.pt"
    ckpt.write_bytes(b"one")
    loaded = base.with_overrides({"task.teachers": [{"classes": [0, 1, 2], "checkpoint": str(ckpt)},
                                                    {"classes": [3, 4]}]})
    first = teacher_key("f" * 64, loaded)
    ckpt.write_bytes(b"two")  # the same path, other weights: other teachers
    assert teacher_key("f" * 64, loaded) != first


def _entry(path: Path) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, object]]]:
    import json

    payload = torch.load(path, weights_only=True)
    return payload["states"], json.loads(payload["summaries"])


def _same_teachers(a: Path, b: Path) -> None:
    """Two entries hold bit-identical weights and the same figures (seconds aside)."""
    (states_a, sums_a), (states_b, sums_b) = _entry(a), _entry(b)
    assert len(states_a) == len(states_b) == len(sums_a) == len(sums_b)
    for sa, sb in zip(states_a, states_b):
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    for x, y in zip(sums_a, sums_b):
        assert {k: v for k, v in x.items() if k != "seconds"} == {k: v for k, v in y.items() if k != "seconds"}


def test_teachers_trained_one_by_one_in_any_order_give_the_one_task_entry(tmp_path: Path) -> None:
    """Each teacher alone (as its own task would), last first: the entry is assembled when the last part is
    there, bit for bit the entry of the one-task path, and the parts are gone."""
    from kdcore.teachers import train_teachers

    config = _config()
    data = sources.load("builtin:d0.5")
    prep = prepare(data, config)
    whole, parts = TeacherCache(tmp_path / "whole"), TeacherCache(tmp_path / "parts")
    whole.get_or_train(prep, config, data.fingerprint())
    key = teacher_key(data.fingerprint(), config)
    for k in (2, 0):
        (part,) = parts.train_parts(prep, config, data.fingerprint(), [k])
        assert (part.index, part.trained) == (k, True)
        assert parts.part_path(key, k).is_file() and not parts.path(key).exists()
    (last,) = parts.train_parts(prep, config, data.fingerprint(), [1])
    assert last.trained and parts.path(key).is_file()
    assert list((tmp_path / "parts").glob("*.part")) == []
    _same_teachers(whole.path(key), parts.path(key))
    # ... which is what training the teachers one after another gives today
    fresh = train_teachers(prep, config)
    for model, state in zip(fresh, _entry(parts.path(key))[0]):
        assert all(torch.equal(v.cpu(), state[k]) for k, v in model.model.state_dict().items())
    # asked again, every teacher is found, none trained
    assert [p.trained for p in parts.train_parts(prep, config, data.fingerprint(), [0, 1, 2])] == [False] * 3
    assert parts.get_or_train(prep, config, data.fingerprint()).hit


def test_get_or_train_keeps_the_parts_an_interrupted_build_left(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A build stopped after teacher 1: the next get trains teachers 0 and 2 only, and the entry is the one
    a build from nothing gives."""
    from kdcore import teacher_cache

    config = _config()
    data = sources.load("builtin:d0.5")
    prep = prepare(data, config)
    cache = TeacherCache(tmp_path)
    key = teacher_key(data.fingerprint(), config)
    cache.train_parts(prep, config, data.fingerprint(), [1])
    trained: list[int] = []

    def counted(prep: Prepared, config: ExperimentConfig, teacher: Teacher) -> FitResult:
        trained.append(teacher.index)
        return train_teacher(prep, config, teacher)

    monkeypatch.setattr(teacher_cache, "train_teacher", counted)
    cached = cache.get_or_train(prep, config, data.fingerprint())
    assert trained == [0, 2]
    assert not cached.hit and cache.path(key).is_file() and not cache.part_path(key, 1).exists()
    other = TeacherCache(tmp_path / "alone")
    other.get_or_train(prep, config, data.fingerprint())
    _same_teachers(cache.path(key), other.path(key))


def test_a_teacher_index_out_of_range_is_refused(tmp_path: Path) -> None:
    config = _config()
    data = sources.load("builtin:d0.5")
    with pytest.raises(IndexError, match="out of range"):
        TeacherCache(tmp_path).train_parts(prepare(data, config), config, data.fingerprint(), [3])
