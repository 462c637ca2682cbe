"""``kdtune resume`` and trial faults, end to end through the command line (real Ray, so all ``slow``).

- a driver SIGKILLed mid-study, then ``kdtune resume``: exactly the asked number of ended trials, nothing left
  RUNNING, trials RUNNING at the crash re-run, rows of finished trials untouched;
- ``resume`` of a finished study runs nothing; ``resume --more N`` extends it by N trials;
- a trial's worker process SIGKILLed: the trial is retried and the study completes;
- a loss that turns NaN ends its trial as ERROR (with the reason) and the study goes on;
- a trial that raises ends as ERROR with the exception's message in the results.

Every kdtune process gets its own ``RAY_AUTH_TOKEN``; Ray processes inherit the driver's environment, so the
token finds every process a test started (``/proc/PID/environ``) and teardown stops exactly those.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.study_runs import child_env

pytestmark = pytest.mark.slow

SPACE = """\
name: resume-test
description: two seeds, tiny teachers, student epochs {low}-{high} (a trial takes seconds)
fixed:
  seeds: [0, 10]
  eval_every: 1
  teacher: {{batch_size: 256, epochs: 5, patience: null}}
  baseline: {{batch_size: 256, epochs: 5, patience: null}}
  student: {{batch_size: 64, patience: null}}
objective: {{metric: inner_acc, mode: max}}
knobs:
  kd.alpha: {{type: float, low: 0.0, high: 1.0}}
  kd.temperature: {{type: float, low: 1.0, high: 20.0, log: true}}
  student.epochs: {{type: int, low: {low}, high: {high}}}
"""

# One learning rate that trains and one that overflows Adam's update at once (loss NaN at epoch 1).
NAN_SPACE = """\
name: nan-test
description: student.lr 1e30 diverges at the first epoch
fixed:
  seeds: [0, 10]
  eval_every: 1
  teacher: {batch_size: 256, epochs: 5, patience: null}
  baseline: {batch_size: 256, epochs: 5, patience: null}
  student: {batch_size: 64, epochs: 20, patience: null, schedule: constant}
objective: {metric: inner_acc, mode: max}
knobs:
  student.lr: {type: categorical, choices: [0.001, 1.0e+30]}
  kd.alpha: {type: float, low: 0.0, high: 1.0}
