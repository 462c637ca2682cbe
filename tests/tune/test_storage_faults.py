"""Storage faults (issue: a torn journal, a full disk, a read-only folder): one line, nothing lost, resumable.

The journal's tail is checked with real files and Optuna's real lock; the full disk and the read-only folder
are real tmpfs mounts where the machine lets the tests mount (root, as in CI), else those tests skip.
"""

from __future__ import annotations

import contextlib
import errno
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.study_runs import ROOT, child_env, run_kdtune
from tune.faults import fault_message, storage_fault, writable_folder
from tune.journal import TORN_SUFFIX, JournalCorrupt, corrupt_line, repair_tail

ENTRY = {"op_code": 6, "worker_id": "w", "trial_id": 3, "state": 1, "values": [0.5],
         "datetime_complete": "2026-12-04T00:00:00"}


def _journal(tmp_path: Path, n: int = 3) -> Path:
    path = tmp_path / "optuna.journal"
    lines = [json.dumps({**ENTRY, "trial_id": i}, separators=(",", ":")) + "\n" for i in range(n)]
    path.write_text("".join(lines))
    return path


def test_a_whole_journal_is_left_as_it_is(tmp_path: Path) -> None:
    path = _journal(tmp_path)
    before = path.read_bytes()
    assert repair_tail(path) is None
    assert path.read_bytes() == before
    assert list(tmp_path.glob(f"*{TORN_SUFFIX}*")) == []


@pytest.mark.parametrize("torn", [b'{"op_code":6,"worker_id":"w","trial_id":7,"sta',  # no newline
                                  b'{"op_code":6,"worker_id":"w","trial_id":7,"sta\n',  # newline, no JSON
                                  b'\x00\x00\x00'])  # a hole a full disk or NFS left
def test_a_torn_last_line_is_set_aside_and_the_journal_cut_to_its_last_whole_line(tmp_path: Path,
                                                                                  torn: bytes) -> None:
    path = _journal(tmp_path)
    whole = path.read_bytes()
    path.write_bytes(whole + torn)
    message = repair_tail(path)
    assert message is not None and "\n" not in message
    assert path.read_bytes() == whole
    (side,) = tmp_path.glob(f"optuna.journal{TORN_SUFFIX}*")
    assert side.read_bytes() == torn  # the torn bytes are kept, not thrown away
    assert side.name in message
    if b"trial_id" in torn:
        assert "trial 7's state or value" in message
    assert repair_tail(path) is None  # repaired once


def test_a_corrupt_middle_line_is_named_by_its_number(tmp_path: Path) -> None:
    path = _journal(tmp_path, 4)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = b"not json at all\n"
    path.write_bytes(b"".join(lines))
    assert repair_tail(path) is None  # the tail is whole: the middle is not the tail's to mend
    error = corrupt_line(path)
    assert isinstance(error, JournalCorrupt)
    assert "line 2" in str(error) and str(path) in str(error)
    (tmp_path / "whole").mkdir()
    assert corrupt_line(_journal(tmp_path / "whole")) is None


def test_repair_waits_for_a_live_writer_and_never_cuts_its_line(tmp_path: Path) -> None:
    """A writer holding Optuna's lock with half its line on disk: the repair waits for the lock, then finds
    the line whole and leaves it."""
    from optuna.storages.journal import JournalFileSymlinkLock

    path = _journal(tmp_path)
    line = json.dumps({**ENTRY, "trial_id": 9}, separators=(",", ":")).encode() + b"\n"
    lock = JournalFileSymlinkLock(str(path))
    assert lock.acquire()
    with path.open("ab") as f:
        f.write(line[:10])
    result: list[str | None] = []
    repairer = threading.Thread(target=lambda: result.append(repair_tail(path)))
    repairer.start()
    time.sleep(0.5)
    assert repairer.is_alive()  # blocked on the writer's lock
    with path.open("ab") as f:
        f.write(line[10:])
    lock.release()
    repairer.join(timeout=30)
    assert result == [None]
    assert path.read_bytes().endswith(line)


