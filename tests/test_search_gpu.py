"""``kdtune search --gpus-per-trial``: trials that ask for a fraction of a GPU train on it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_search_trials_with_half_a_gpu_run_on_it(tmp_path: Path) -> None:
    storage = tmp_path / "studies"
    # Ray's Unix socket paths must stay under 108 characters: pytest's tmp_path is too long for TMPDIR.
    short_tmp = tempfile.mkdtemp(prefix="kst-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "RAY_", "TUNE_"))}
    env["TMPDIR"] = short_tmp
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tune.cli", "search", "--space", "smoke", "--name", "gpu2",
             "--storage", str(storage), "--num-samples", "2", "--gpus-per-trial", "0.5", "--quiet", "--json"],
            check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(short_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal = JournalFileBackend(str(storage / "gpu2" / "optuna.journal"))
    study = optuna.load_study(study_name="gpu2", storage=JournalStorage(journal))
    assert len(study.trials) == 2
    devices = [t.user_attrs.get("device") for t in study.trials]
    assert all(d not in (None, "cpu") for d in devices), devices  # torch.cuda.get_device_name() of each