"""

ENDED = ("COMPLETE", "PRUNED", "FAIL")
ROW_KEYS = ("status", "param_kd__alpha", "param_kd__temperature", "param_student__epochs", "inner_acc_mean",
            "holdout_acc_mean")


# --------------------------------------------------------------------------------------------- processes


def _kdtune_cmd() -> list[str]:
    script = Path(sys.executable).with_name("kdtune")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "tune.cli"]


class Session:
    """One test's working folder, HOME and Ray token, and every process it started (found by the token)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir()
        self.token = secrets.token_hex(32)
        self.env = child_env()
        # kdtune's Ray temp dirs (kdt-ray-*) go under a short TMPDIR of this test's own (unix socket paths must
        # stay below 108 characters), so the reaping of a killed driver's leftovers sees only this test's.
        self.tmp = Path(tempfile.mkdtemp(prefix="k"))
        self.env.update(HOME=str(self.home), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token,
                        RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", TMPDIR=str(self.tmp))
        self.temp_dirs: set[str] = set()
        self.orphans: list[tuple[int, int, str]] = []

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text)
        return path

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*_kdtune_cmd(), *args], check=False, cwd=self.root, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def start(self, *args: str, stderr: Path, new_session: bool = False) -> subprocess.Popen[str]:
        with stderr.open("w") as fh:
            return subprocess.Popen([*_kdtune_cmd(), *args], cwd=self.root, env=self.env, stdout=subprocess.PIPE,
                                    stderr=fh, text=True, start_new_session=new_session)

    def mine(self) -> dict[int, tuple[int, str]]:
        """{pid: (ppid, cmdline)} of the live processes that carry this session's token."""
        needle = f"RAY_AUTH_TOKEN={self.token}".encode()
        return {pid: (ppid, cmd) for pid, ppid, cmd in _all_processes()
                if needle in _read(Path(f"/proc/{pid}/environ")).split(b"\0")}

    def remember_temp_dirs(self, cmdlines: list[str]) -> None:
        for cmd in cmdlines:
            self.temp_dirs.update(re.findall(r"(" + re.escape(str(self.tmp)) + r"/kdt-ray-[A-Za-z0-9_]+)", cmd))

    def close(self) -> None:
        self.cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def cleanup(self) -> list[tuple[int, int, str]]:
        """SIGKILL every process left with this session's token; remove the Ray temp dirs it saw."""
        left = self.mine()
        self.remember_temp_dirs([cmd for _, cmd in left.values()])
        for pid in left:
            _kill(pid)
        deadline = time.monotonic() + 10
        while self.mine() and time.monotonic() < deadline:
            time.sleep(0.2)
        for path in self.temp_dirs:
            shutil.rmtree(path, ignore_errors=True)
        return [(pid, ppid, cmd) for pid, (ppid, cmd) in left.items()]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _all_processes() -> Iterator[tuple[int, int, str]]:
    """(pid, ppid, cmdline) of every live process, from /proc (psutil is not a dependency)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read(entry / "stat").decode(errors="replace")
        if ")" not in stat:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        cmd = _read(entry / "cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
        yield int(entry.name), int(fields[1]), cmd


def descendants(root: int) -> dict[int, tuple[int, str]]:
    """{pid: (ppid, cmdline)} of every live descendant of ``root``."""
    procs = {pid: (ppid, cmd) for pid, ppid, cmd in _all_processes()}
    found: dict[int, tuple[int, str]] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, cmd) in procs.items():
            if ppid == parent and pid not in found:
                found[pid] = (ppid, cmd)
                frontier.append(pid)
    return found


def _kill(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_for(predicate: Any, timeout: float, what: str, proc: subprocess.Popen[str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"kdtune ended (rc {proc.returncode}) before {what}")
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    s = Session(tmp_path)
    yield s
    s.close()


# --------------------------------------------------------------------------------------------- reading studies


def optuna_trials(study_dir: Path) -> list[Any]:
    from tune.study import StudyPaths, load_optuna_study

    return load_optuna_study(StudyPaths(study_dir)).get_trials(deepcopy=False)


def ended(trials: list[Any]) -> list[Any]:
    """Trials that use the budget: COMPLETE, PRUNED or FAIL, except those resume ended as interrupted."""
    return [t for t in trials if t.state.name in ENDED and not t.user_attrs.get("interrupted")]


def table(study_dir: Path, name: str) -> list[dict[str, Any]]:
    path = study_dir / "results" / f"{name}.parquet"
    return pq.read_table(path).to_pylist() if path.exists() else []


def check_tables_agree(study_dir: Path, n: int) -> list[dict[str, Any]]:
    """N trial rows with unique ids and numbers; epochs and seeds rows only for those trials."""
    trials = table(study_dir, "trials")
    assert len(trials) == n, [(r["trial_id"], r["status"]) for r in trials]
    ids = [r["trial_id"] for r in trials]
    numbers = [r["number"] for r in trials]
    assert len(set(ids)) == n, ids
    assert len(set(numbers)) == n and None not in numbers, numbers
    for detail in ("epochs", "seeds"):
        stray = {r["trial_id"] for r in table(study_dir, detail)} - set(ids)
        assert not stray, f"{detail} rows for trials not in trials.parquet: {stray}"
    # The Parquet numbers are the Optuna numbers of the trials that used the budget.
    assert set(numbers) == {t.number for t in ended(optuna_trials(study_dir))}
    return trials


def final_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------- SIGKILL + resume

N_KILL = 6


@pytest.fixture(scope="module")
def killed_study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A study whose driver was SIGKILLed after 2 trials ended, then resumed; what was seen on the way."""
    s = Session(tmp_path_factory.mktemp("killed"))
    try:
        space = s.write("space.yaml", SPACE.format(low=20, high=40))
        err = s.root / "search.err"
        proc = s.start("search", "--space", str(space), "--name", "k", "--storage", "studies",
                       "--num-samples", str(N_KILL), "--json", stderr=err)
        study = s.root / "studies" / "k"
        wait_for(lambda: re.search(r"trials ([2-9]|\d\d+)/", err.read_text()), 240, "2 ended trials", proc)
        tree = descendants(proc.pid)  # recorded before the kill: the orphans are found among these
        s.remember_temp_dirs([cmd for _, cmd in tree.values()])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        time.sleep(3)  # let whatever dies with the driver die
        s.orphans = [(pid, ppid, cmd) for pid, (ppid, cmd) in s.mine().items()]
        print(f"\n[killed driver {proc.pid}] {len(tree)} descendants before the kill; "
              f"{len(s.orphans)} of its processes alive 3 s after it:")
        for pid, ppid, cmd in s.orphans:
            print(f"  pid {pid} ppid {ppid} {'(in the recorded tree) ' if pid in tree else ''}{cmd[:100]}")
        before_trials = optuna_trials(study)
        running_at_kill = [t.number for t in before_trials if t.state.name == "RUNNING"]
        print(f"  Ray temp dirs left: {sorted(p for p in s.temp_dirs if Path(p).exists())}; "
              f"Optuna trials RUNNING at the kill: {running_at_kill}")
        rows_before = {r["trial_id"]: r for r in table(study, "trials")}
        killed_temp = sorted(s.temp_dirs)

        # No clean-up here: the resume's own local start must reap what the killed driver left.
        resumed = s.run("resume", str(study), "--json")
        time.sleep(1)
        left = [(pid, ppid, cmd) for pid, (ppid, cmd) in s.mine().items()]
        info = {"session": s, "study": study, "rows_before": rows_before, "running_at_kill": running_at_kill,
                "ended_before": len(ended(before_trials)), "resume": resumed, "tree": tree,
                "orphans": s.orphans, "left_after_resume": left, "killed_temp_dirs": killed_temp,
                "temp_dirs_after_resume": [p for p in killed_temp if Path(p).exists()],
                "tmpdir_after_resume": sorted(p.name for p in s.tmp.glob("kdt-ray-*"))}
        yield info
    finally:
        s.close()