def test_storage_faults_are_recognised_through_wrappers_and_in_pyarrow_text() -> None:
    plain = OSError(errno.ENOSPC, "No space left on device", "/s/results/x.parquet")
    assert storage_fault(plain) == ("no space left on the device", "/s/results/x.parquet")
    arrow = OSError("[Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device")
    assert storage_fault(arrow) == ("no space left on the device", None)
    try:
        try:
            raise OSError(errno.EROFS, "Read-only file system", "/ro/study")
        except OSError as exc:
            raise RuntimeError("a callback failed") from exc
    except RuntimeError as wrapped:
        assert storage_fault(wrapped) == ("the file system is read-only", "/ro/study")
    assert storage_fault(OSError(errno.ENOENT, "No such file")) is None
    assert storage_fault(ValueError("no")) is None
    line = fault_message("no space left on the device", "/s/results/x", Path("/s"), resumable=True)
    assert "\n" not in line and "`kdtune resume /s`" in line and "/s/results/x" in line


@contextlib.contextmanager
def _tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()[:120]})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_read_only_folder_is_found_without_writing_and_whatever_the_permission_bits_say(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        reason = writable_folder(ro / "not" / "yet")
        assert reason is not None and "read-only" in reason and str(ro) in reason
    assert writable_folder(tmp_path / "new" / "folder") is None


# ------------------------------------------------------------------ through the command line, real studies

GOLDEN_STUDY = Path(__file__).resolve().parents[1] / "golden" / "study"  # a finished 4-trial smoke study


def _copy_golden(where: Path) -> Path:
    import shutil

    shutil.copytree(GOLDEN_STUDY, where / "g", symlinks=True)
    return where / "g"


def _trials(study: Path) -> int:
    from tune.study import StudyPaths, load_optuna_study

    return len(load_optuna_study(StudyPaths(study)).get_trials(deepcopy=False))


def _finished(study: Path) -> set[int]:
    """The numbers of the trials Optuna holds as COMPLETE or PRUNED."""
    from optuna.trial import TrialState

    from tune.study import StudyPaths, load_optuna_study

    done = (TrialState.COMPLETE, TrialState.PRUNED)
    return {t.number for t in load_optuna_study(StudyPaths(study)).get_trials(deepcopy=False) if t.state in done}


def test_a_corrupt_middle_line_of_a_study_s_journal_is_one_line_and_exit_2(tmp_path: Path) -> None:
    study = _copy_golden(tmp_path)
    journal = study / "optuna.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[3] = b'{"op_code": 5, "this line was overwritten\n'
    journal.write_bytes(b"".join(lines))
    before = journal.read_bytes()
    for command in (["train", "--from", str(study), "--quiet"], ["resume", str(study), "--quiet"]):
        proc = run_kdtune(*command)
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert "line 4" in line and str(journal) in line and "Traceback" not in proc.stderr
    assert journal.read_bytes() == before  # refused, not mended
    assert list(study.glob(f"optuna.journal{TORN_SUFFIX}*")) == []


def test_a_read_only_storage_folder_is_refused_before_ray_is_imported(tmp_path: Path) -> None:
    import sys

    with _tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        probe = ("import sys; from tune.cli import main; code = main(['search', '--space', 'smoke', '--name', 'x', "
                 f"'--storage', {str(ro / 'studies')!r}, '--num-samples', '2']); "
                 "print('ray' in sys.modules, code)")
        root = Path(__file__).resolve().parents[2]
        proc = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, timeout=120,
                              check=False)
        assert proc.stdout.split() == ["False", "2"], proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert "read-only" in line and str(ro) in line


