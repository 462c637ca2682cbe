"""Bad input to ``kdtune search`` and ``kdtune resume``: ONE line on stderr ("kdtune <command>: error: ..."),
exit code 2, no traceback, nothing on stdout, and no file written or changed anywhere under the test's folder
(the storage folder, an existing study beside it, HOME).

Cases that need no Ray are fast; those that start or join Ray (an address nobody answers at, a resource
request no cluster can meet) are ``slow``.
"""

from __future__ import annotations

import os
import pickle
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from cli_errors import assert_one_line_error, changes, snapshot

import kdcore
from tests.study_runs import child_env

GOOD_SPACE = """\
name: bad-input-test
description: a valid space (the cases below break one thing at a time)
fixed:
  seeds: [0, 10]
  teacher: {batch_size: 256, epochs: 5}
  baseline: {batch_size: 256, epochs: 5}
  student: {batch_size: 64, epochs: 20}
knobs:
  kd.alpha: {type: float, low: 0.0, high: 1.0}
  kd.temperature: {type: float, low: 1.0, high: 20.0, log: true}
"""
BAD_SPACES = {
    "yaml": "name: broken\nknobs: {kd.alpha: {type: float, low: 0.0, high: 1.0}\n",
    "low_above_high": GOOD_SPACE.replace("low: 0.0, high: 1.0", "low: 1.0, high: 0.0"),
    "unknown_knob": GOOD_SPACE.replace("kd.temperature:", "kd.temprature:"),
    # kd.alpha needs optimizer adam (its own condition) and adamw (the condition of weight_decay): never.
    "contradictory_conditions": GOOD_SPACE.split("knobs:")[0] + """\
knobs:
  student.optimizer: {type: categorical, choices: [adam, adamw]}
  student.weight_decay: {type: float, low: 0.0, high: 0.1, when: {student.optimizer: adamw}}
  kd.alpha: {type: float, low: 0.0, high: 1.0, when: {student.optimizer: adam, student.weight_decay: 0.0}}
""",
    # weight decay > 0 is only valid with adamw; the space lets adam sample it.
    "contradicts_kdcore": GOOD_SPACE.split("knobs:")[0] + """\
knobs:
  student.optimizer: {type: categorical, choices: [adam, adamw]}
  student.weight_decay: {type: float, low: 0.0, high: 0.1}
""",
}


class CodeRunningPayload:
    """Unpickling this would run ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _kdtune_cmd() -> list[str]:
    script = Path(sys.executable).with_name("kdtune")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "tune.cli"]


def _make_study(root: Path) -> Path:
    """A resumable study folder made without Ray: study.json and an Optuna journal with no trials yet."""
    import optuna

    from tune.study import StudyMeta, StudyPaths, journal_storage

    paths = StudyPaths(root)
    dataset = kdcore.builtin("d0.5")
    meta = StudyMeta(name=root.name, data="builtin:d0.5", data_source=dataset.source,
                     fingerprint=dataset.fingerprint(), space_name="bad-input-test", space_text=GOOD_SPACE,
                     num_samples=2, seed=0, max_t=22, grace_period=10, reduction_factor=3, cpus_per_trial=1.0,
                     gpus_per_trial=0.0, max_concurrent=0)
    meta.write(paths)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name=meta.name, storage=journal_storage(paths), direction="maximize")
    (root / ".driver.lock").touch()
    return root


@dataclass
class Workspace:
    root: Path  # the cwd of the command; everything under it is snapshotted
    home: Path
    storage: Path  # the --storage folder search cases name (must not appear)
    study: Path  # an existing study that no case may touch
    keep: list[socket.socket] = field(default_factory=list)  # listeners a case needs while kdtune runs



@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "space.yaml").write_text(GOOD_SPACE)
    study = _make_study(tmp_path / "existing" / "s")
    w = Workspace(tmp_path, home, tmp_path / "studies", study)
    yield w
    for sock in w.keep:
        sock.close()


def _search(*extra: str) -> Callable[[Workspace], list[str]]:
    def build(w: Workspace) -> list[str]:
        return ["search", "--space", str(w.root / "space.yaml"), "--name", "new", "--storage", str(w.storage),
                "--num-samples", "2", *extra]
    return build


def _bad_space(kind: str) -> Callable[[Workspace], list[str]]:
    def build(w: Workspace) -> list[str]:
        (w.root / f"{kind}.yaml").write_text(BAD_SPACES[kind])
        return ["search", "--space", str(w.root / f"{kind}.yaml"), "--name", "new", "--storage", str(w.storage)]
    return build


def _code_pickle(w: Workspace) -> list[str]:
    path = w.root / "evil.pkl"
    path.write_bytes(pickle.dumps(CodeRunningPayload(w.root / "PWNED")))
    return _search("--data", str(path))(w)


def _dict_pickle_with_code(w: Workspace) -> list[str]:
    """A dataset-shaped dict whose last entry runs code: refused before anything is called."""
    d = kdcore.builtin("d0.5")
    arrays: dict[str, object] = {k: np.array(getattr(d, k)) for k in kdcore.ARRAY_KEYS}
    arrays["extra"] = CodeRunningPayload(w.root / "PWNED")
    path = w.root / "evil_dict.pkl"
    path.write_bytes(pickle.dumps(arrays))
    return _search("--data", str(path))(w)


def _not_a_ray_head(w: Workspace) -> list[str]:
    """An address where something accepts TCP connections (the kernel completes them) but no Ray head runs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    w.keep.append(sock)
    return _search("--address", f"127.0.0.1:{sock.getsockname()[1]}")(w)