def test_resume_after_sigkill_finishes_the_study(killed_study: dict[str, Any]) -> None:
    study: Path = killed_study["study"]
    outcome = final_json(killed_study["resume"])
    assert killed_study["ended_before"] >= 2
    assert killed_study["ended_before"] < N_KILL, "the driver ended the study before it was killed"
    assert outcome["trials"]["total"] == N_KILL and not outcome["interrupted"], outcome

    trials = optuna_trials(study)
    assert not [t.number for t in trials if t.state.name in ("RUNNING", "WAITING")]
    assert len(ended(trials)) == N_KILL
    # Every trial RUNNING at the crash is ended as interrupted and its configuration ran again.
    interrupted = {t.number: t for t in trials if t.user_attrs.get("interrupted")}
    assert set(interrupted) == set(killed_study["running_at_kill"])
    for number, t in interrupted.items():
        assert t.state.name == "FAIL"
        reruns = [r for r in ended(trials) if r.user_attrs.get("rerun_of") == number]
        # A driver killed while Optuna was still recording a trial's suggestions (one journal write per
        # knob) leaves only the first knobs: those are enqueued, and the rerun samples the rest; a trial
        # killed before its first knob holds nothing to rerun, and a fresh trial takes its place.
        if not t.params:
            assert not reruns, (number, reruns)
            continue
        assert len(reruns) == 1, (number, reruns)
        rerun = reruns[0].params
        assert {k: rerun[k] for k in t.params} == t.params and set(rerun) >= set(t.params), (number, t.params)
        complete = next(r for r in ended(trials) if r.state.name == "COMPLETE")
        assert set(rerun) == set(complete.params), "the rerun's configuration is incomplete"

    rows = {r["trial_id"]: r for r in check_tables_agree(study, N_KILL)}
    before = killed_study["rows_before"]
    assert len(before) >= 2
    for tid, old in before.items():
        assert tid in rows, f"trial {tid} finished before the kill but lost its row on resume"
        assert {k: rows[tid][k] for k in ROW_KEYS} == {k: old[k] for k in ROW_KEYS}, tid


def test_resume_reaps_what_the_killed_driver_left(killed_study: dict[str, Any]) -> None:
    """The killed driver's Ray leftovers (orphaned agents, its kdt-ray-* temp dir) are gone after resume."""
    final_json(killed_study["resume"])
    assert killed_study["killed_temp_dirs"], "no Ray temp dir seen in the killed driver's process tree"
    assert killed_study["temp_dirs_after_resume"] == []
    assert killed_study["tmpdir_after_resume"] == [], "a Ray temp dir was left in TMPDIR"
    assert killed_study["left_after_resume"] == [], (killed_study["orphans"], killed_study["left_after_resume"])


