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


def test_a_read_only_folder_is_found_by_writing_not_by_permission_bits(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        reason = writable_folder(ro / "not" / "yet")
        assert reason is not None and "read-only" in reason and str(ro) in reason
    assert writable_folder(tmp_path / "new" / "folder") is None
