"""Values the command line takes as text and checks itself, so that a bad one is one line (KDTuneError,
exit 2) rather than argparse's usage block: the seeds of ``--seeds``."""

from __future__ import annotations

import re

from tune.errors import KDTuneError


def parse_seeds(text: str) -> list[int]:
    """``--seeds``: integers separated by commas and/or whitespace ("0,10,1234", "0 10 1234", "0, 10");
    anything else, or a seed named twice, is refused (KDTuneError: one line, exit 2)."""
    tokens = [t for t in re.split(r"\s*,\s*|\s+", text.strip())] if text.strip() else []
    if not tokens or not all(re.fullmatch(r"[0-9]+", t) for t in tokens):
        raise KDTuneError(f"--seeds takes non-negative integers separated by commas or spaces (e.g. 0,10,1234), "
                          f"but got {text!r}")
    seeds = [int(t) for t in tokens]
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        named = ", ".join(str(s) for s in twice)
        raise KDTuneError(f"--seeds must name each seed once, but {named} appear{'s' if len(twice) == 1 else ''} "
                          f"more than once in {text!r}")
    return seeds
