"""A study's teachers train as Ray tasks of their own (``tune.reference``), on a real local Ray.

Three class-subset teachers on the digits: each teacher is its own task (its own Ray task id, one teacher
trained in each), the entry they assemble is bit for bit the one the one-task path gives
(``TeacherCache.get_or_train`` in this process), and after a teacher's task failed (its part cannot be
written), the study's next run trains only what is missing. Each run is a driver process of its own,
started here (``_DRIVER``), as ``kdtune search`` would be.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

SPACE = """\
name: three-teachers
description: three class-subset teachers on the digits, a couple of epochs
data: builtin:digits
fixed:
  seeds: [0, 10]
  eval_every: 1
  task:
    teachers: [{classes: [0, 6, 8, 9]}, {classes: [1, 4, 7]}, {classes: [2, 3, 5]}]
    routing: label
  teacher: {model: cnn, channels: [4, 8], epochs: 2, batch_size: 128, patience: null}
  baseline: {model: cnn, channels: [4, 8], epochs: 2, batch_size: 128, patience: null}
  student: {model: cnn, channels: [4, 8], epochs: 2, batch_size: 128, patience: null}
objective: {metric: inner_acc, mode: max}
knobs:
  kd.alpha: {type: float, low: 0.0, high: 1.0}
"""

# One driver run: ``new NAME`` plans and creates the study (``fault``: and makes teacher 1's part
# unwritable: a folder where its file goes), ``again NAME`` opens it; then the references are trained
# (tune.reference.train_references) on a local Ray of 2 CPUs. Prints one JSON line.
_DRIVER = """
import dataclasses, json, sys
from pathlib import Path
from tune import cluster
from tune.cluster import ClusterSpec
from tune.plan import RunOptions, SearchSettings, plan_study
from tune.reference import train_references
from tune.study import StudyMeta, StudyPaths, create_study
from tune.tables import study_tables
import kdcore
mode, storage, name, space = sys.argv[1:5]
if mode == "again":
    paths = StudyPaths(Path(storage) / name)
    meta = StudyMeta.read(paths)
else:
    paths, meta = plan_study(SearchSettings(data="builtin:digits", space=space, name=name,
                                            storage=Path(storage), num_samples=1))
    with create_study(paths, meta, "maximize"):
        pass
if mode == "fault":
    config = meta.space(paths).base
    key = kdcore.teacher_key(meta.fingerprint, config)
    (paths.teachers / f"{key}.teacher_1.part").mkdir(parents=True)
handle = cluster.start(ClusterSpec(num_cpus=2))
try:
    tables = study_tables(paths, meta, meta.space(paths))
    try:
        done = train_references(paths, meta, tables, RunOptions(quiet=True))
        print(json.dumps({"outputs": [dataclasses.asdict(d) for d in done]}))
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
finally:
    handle.stop()
