"""What every CLI test checks of bad input: exit code 2 and ONE line ``kdtune <command>: error: ...`` on stderr."""

from __future__ import annotations


def assert_one_line_error(command: str, rc: int, err: str, *fragments: str) -> None:
    """``err`` is one line that starts ``kdtune <command>: error:`` and holds every fragment; ``rc`` is 2."""
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"kdtune {command}: error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
