"""One real ``kdtune search`` in its own process, for the slow tests that need a finished study; and the
finished smoke study the session shares (``tests/conftest.py``: ``smoke_study``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The calling process's variables a child kdtune must not inherit: pytest's, Ray's, Tune's, torch's compiler's.
FOREIGN = ("PYTEST", "RAY_", "TUNE_", "TORCHINDUCTOR_")


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child ``kdtune`` (or ``ray``): this one without ``FOREIGN`` variables, Ray's
    usage reporting off, no bytecode written into the checkout, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    env.update(RAY_USAGE_STATS_ENABLED="0", PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def run_kdtune(*args: str, timeout: float = 600, **extra: str) -> subprocess.CompletedProcess[str]:
    """``kdtune ARGS`` from the checkout in a child process (``child_env(**extra)``), its output captured."""
    return subprocess.run([sys.executable, "-m", "tune.cli", *args], cwd=ROOT, env=child_env(**extra),
                          capture_output=True, text=True, timeout=timeout, check=False)


def run_search(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``kdtune search ARGS --quiet`` from the checkout, with a TMPDIR short enough for Ray's unix sockets
    (pytest's tmp_path is not) and no Ray or pytest variables of the calling process; fails the test if the
    search does not exit 0."""
    tmp = Path(tempfile.mkdtemp(prefix="kst-", dir="/tmp"))
    try:
        proc = run_kdtune("search", *args, "--quiet", timeout=timeout, TMPDIR=str(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if proc.returncode != 0:
        pytest.fail(f"kdtune search exited {proc.returncode}; stderr tail:\n{proc.stderr[-3000:]}")
    return proc


# The study the session shares: the smoke space, 3 trials (sampler seed 0) and a 2-trial tuned baseline.
SMOKE_NAME = "smoke3"
SMOKE_ARGS = ("--space", "smoke", "--name", SMOKE_NAME, "--num-samples", "3", "--seed", "0", "--tune-baseline", "2")


@dataclass(frozen=True)
class FinishedStudy:
    """A finished study folder (``root``: ``DIR/NAME``) and what its ``kdtune search`` printed."""

    root: Path
    stdout: str


def finished_smoke_study(storage: Path) -> FinishedStudy:
    """``kdtune search SMOKE_ARGS --storage storage``: the mixed baseline, teachers, 3 trials, the ablation of
    the best and the CE-only tuned baseline in ``storage/smoke3/ce-baseline``."""
    proc = run_search(*SMOKE_ARGS, "--storage", str(storage))
    return FinishedStudy(storage / SMOKE_NAME, proc.stdout)
