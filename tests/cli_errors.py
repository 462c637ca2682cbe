"""The one harness for the CLI's error contract: bad input ends with exit code 2, ONE line
``kdtune <command>: error: ...`` on stderr (no traceback), nothing on stdout, and nothing written.

Every CLI test of bad input checks it through ``assert_one_line_error`` (in process, through ``tune.cli.main``
and capsys, or of a real process) and, where the input must change nothing, ``snapshot`` / ``changes``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

EXIT_USAGE = 2  # tune.cli.EXIT_USAGE


def assert_one_line_error(command: str, rc: int, err: str, *fragments: str, out: str | None = None) -> None:
    """``err`` is one line that starts ``kdtune <command>: error: `` and holds every fragment, with no
    traceback; ``rc`` is 2; ``out`` (stdout, when given) is empty."""
    assert rc == EXIT_USAGE, (rc, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"kdtune {command}: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    if out is not None:
        assert out == "", out


Snapshot = dict[str, tuple[int, int, str | None]]


def snapshot(root: Path) -> Snapshot:
    """Every path under ``root``: size, modification time and (for a file) the digest of its bytes."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns,
                                       hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def changes(before: Snapshot, after: Snapshot) -> dict[str, str]:
    """What differs between two snapshots, path by path: added, removed or changed (empty: nothing)."""
    keys = set(before) | set(after)
    return {k: ("added" if k not in before else "removed" if k not in after else "changed")
            for k in sorted(keys) if before.get(k) != after.get(k)}