@pytest.mark.slow
def test_a_finished_study_with_a_torn_journal_resumes_to_exactly_one_more_trial(tmp_path: Path) -> None:
    study = _copy_golden(tmp_path)
    journal = study / "optuna.journal"
    n = _trials(study)
    torn = b'{"op_code":6,"worker_id":"w","trial_id":2,"state":1,"val'
    journal.write_bytes(journal.read_bytes() + torn)
    proc = run_kdtune("resume", str(study), "--more", "1", "--quiet", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "its last line was cut off" in proc.stderr and "trial 2's state or value was lost" in proc.stderr
    assert "Traceback" not in proc.stderr
    (side,) = study.glob(f"optuna.journal{TORN_SUFFIX}*")
    assert side.read_bytes() == torn
    assert _trials(study) == n + 1
    assert json.loads(proc.stdout)["trials"]["total"] == n + 1


def _fill(folder: Path) -> Path:
    """Fill the file system under ``folder`` to the last byte; the filler file, to delete later."""
    filler = folder / "filler"
    with filler.open("wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * (64 * 1024))
            f.flush()
    return filler


@pytest.mark.slow
def test_a_disk_that_fills_during_a_search_is_one_line_and_a_later_resume_finds_every_trial(tmp_path: Path) -> None:
    """A real full disk (a tmpfs) filled while the search runs: the search ends with one line naming the
    cause and the command to continue, exit 1; once space is freed, ``kdtune resume`` finds every trial
    Optuna was told of and finishes the budget."""
    import sys

    with _tmpfs(tmp_path / "disk", "size=64m") as disk:
        root, env = ROOT, child_env()
        proc = subprocess.Popen([sys.executable, "-m", "tune.cli", "search", "--space", "smoke", "--name", "s",
                                 "--storage", str(disk), "--num-samples", "8", "--max-concurrent", "1", "--quiet"],
                                cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        trials_table = disk / "s" / "results" / "trials.parquet"
        deadline = time.monotonic() + 300
        filler = None
        while time.monotonic() < deadline and proc.poll() is None:
            parts = list(trials_table.glob("*.parquet")) if trials_table.exists() else []
            if len(parts) >= 2:  # two trials recorded: fill the disk under the running study
                filler = _fill(disk)
                break
            time.sleep(0.05)
        _, err = proc.communicate(timeout=300)
        if filler is None:
            pytest.skip("the search ended before the disk could be filled under it")
        assert proc.returncode == 1, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        line = err.strip().splitlines()[-1]
        assert "no space left on the device" in line and f"kdtune resume {disk / 's'}" in line
        filler.unlink()
        finished_before = _finished(disk / "s")  # (a write the full disk tore is set aside first)
        resumed = run_kdtune("resume", str(disk / "s"), "--quiet", "--json")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert json.loads(resumed.stdout)["trials"]["total"] == 8
        from results.reader import read_table

        recorded = set(read_table(disk / "s", "trials")["number"])
        assert finished_before <= recorded == _finished(disk / "s")  # nothing finished was lost
        assert len(recorded) == 8


@pytest.mark.parametrize("when", ["a trial's table write", "compaction"])
def test_enospc_in_a_table_write_names_the_file_and_leaves_what_was_written(tmp_path: Path, when: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """pyarrow's own ENOSPC (its text, no errno attribute, no file name) raised by the Parquet writer: the
    writer re-raises it naming its file, and every row written before reads back unchanged."""
    import pyarrow.parquet as pq

    from results.reader import read_table
    from results.writer import StudyTables
    from tests.results.test_results_tables import PARAMS, rows

    tables = StudyTables(tmp_path / "results", PARAMS, {"study": "s"})
    for n in range(3):
        tables.record_trial(*rows(n))
    before = read_table(tmp_path, "trials").sort_values("number").reset_index(drop=True)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError("[Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    with pytest.raises(OSError) as info:
        tables.record_trial(*rows(3)) if when != "compaction" else tables.compact()
    assert info.value.errno == errno.ENOSPC and str(tmp_path) in str(info.value.filename)
    assert storage_fault(info.value) == ("no space left on the device", info.value.filename)
    monkeypatch.undo()
    after = read_table(tmp_path, "trials").sort_values("number").reset_index(drop=True)
    assert after.equals(before)
    assert not list((tmp_path / "results").rglob("*.tmp"))  # the half-written file did not stay


def test_the_writability_check_writes_nothing(tmp_path: Path) -> None:
    """A refused or accepted resume must leave the study folder as it was: the check only asks."""
    import os

    before = (os.stat(tmp_path).st_mtime_ns, sorted(p.name for p in tmp_path.iterdir()))
    assert writable_folder(tmp_path) is None
    assert (os.stat(tmp_path).st_mtime_ns, sorted(p.name for p in tmp_path.iterdir())) == before


def test_a_storage_fault_that_ray_wraps_is_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Ray Tune re-raises a callback's error as a TuneError whose text is the traceback, raised while the
    OSError is being handled: main finds the fault in the chain and prints one line, exit 1."""
    import tune.cli

    def full_journal(args: object) -> int:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/s/optuna.journal")
        except OSError:
            raise RuntimeError("Traceback (most recent call last):\n  ...")

    monkeypatch.setattr(tune.cli, "cmd_analyse", full_journal)
    assert tune.cli.main(["analyse", "/s"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write /s/optuna.journal: no space left on the device" in err[0]