def _not_a_study(w: Workspace) -> list[str]:
    folder = w.root / "existing" / "plain"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a study\n")
    return ["resume", str(folder)]


def _damaged_study(w: Workspace) -> list[str]:
    folder = w.root / "existing" / "damaged"
    folder.mkdir()
    (folder / "study.json").write_text("{not json")
    return ["resume", str(folder)]


def _data_file(name: str, raw: bytes) -> Callable[[Workspace], list[str]]:
    def build(w: Workspace) -> list[str]:
        (w.root / name).write_bytes(raw)
        return _search("--data", str(w.root / name))(w)
    return build


def _unborn_study(w: Workspace) -> list[str]:
    """What an older kdtune left when stopped at once: the study folder holding only its driver lock."""
    folder = w.root / "existing" / "unborn"
    folder.mkdir()
    (folder / ".driver.lock").touch()
    return ["resume", str(folder)]


@dataclass(frozen=True)
class Case:
    build: Callable[[Workspace], list[str]]
    fragment: str  # what the one line must say
    token: bool = True  # hand the command a RAY_AUTH_TOKEN (as every process of a token cluster needs)
    timeout: float = 30  # an unreachable address must be reported within this (a TCP connect fails at once)
    env: tuple[tuple[str, str], ...] = ()  # more environment for the command


# The rows of the table, run as a user runs them: a subprocess with its own HOME.
ROWS = {
    "search-missing-data-file": Case(lambda w: _search("--data", str(w.root / "missing.pkl"))(w),
                                     "data file not found"),
    "search-pickle-that-runs-code": Case(_code_pickle, "refusing to load"),
    "search-space-invalid-yaml": Case(_bad_space("yaml"), "invalid YAML"),
    "search-space-contradictory-conditions": Case(_bad_space("contradictory_conditions"), "can never be sampled"),
    "resume-unknown-study": Case(lambda w: ["resume", str(w.study.parent / "nope")], "no study at"),
    "resume-folder-without-study-json": Case(_not_a_study, "is not a kdtune study"),
}
# More of the same kind, run in-process through ``tune.cli.main`` (a subprocess costs ~3 s of imports each).
MORE = {
    "search-dataset-pickle-with-code-inside": Case(_dict_pickle_with_code, "refusing to load"),
    "search-space-low-above-high": Case(_bad_space("low_above_high"), "low"),
    "search-space-unknown-knob": Case(_bad_space("unknown_knob"), "did you mean 'kd.temperature'"),
    "search-space-contradicts-kdcore-rules": Case(_bad_space("contradicts_kdcore"), "weight_decay"),
    "search-missing-space-file": Case(lambda w: ["search", "--space", str(w.root / "nope.yaml"), "--name", "new",
                                                 "--storage", str(w.storage)], "no such search-space file"),
    "search-bad-study-name": Case(lambda w: ["search", "--space", str(w.root / "space.yaml"), "--name", "../x",
                                            "--storage", str(w.storage)], "study name must be"),
    "search-study-exists": Case(lambda w: ["search", "--space", str(w.root / "space.yaml"), "--name", "s",
                                           "--storage", str(w.study.parent)], "already exists"),
    "search-zero-samples": Case(_search("--num-samples", "0"), "--num-samples must be >= 1"),
    "resume-damaged-study-json": Case(_damaged_study, "damaged"),
    "resume-negative-more": Case(lambda w: ["resume", str(w.study), "--more", "-1"], "--more must be >= 0"),
    "search-storage-uri": Case(lambda w: ["search", "--space", str(w.root / "space.yaml"), "--name", "new",
                                          "--storage", "s3://bucket/studies"], "need POSIX file locks"),
    "search-address-not-host-port": Case(_search("--address", "head-node"), "--address must be HOST:PORT"),
    "search-address-ray-client": Case(_search("--address", "ray://head:10001"), "Ray Client addresses"),
    "resume-address-not-host-port": Case(lambda w: ["resume", str(w.study), "--address", "10.0.0.1:http"],
                                         "--address must be HOST:PORT"),
    "search-data-is-a-folder": Case(lambda w: _search("--data", str(w.root / "existing"))(w), "is a folder"),
    "search-data-csv": Case(_data_file("points.csv", b"x_train,y_train\n0.1,0\n"), "not a pickle at all"),
    "search-data-empty-file": Case(_data_file("empty.pkl", b""), "the file is empty"),
    "search-data-truncated": Case(_data_file("cut.pkl", pickle.dumps({"x_train": np.zeros((3, 2))})[:-20]),
                                  "truncated"),
    "search-negative-samples": Case(_search("--num-samples", "-1"), "--num-samples must be >= 1, but got -1"),
    "search-num-cpus-zero": Case(_search("--num-cpus", "0"), "--num-cpus must be >= 1"),
    "search-num-cpus-with-address": Case(_search("--num-cpus", "2", "--address", "127.0.0.1:6379"),
                                         "--num-cpus sizes the local Ray"),
    "search-cpus-per-trial-above-num-cpus": Case(_search("--num-cpus", "1", "--cpus-per-trial", "2"),
                                                 "`--cpus-per-trial <= --num-cpus` must hold"),
    "resume-num-cpus-zero": Case(lambda w: ["resume", str(w.study), "--num-cpus", "0"], "--num-cpus must be >= 1"),
    "resume-folder-holding-only-a-lock": Case(_unborn_study, "holds no study.json"),
    # 20 student epochs, evaluated every epoch: a rung at 20 is never reached (pruning silently off before)
    "search-grace-period-at-the-trials-length": Case(_search("--grace-period", "20"),
                                                     "--grace-period 20 is at or beyond the trial's length"),
    "search-grace-period-beyond-max-t": Case(_search("--grace-period", "8", "--max-t", "8"),
                                             "--grace-period 8 is at or beyond --max-t 8"),
    # A digits space on 2-D data said only that a class is missing, not which data the space is for.
    "search-space-for-other-data": Case(lambda w: ["search", "--data", "builtin:d0.5", "--space", "digits-subsets",
                                                   "--name", "new", "--storage", str(w.storage)],
                                        "the space 'digits-subsets' was written for --data builtin:digits"),
    "search-no-pruning-with-a-grace-period": Case(_search("--no-pruning", "--grace-period", "3"),
                                                  "--no-pruning runs every trial to its end"),
}