def test_resume_of_a_finished_study_runs_nothing_and_more_extends_it(killed_study: dict[str, Any]) -> None:
    s: Session = killed_study["session"]
    study: Path = killed_study["study"]
    final_json(killed_study["resume"])
    snapshot = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in (study / "results").iterdir()}
    snapshot[study / "optuna.journal"] = ((study / "optuna.journal").stat().st_size, 0)

    noop = s.run("resume", str(study), timeout=120)
    assert noop.returncode == 0, noop.stdout + noop.stderr
    assert "already holds its 6 trials" in noop.stdout and "--more" in noop.stdout, noop.stdout
    assert "Traceback" not in noop.stderr
    after = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in (study / "results").iterdir()}
    after[study / "optuna.journal"] = ((study / "optuna.journal").stat().st_size, 0)
    assert after == snapshot, "resume of a finished study wrote to it"

    more = final_json(s.run("resume", str(study), "--more", "3", "--json"))
    assert more["trials"]["total"] == N_KILL + 3 and not more["interrupted"], more
    assert json.loads((study / "study.json").read_text())["num_samples"] == N_KILL + 3
    assert len(ended(optuna_trials(study))) == N_KILL + 3
    assert not [t for t in optuna_trials(study) if t.state.name in ("RUNNING", "WAITING")]
    check_tables_agree(study, N_KILL + 3)


# --------------------------------------------------------------------------------------------- trial faults


def test_killed_trial_worker_is_retried_and_the_study_completes(session: Session) -> None:
    space = session.write("space.yaml", SPACE.format(low=60, high=80))
    err = session.root / "search.err"
    # No pruning (--no-pruning): each trial runs 60-80 epochs, so the kill lands mid-trial.
    proc = session.start("search", "--space", str(space), "--name", "w", "--storage", "studies",
                         "--num-samples", "3", "--no-pruning", "--json", stderr=err)
    study = session.root / "studies" / "w"

    def training_worker() -> int | None:
        found = [pid for pid, (_, cmd) in descendants(proc.pid).items() if cmd.startswith("ray::ImplicitFunc.train")]
        return found[0] if found else None

    victim = wait_for(training_worker, 240, "a worker running a trial", proc)
    time.sleep(1.0)
    assert (_read(Path(f"/proc/{victim}/cmdline")).startswith(b"ray::ImplicitFunc.train")), "trial ended first"
    os.kill(victim, signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.read_text()
    outcome = json.loads(out.strip().splitlines()[-1])
    assert outcome["trials"] == {"total": 3, "COMPLETE": 3}, (outcome, err.read_text())
    rows = check_tables_agree(study, 3)
    assert [r["status"] for r in rows] == ["COMPLETE"] * 3, [(r["status"], r["error"]) for r in rows]
    # Tune wrote the worker's death into the trial's folder (t_<id>/error.txt) and ran the trial again.
    retried = [p.parent.name.removeprefix("t_") for p in study.glob("t_*/error.txt")]
    assert len(retried) == 1, retried
    error = (study / f"t_{retried[0]}" / "error.txt").read_text()
    assert "actor died unexpectedly" in error and f"pid: {victim}" in error, error
    assert retried[0] in {r["trial_id"] for r in rows}
    # Its epoch curve is the retry's alone: one row per evaluation, 1..iterations.
    row = next(r for r in rows if r["trial_id"] == retried[0])
    curve = [e["iteration"] for e in table(study, "epochs") if e["trial_id"] == retried[0]]
    assert sorted(curve) == list(range(1, row["iterations"] + 1)), curve


@pytest.fixture(scope="module")
def nan_study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    s = Session(tmp_path_factory.mktemp("nan"))
    try:
        space = s.write("nan.yaml", NAN_SPACE)
        proc = s.run("search", "--space", str(space), "--name", "nan", "--storage", "studies", "--num-samples",
                     "4", "--json")
        yield {"proc": proc, "study": s.root / "studies" / "nan"}
    finally:
        s.close()


def test_nan_loss_ends_the_trial_as_error_and_the_study_goes_on(nan_study: dict[str, Any]) -> None:
    study: Path = nan_study["study"]
    outcome = final_json(nan_study["proc"])
    assert outcome["trials"]["total"] == 4 and not outcome["interrupted"], outcome
    trials = optuna_trials(study)
    diverging = [t for t in trials if t.params["student.lr"] == 1e30]
    fine = [t for t in trials if t.params["student.lr"] == 0.001]
    assert diverging and fine, "the sampler did not try both learning rates; change --seed or num-samples"
    for t in diverging:
        assert t.state.name == "FAIL", t
        assert "NaN" in t.user_attrs.get("trial_error", ""), t.user_attrs
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in fine)
    assert outcome["best"]["params"]["student.lr"] == 0.001

    rows = check_tables_agree(study, 4)
    for r in rows:
        if r["param_student__lr"] == 1e30:
            assert r["status"] == "ERROR" and "NaN" in (r["error"] or ""), r
            assert r["inner_acc_mean"] is None or np.isnan(r["inner_acc_mean"])
        else:
            assert r["status"] in ("COMPLETE", "PRUNED") and r["error"] is None, r


