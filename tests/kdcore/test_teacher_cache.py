"""The teacher cache: one training per key, shared safely by concurrent trials, never half-written."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import torch

from kdcore import sources
from kdcore.config import ExperimentConfig
from kdcore.prepared import prepare
from kdcore.student import train_student
from kdcore.teacher_cache import TeacherCache, teacher_key

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
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".lock", ".pt"]  # no temp file left behind


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