"""


@pytest.fixture
def storage() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="kdtt-", dir="/tmp"))  # short: Ray's unix socket paths
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _drive(mode: str, storage: Path, name: str) -> dict[str, Any]:
    space = storage / "space.yaml"
    space.write_text(SPACE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "RAY_", "TUNE_"))}
    env.update(TMPDIR=str(storage), RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", _DRIVER, mode, str(storage), name, str(space)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _key(storage: Path) -> str:
    import kdcore
    from search_spaces import load_space

    return str(kdcore.teacher_key(kdcore.load_data("builtin:digits").fingerprint(),
                                  load_space(storage / "space.yaml").base))


def _payload(path: Path) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, Any]]]:
    payload = torch.load(path, weights_only=True)
    return payload["states"], json.loads(payload["summaries"])


def _same_entry(a: Path, b: Path) -> None:
    (states_a, sums_a), (states_b, sums_b) = _payload(a), _payload(b)
    assert len(states_a) == len(states_b) == 3
    for sa, sb in zip(states_a, states_b):
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    for x, y in zip(sums_a, sums_b):
        x, y = dict(x), dict(y)
        x.pop("seconds"), y.pop("seconds")
        assert json.dumps(x, sort_keys=True) == json.dumps(y, sort_keys=True)


def _one_task_entry(storage: Path) -> Path:
    """The entry the one-task path gives, trained in this process (one thread, as each Ray task has)."""
    import kdcore
    from kdcore import TeacherCache, prepare
    from search_spaces import load_space

    config = load_space(storage / "space.yaml").base
    data = kdcore.load_data("builtin:digits")
    cache = TeacherCache(storage / "one-task")
    torch.set_num_threads(1)
    cache.get_or_train(prepare(data, config), config, data.fingerprint())
    return cache.path(_key(storage))


@pytest.mark.slow
def test_each_teacher_is_its_own_ray_task_and_the_entry_is_the_one_task_entry(storage: Path) -> None:
    got = _drive("new", storage, "s")
    outputs = {o["name"]: o for o in got["outputs"]}
    assert set(outputs) == {"baseline", "teacher_0", "teacher_1", "teacher_2"}
    for k in range(3):
        out = outputs[f"teacher_{k}"]
        assert [name for name, _ in out["summaries"]] == [f"teacher_{k}"]  # one teacher per task
        assert out["trained"] == [f"teacher_{k}"]
    assert len({o["worker"]["task_id"] for o in got["outputs"]}) == 4  # four Ray tasks
    teachers = storage / "s" / "teachers"
    key = _key(storage)
    assert sorted(p.name for p in teachers.glob("*.pt")) == [f"{key}.pt"]
    assert list(teachers.glob("*.part")) == []  # assembled, parts removed
    _same_entry(teachers / f"{key}.pt", _one_task_entry(storage))
    # the reference table holds each teacher's figures, as the entry does
    import pandas as pd

    reference = pd.read_parquet(storage / "s" / "results" / "reference.parquet")
    assert set(reference.method) == {"baseline", "teacher_0", "teacher_1", "teacher_2"}
    _, summaries = _payload(teachers / f"{key}.pt")
    for k, summary in enumerate(summaries):
        rows = reference[reference.method == f"teacher_{k}"].sort_values("seed")
        want = sorted(summary["per_seed"], key=lambda s: s["seed"])
        assert rows.holdout_acc.tolist() == pytest.approx([s["holdout_acc"] for s in want], abs=1e-9)


@pytest.mark.slow
def test_after_a_teacher_task_failed_the_next_run_trains_only_what_is_missing(storage: Path) -> None:
    import pandas as pd

    failed = _drive("fault", storage, "f")
    error = failed["error"]
    assert "\n" not in error and "the teacher_1 job failed" in error, error
    study = storage / "f"
    key = _key(storage)
    teachers = study / "teachers"
    assert not (teachers / f"{key}.pt").exists()
    reference = study / "results" / "reference.parquet"
    recorded = set(pd.read_parquet(reference).method) if reference.exists() else set()
    assert "teacher_1" not in recorded
    parts = {f"teacher_{k}" for k in range(3) if (teachers / f"{key}.teacher_{k}.part").is_file()}
    (teachers / f"{key}.teacher_1.part").rmdir()  # the fault is mended

    again = _drive("again", storage, "f")
    names = {o["name"] for o in again["outputs"]}
    assert names == {"baseline", "teacher_0", "teacher_1", "teacher_2"} - recorded  # only what is missing
    trained = {t for o in again["outputs"] for t in o["trained"]}
    assert trained == names - parts and "teacher_1" in trained  # a teacher whose part was written is kept
    assert set(pd.read_parquet(reference).method) == {"baseline", "teacher_0", "teacher_1", "teacher_2"}
    assert len(pd.read_parquet(reference)) == 4 * 2  # each reference once, per seed
    _same_entry(teachers / f"{key}.pt", _one_task_entry(storage))