def test_progress_line_counts_nan_trials_as_errors(nan_study: dict[str, Any]) -> None:
    proc = nan_study["proc"]
    outcome = final_json(proc)
    last = [ln for ln in proc.stderr.splitlines() if ln.startswith("trials ")][-1]
    fails = outcome["trials"].get("FAIL", 0)
    assert fails and f"{fails} error" in last, last


def test_trial_that_raises_ends_as_error_with_its_message(session: Session) -> None:
    """The data file vanishes after the driver read it (as on a node without the shared storage)."""
    import kdcore

    dataset = kdcore.builtin("d0.5")
    data = session.root / "data.pkl"
    data.write_bytes(pickle.dumps({k: np.array(getattr(dataset, k)) for k in kdcore.ARRAY_KEYS}))
    space = session.write("space.yaml", SPACE.format(low=20, high=40))
    err = session.root / "search.err"
    proc = session.start("search", "--space", str(space), "--data", str(data), "--name", "r", "--storage",
                         "studies", "--num-samples", "2", "--max-failures", "1", "--json", stderr=err)
    # The references (Ray tasks) load the data and are recorded before any trial starts; trials load it again.
    reference = session.root / "studies" / "r" / "results" / "reference.parquet"
    wait_for(reference.exists, 240, "the reference training", proc)
    data.unlink()
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.read_text()
    outcome = json.loads(out.strip().splitlines()[-1])
    assert outcome["trials"] == {"total": 2, "FAIL": 2} and outcome["best"] is None, outcome
    study = session.root / "studies" / "r"
    rows = check_tables_agree(study, 2)
    for r in rows:
        assert r["status"] == "ERROR", r
        assert "DataError" in r["error"] and f"data file not found: {data}" in r["error"], r["error"]
        # Retried, but bounded: --max-failures 1 means two attempts, both in the trial's error file.
        attempts = (study / f"t_{r['trial_id']}" / "error.txt").read_text().count("Failure # ")
        assert attempts == 2, attempts
    assert "Traceback" not in err.read_text()


# ------------------------------------------------------------------------------- Ctrl-C and SIGTERM, any time

# References slow enough (a few seconds) that a signal can land while they train; trials stay quick.
SLOW_REFERENCES = SPACE.replace("teacher: {{batch_size: 256, epochs: 5, patience: null}}",
                                "teacher: {{batch_size: 64, epochs: 100, patience: null}}").replace(
                                "baseline: {{batch_size: 256, epochs: 5, patience: null}}",
                                "baseline: {{batch_size: 64, epochs: 100, patience: null}}")
N_STOP = 3


def _no_running(study: Path) -> None:
    running = [t.number for t in optuna_trials(study) if t.state.name == "RUNNING"]
    assert running == [], f"trials left RUNNING: {running}"


def _stopped(proc: subprocess.Popen[str], err: Path, study: Path, code: int) -> None:
    """The run ended with ``code``, no traceback, the resume command shown, nothing left RUNNING."""
    out, _ = proc.communicate(timeout=120)
    stderr = err.read_text()
    assert proc.returncode == code, (proc.returncode, stderr[-2000:])
    for sign in ("Traceback", "core dumped", "Aborted", "*** SIG"):
        assert sign not in stderr, stderr[-2000:]
    assert f"kdtune resume {study}" in out + stderr
    _no_running(study)


