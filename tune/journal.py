"""The study's Optuna journal file, checked before it is opened: a torn last line is set aside, a corrupt
line anywhere else is one line naming it.

A driver killed in the middle of a write, a full disk, or two NFS clients interleaving leave the journal
with a last line that lacks its newline or does not parse. Optuna skips such a line when it reads, but the
next append glues its own line onto it, and from then on every reader of the study (kdtune, Optuna's tools,
optuna-dashboard) dies on a JSONDecodeError in the middle of the file. So before a study's journal is
opened, ``repair_tail`` moves a torn tail into a side file ``optuna.journal.torn-<UTC time>`` (nothing is
thrown away) and truncates the journal to its last whole line, under the lock Optuna itself writes with
(``JournalFileSymlinkLock``, the default lock of ``JournalFileBackend``), so a live writer is never cut.
Only the tail is read on this path (the last ``TAIL_BYTES``), so opening a journal of ten thousand trials
costs no more than opening one of ten; ``corrupt_line`` scans the whole file only once Optuna has failed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

from kdcore import write_atomic
from tune.errors import KDTuneError

TAIL_BYTES = 1 << 20  # more than any one journal line: an Optuna log entry is one trial operation
TORN_SUFFIX = ".torn-"
# Optuna's journal operations (optuna.storages.journal._storage.JournalOperation), for saying what was lost.
_OPERATIONS = {0: "study creation", 1: "study deletion", 2: "study attribute", 3: "study system attribute",
               4: "creation", 5: "parameter", 6: "state or value", 7: "intermediate value", 8: "user attribute",
               9: "system attribute", 10: "discard"}


class JournalCorrupt(KDTuneError):
    """A journal line other than the last one is not an Optuna log entry."""


def _lost_update(torn: bytes) -> str:
    """What a torn line was, as far as its surviving bytes say: "trial 7's state or value"."""
    text = torn.decode("utf-8", "replace")
    op = re.search(r'"op_code"\s*:\s*(\d+)', text)
    trial = re.search(r'"trial_id"\s*:\s*(\d+)', text)
    what = _OPERATIONS.get(int(op.group(1))) if op else None
    if trial:
        return f"trial {trial.group(1)}'s {what or 'update'}"
    if op and int(op.group(1)) == 4:
        return "a new trial's creation"
    return f"an update ({what})" if what else "an update"


def _parses(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
        return False


def _tail_cut(path: Path) -> int | None:
    """The offset where the journal's last whole, parseable line ends when what follows it is torn (no
    newline, or a last line that does not parse); None when the tail is whole."""
    size = path.stat().st_size
    if size == 0:
        return None
    with path.open("rb") as f:
        start = max(0, size - TAIL_BYTES)
        f.seek(start)
        tail = f.read()
    if tail.endswith(b"\n"):
        body = tail[:-1]
        cut = body.rfind(b"\n")
        last = body[cut + 1:]
        if cut < 0 and start > 0:
            return None  # one line longer than the window: not ours to judge on this path
        return None if _parses(last) else start + cut + 1
    cut = tail.rfind(b"\n")
    if cut < 0 and start > 0:
        return None
    return start + cut + 1


def repair_tail(path: Path) -> str | None:
    """Set a torn last line of the journal at ``path`` aside and truncate the journal to its last whole
    line, under Optuna's own lock; the one-line message to show, or None when the journal was whole."""
    if not path.is_file() or _tail_cut(path) is None:
        return None
    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        cut = _tail_cut(path)  # again, under the lock: a writer may have finished its line meanwhile
        if cut is None:
            return None
        with path.open("rb") as f:
            f.seek(cut)
            torn = f.read()
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        side = path.with_name(f"{path.name}{TORN_SUFFIX}{stamp}")
        write_atomic(side, torn)
        with path.open("r+b") as f:
            f.truncate(cut)
            f.flush()
            os.fsync(f.fileno())
    finally:
        lock.release()
    return (f"{path}: its last line was cut off ({len(torn)} bytes, kept in {side.name}); "
            f"{_lost_update(torn)} was lost and the study goes on from the line before")


def corrupt_line(path: Path) -> JournalCorrupt | None:
    """The error naming the first line of the journal that is not an Optuna log entry (after
    ``repair_tail``, any such line is in the middle); None when every line parses."""
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.endswith(b"\n") or not _parses(line):
                return JournalCorrupt(
                    f"{path}: line {number} is not an Optuna journal entry (the file is corrupt in the middle, "
                    "not torn at its end); restore the study folder from a copy, or move that line out of the "
                    "file if you know what it held")
    return None
