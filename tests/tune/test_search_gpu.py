"""``kdtune search --gpus-per-trial``: trials that ask for a fraction of a GPU train on it."""

from __future__ import annotations

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

from tests.study_runs import child_env


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_search_trials_with_half_a_gpu_run_on_it(tmp_path: Path) -> None:
    storage = tmp_path / "studies"
    # Ray's Unix socket paths must stay under 108 characters: pytest's tmp_path is too long for TMPDIR.
    short_tmp = tempfile.mkdtemp(prefix="kst-", dir="/tmp")
    env = child_env(TMPDIR=short_tmp)
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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cnn_subset_experiment_runs_on_the_gpu_as_on_the_cpu() -> None:
    """The whole digits-subsets recipe (CNN teachers of class subsets, batched seeds, subset KD) on CUDA, and
    its accuracies close to the CPU's (the kernels differ, so not bit-identical)."""
    import time

    import kdcore
    from kdcore import run_experiment
    from search_spaces import load_space

    config = load_space("digits-subsets").base.with_overrides(
        {"seeds": [0, 1], "teacher.epochs": 5, "baseline.epochs": 5, "student.epochs": 5})
    digits = kdcore.load_data("builtin:digits")
    start = time.perf_counter()
    gpu = run_experiment(digits, config, device="cuda")
    seconds = time.perf_counter() - start
    cpu = run_experiment(digits, config, device="cpu")
    for name, result in gpu.methods.items():
        assert next(result.model.parameters()).is_cuda, name
        assert abs(result.holdout_acc.mean() - cpu.methods[name].holdout_acc.mean()) < 0.03, name
    print(f"digits-subsets experiment (5 epochs, 2 seeds) on {torch.cuda.get_device_name()}: {seconds:.1f} s")
