"""Storage faults as one line: a full disk, a quota, a read-only or forbidden folder, wherever a study writes.

A study writes its journal, its Parquet tables (appends and compaction), trial logs, the teacher cache, the
report and the plots. Each of those writes is atomic (a temporary name renamed into place, generations
swapped by a symlink), so a write that fails leaves what was written before intact; what the user needs is
to be told which path failed, why, and the command that continues the study once the cause is fixed. Such
a fault is the environment's, not bad input: a search or resume that stops on one exits 1.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
}
_ERRNO_IN_TEXT = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)  # pyarrow's OSError carries it in its text


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, what caused it, and what a Ray task error wraps (``cause``), each once."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [current.__cause__, current.__context__, getattr(current, "cause", None)]
    return seen


def storage_fault(exc: BaseException) -> tuple[str, str | None] | None:
    """``(cause, path)`` when ``exc`` is (or wraps) a storage fault of ``CAUSES``; the path may be unknown."""
    for item in _chain(exc):
        if not isinstance(item, OSError):
            continue
        code = item.errno
        if code not in CAUSES:
            found = _ERRNO_IN_TEXT.search(str(item))
            code = int(found.group(1)) if found else None
        if code in CAUSES:
            filename = item.filename if isinstance(item.filename, str) else None
            return CAUSES[code], filename
    return None


def fault_message(cause: str, path: str | None, study: Path | None, resumable: bool) -> str:
    """The one line for a storage fault, with what to do and the command that continues."""
    where = path or (str(study) if study is not None else "the study folder")
    fix = ("free space (or move the study folder to a larger disk)" if "space" in cause or "quota" in cause
           else "make the folder writable (or move the study folder)")
    line = f"cannot write {where}: {cause}; nothing written before was lost; {fix}"
    if study is not None and resumable:
        line += f", then continue with `kdtune resume {study}`"
    return line


def writable_folder(folder: Path) -> str | None:
    """Why a study cannot be written under ``folder`` (its nearest folder that exists is asked), or None.

    Asked without writing anything: the file system's read-only flag (``statvfs``: a read-only mount, which
    permission bits do not show, and which stops even root), then the permission to write (``os.access``,
    for everyone but root)."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    if os.statvfs(probe).f_flag & os.ST_RDONLY:
        return f"{probe} is not writable: {CAUSES[errno.EROFS]}"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable: {CAUSES[errno.EACCES]}"
    return None