def test_ctrl_c_early_then_resume_runs_exactly_the_budget(session: Session) -> None:
    """SIGINT the moment the study folder exists, then SIGINT the resume while the baseline and teachers
    train: each a clean stop with the resume command; a last ``kdtune resume`` runs exactly N trials and the
    references."""
    space = session.write("space.yaml", SLOW_REFERENCES.format(low=5, high=10))
    err = session.root / "search.err"
    proc = session.start("search", "--space", str(space), "--name", "c", "--storage", "studies",
                         "--num-samples", str(N_STOP), "--json", stderr=err)
    study = session.root / "studies" / "c"
    wait_for(lambda: (study / "study.json").is_file(), 120, "the study folder", proc)
    os.kill(proc.pid, signal.SIGINT)
    _stopped(proc, err, study, 130)
    assert (study / "optuna.journal").is_file()

    err = session.root / "resume.err"
    proc = session.start("resume", str(study), "--json", stderr=err)
    wait_for(lambda: "training the references" in err.read_text(), 120, "the reference phase", proc)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGINT)
    _stopped(proc, err, study, 130)
    assert "baseline" not in {r["method"] for r in table(study, "reference")}, "stopped before the baseline ended"

    resumed = final_json(session.run("resume", str(study), "--json"))
    assert resumed["trials"]["total"] == N_STOP and not resumed["interrupted"]
    assert len(ended(optuna_trials(study))) == N_STOP
    _no_running(study)
    check_tables_agree(study, N_STOP)
    methods = {r["method"] for r in table(study, "reference")}
    assert {"baseline", "teacher_0", "teacher_1", "teacher_2", "ablation"} <= methods, methods


def test_sigterm_mid_study_stops_cleanly_and_resume_finishes(session: Session) -> None:
    """SIGTERM once a trial has ended, to the driver's whole process group with the local Ray's processes
    in it (as Slurm sends it; ``kill PID`` reaches the same handler): exit 143 with the resume command, no
    core dump, nothing RUNNING; ``kdtune resume --verbose`` then finishes the budget and shows its work."""
    n = 4
    space = session.write("space.yaml", SPACE.format(low=20, high=40))
    err = session.root / "search.err"
    proc = session.start("search", "--space", str(space), "--name", "t", "--storage", "studies",
                         "--num-samples", str(n), "--num-cpus", "1", stderr=err, new_session=True)
    study = session.root / "studies" / "t"
    wait_for(lambda: re.search(r"trials [1-9]\d*/", err.read_text()), 240, "a trial to end", proc)
    os.killpg(proc.pid, signal.SIGTERM)
    _stopped(proc, err, study, 143)
    stderr = err.read_text()
    # --num-cpus 1: the local Ray has one CPU (and so runs one trial at a time).
    assert any(line.startswith(f"study {study}: {n} trials to run on 1 CPU;") for line in stderr.splitlines()), \
        stderr[:500]
    stopped = optuna_trials(study)
    assert len(ended(stopped)) < n
    for t in stopped:
        if t.state.name == "FAIL" and not t.user_attrs.get("trial_error"):
            assert t.user_attrs.get("interrupted") is True, (t.number, t.user_attrs)

    resumed = session.run("resume", str(study), "--verbose")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(ended(optuna_trials(study))) == n
    _no_running(study)
    rows = check_tables_agree(study, n)
    verbose = re.findall(r"^trial (\d+) (COMPLETE|PRUNED|ERROR): ", resumed.stderr, flags=re.MULTILINE)
    assert len(verbose) == n - len(ended(stopped)), resumed.stderr
    # Provenance: the Optuna study says what it is; every live row says when it ran (UTC, in order).
    from tune.study import StudyPaths, load_optuna_study

    attrs = load_optuna_study(StudyPaths(study)).user_attrs
    assert attrs["kdtune_study"] == "t"
    assert {"data", "fingerprint", "protocol", "space_name", "objective"} <= set(attrs), attrs
    assert attrs["space_name"] == "resume-test" and attrs["objective"] == {"metric": "inner_acc", "mode": "max"}
    for row in rows:
        assert row["started_at"] is not None and row["ended_at"] is not None, row
        assert row["started_at"] <= row["ended_at"] and row["started_at"].tzinfo is not None
    epochs = [r for r in table(study, "epochs") if r["ended_at"] is not None]
    assert epochs and all(r["started_at"] <= r["ended_at"] for r in epochs)
    # Each trial's own log, inside the study folder.
    logs = [p.read_text() for p in study.glob("t_*/trial.log")]
    recorded = [text for text in logs if "recorded by the driver as" in text]
    assert len(recorded) == n, logs
    assert all("start: study t" in text and "evaluation 1, epoch 1" in text for text in recorded)
    assert all(", niceness 0, " in text for text in recorded), "trials must not run at Ray's niceness 15"