# Refused before Ray (or torch) is imported: a second, not the seconds Ray's import takes.
CHEAP = ("search-negative-samples", "search-zero-samples", "search-data-csv", "search-missing-space-file",
         "search-bad-study-name", "search-num-cpus-zero")

SLOW = {
    "search-cpus-per-trial-64": pytest.param(
        Case(_search("--cpus-per-trial", "64"), "impossible resource request"), marks=pytest.mark.slow),
    "search-address-nobody-answers": pytest.param(
        Case(_search("--address", "127.0.0.1:1"), "127.0.0.1:1"),
        marks=[pytest.mark.slow]),
    "resume-more-address-nobody-answers": pytest.param(
        Case(lambda w: ["resume", str(w.study), "--more", "2", "--address", "127.0.0.1:1"], "127.0.0.1:1"),
        marks=[pytest.mark.slow]),
    "search-address-not-a-ray-head": pytest.param(
        # The GCS probe waits ~15 s for an answer that never comes; start-up on a busy machine comes on top.
        Case(_not_a_ray_head, "no Ray head replied", timeout=90), marks=pytest.mark.slow),
    "search-address-token-path-unreadable": pytest.param(
        Case(_search("--address", "127.0.0.1:1"), "RAY_AUTH_TOKEN_PATH is set but file cannot be opened",
             token=False, env=(("RAY_AUTH_TOKEN_PATH", "/nonexistent/kdtune-token"),)), marks=pytest.mark.slow),
    "search-address-without-token": pytest.param(
        Case(_search("--address", "127.0.0.1:1"), "RAY_AUTH_TOKEN", token=False),
        marks=[pytest.mark.slow]),
}
TIMEOUT_S = 30  # for a command that starts no Ray


def _kill_marked_processes(token: str) -> None:
    needle = f"KDTUNE_TEST_MARK={token}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass


@pytest.mark.parametrize("case", [*ROWS.values(), *SLOW.values()], ids=[*ROWS, *SLOW])
def test_bad_input_gets_one_line_exit_2_and_writes_nothing(case: Case, ws: Workspace) -> None:
    args = case.build(ws)
    command = args[0]
    before = snapshot(ws.root)
    token = secrets.token_hex(32)
    env = child_env()
    # A TMPDIR of its own (short: unix sockets) shows whether kdtune left a Ray temp dir behind.
    tmp = Path(tempfile.mkdtemp(prefix="k"))
    env.update(HOME=str(ws.home), RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0", TMPDIR=str(tmp),
               KDTUNE_TEST_MARK=token)  # finds the processes this command started, with or without a token
    if case.token:
        env["RAY_AUTH_TOKEN"] = token
    env.update(case.env)
    try:
        proc = subprocess.run([*_kdtune_cmd(), *args], check=False, cwd=ws.root, env=env, capture_output=True, text=True,
                              timeout=case.timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"kdtune {command} gave no answer within {case.timeout} s; stderr so far: "
                    f"{(exc.stderr or b'')[-300:]!r}; changed: {changes(before, snapshot(ws.root))}")
    finally:
        _kill_marked_processes(token)
        left_in_tmp = sorted(p.name for p in tmp.glob("kdt-ray-*"))  # torch may cache there too
        shutil.rmtree(tmp, ignore_errors=True)
    assert_one_line_error(command, proc.returncode, proc.stderr, case.fragment, out=proc.stdout)
    assert not (ws.root / "PWNED").exists(), "the pickle ran its code"
    assert not ws.storage.exists(), f"{ws.storage} was created"
    assert changes(before, snapshot(ws.root)) == {}
    assert left_in_tmp == [], f"left in TMPDIR: {left_in_tmp}"


@pytest.mark.parametrize("case", MORE.values(), ids=MORE)
def test_more_bad_input_in_process(case: Case, ws: Workspace, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from tune.cli import main
    from tune.cluster import RAY_ENV

    args = case.build(ws)
    before = snapshot(ws.root)
    monkeypatch.chdir(ws.root)
    monkeypatch.setenv("HOME", str(ws.home))
    for key, value in {**RAY_ENV, "RAY_AUTH_TOKEN": secrets.token_hex(32)}.items():
        monkeypatch.setenv(key, value)  # main() sets these for Ray; monkeypatch puts the old ones back
    rc = main(args)
    out, err = capsys.readouterr()
    assert_one_line_error(args[0], rc, err, case.fragment, out=out)
    assert not (ws.root / "PWNED").exists(), "the pickle ran its code"
    assert not ws.storage.exists(), f"{ws.storage} was created"
    assert changes(before, snapshot(ws.root)) == {}


@pytest.mark.parametrize("name", CHEAP)
def test_cheap_checks_come_before_heavy_imports(name: str, ws: Workspace) -> None:
    args = MORE[name].build(ws)
    code = ("import sys; from tune.cli import main; rc = main(sys.argv[1:]); "
            "print(sorted(m for m in ('ray', 'torch', 'optuna') if m in sys.modules)); sys.exit(rc)")
    env = child_env()
    env["HOME"] = str(ws.home)
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ws.root, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 2, proc.stderr
    assert MORE[name].fragment in proc.stderr
    assert proc.stdout.strip() == "[]", f"imported before refusing: {proc.stdout}"


@pytest.mark.slow
def test_tmpdir_too_long_for_ray_sockets_is_one_line(ws: Workspace) -> None:
    """Ray's unix sockets live under TMPDIR; a path too long for them is refused before Ray starts."""
    long_tmp = ws.root / ("t" * 60)  # pytest's tmp_path plus 60 characters: well past Ray's 107
    long_tmp.mkdir()
    before = snapshot(ws.root)
    env = child_env()
    env.update(HOME=str(ws.home), TMPDIR=str(long_tmp), RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.run([*_kdtune_cmd(), *_search()(ws)], check=False, cwd=ws.root, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert_one_line_error("search", proc.returncode, proc.stderr, "set TMPDIR to a shorter folder")
    assert not ws.storage.exists()
    # Python's tempfile.gettempdir() makes and deletes a probe file in TMPDIR (its mtime moves): only the
    # folder's contents count.
    assert list(long_tmp.iterdir()) == []
    assert {k: v for k, v in changes(before, snapshot(ws.root)).items() if k != long_tmp.name} == {}


def test_a_gpu_request_without_a_gpu_is_refused_before_ray_starts(ws: Workspace, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """``--gpus-per-trial 1`` on a machine without CUDA was refused only once Ray had started (18 s)."""
    import torch

    from tune.cli import main
    from tune.cluster import RAY_ENV

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    started: list[object] = []
    monkeypatch.setattr("tune.cluster.start", lambda *a, **k: started.append(a))
    for key, value in RAY_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(ws.root)
    args = _search("--gpus-per-trial", "1")(ws)
    before = snapshot(ws.root)
    rc = main(args)
    out, err = capsys.readouterr()
    assert_one_line_error("search", rc, err, "--gpus-per-trial 1 asks for a GPU", "no CUDA device", out=out)
    assert started == [] and changes(before, snapshot(ws.root)) == {}
