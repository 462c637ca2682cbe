"""Teachers loaded from state-dict checkpoints instead of trained."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from kdcore import networks
from kdcore.checkpoint import load_teacher
from kdcore.config import ExperimentConfig, FitConfig, TaskConfig
from kdcore.dataset import ClassificationData
from kdcore.errors import ConfigError
from kdcore.experiment import run_experiment
from kdcore.task import resolve

SHAPE = (1, 8, 8)
CNN = FitConfig(model="cnn", channels=(4, 8), batch_norm=True)


def _saved_teacher(path: Path, n_out: int, seed: int = 7) -> torch.nn.Module:
    net = networks.build(CNN.model_spec, SHAPE, n_out, seed)
    net.train()
    net(torch.randn(32, *SHAPE, generator=torch.Generator().manual_seed(1)))  # non-trivial running stats
    net.eval()
    torch.save(net.state_dict(), path)
    return net


def _teacher(path: Path, classes: list[int], fit: FitConfig = CNN):
    config = TaskConfig(teachers=[{"classes": classes, "checkpoint": str(path)},
                                  {"classes": [c for c in range(10) if c not in classes]}], routing="label")
    return resolve(config, fit, 10, 1).teachers[0]


def test_a_loaded_teacher_gives_the_logits_of_the_saved_one(tmp_path: Path) -> None:
    path = tmp_path / "t.pt"
    net = _saved_teacher(path, 3)
    model = load_teacher(_teacher(path, [2, 5, 9]), SHAPE, (0, 10, 1234))
    model.eval()
    x = torch.randn(20, *SHAPE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = net(x)
        got = model(x)  # (S, N, 3): every seed holds the same network
    assert got.shape == (3, 20, 3)
    for s in range(3):
        torch.testing.assert_close(got[s], expected, rtol=1e-5, atol=1e-5)


def test_the_common_state_dict_wrapper_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "wrapped.pt"
    net = _saved_teacher(tmp_path / "plain.pt", 3)
    torch.save({"state_dict": net.state_dict(), "epoch": 240}, path)
    load_teacher(_teacher(path, [2, 5, 9]), SHAPE, (0,))


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: _saved_teacher(p, 4), "does not fit its architecture 'cnn' with 3 outputs"),
    (lambda p: p.write_bytes(b"not a checkpoint"), "is not a state-dict file"),
    (lambda p: p.write_bytes(pickle.dumps(ConfigError("x"))), "is not a state-dict file"),
    (lambda p: torch.save([1, 2, 3], p), "must hold a state dict"),
    (lambda p: None, "not found"),
])
def test_a_bad_checkpoint_is_one_line(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "t.pt"
    make(path)
    with pytest.raises(ConfigError, match=message) as info:
        load_teacher(_teacher(path, [2, 5, 9]), SHAPE, (0,))
    assert "\n" not in str(info.value) and "teacher_0 (classes [2, 5, 9])" in str(info.value)


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.pt"
    _saved_teacher(path, 3)
    wide = FitConfig(model="cnn", channels=(4, 8), width=2, batch_norm=True)
    with pytest.raises(ConfigError, match="does not fit its architecture"):
        load_teacher(_teacher(path, [2, 5, 9], wide), SHAPE, (0,))


def _images(n_per_class: int, seed: int) -> ClassificationData:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(10), n_per_class)
    x = rng.normal(size=(y.size, *SHAPE)).astype(np.float32) + y[:, None, None, None] * 0.3
    yv = np.repeat(np.arange(10), 3)
    xv = rng.normal(size=(yv.size, *SHAPE)).astype(np.float32) + yv[:, None, None, None] * 0.3
    z, zv = np.zeros_like(y), np.zeros_like(yv)
    return ClassificationData(x, y, z, xv, yv, zv, source="images")


def test_an_experiment_distils_from_a_loaded_teacher(tmp_path: Path) -> None:
    path = tmp_path / "t.pt"
    net = _saved_teacher(path, 3)
    fit = {"model": "cnn", "channels": [4, 8], "batch_norm": True, "epochs": 2}
    config = ExperimentConfig.from_dict({
        "seeds": [0, 1], "teacher": fit, "student": fit, "baseline": fit,
        "task": {"teachers": [{"classes": [2, 5, 9], "checkpoint": str(path)},
                              {"classes": [0, 1, 3, 4, 6, 7, 8]}], "routing": "label"}})
    result = run_experiment(_images(10, 0), config)
    loaded = result.methods["teacher_0"]
    assert loaded.epochs_run == 0 and loaded.classes == (2, 5, 9)
    assert loaded.loaded_from == str(path) and result.methods["teacher_1"].loaded_from is None  # marked as loaded
    assert loaded.summary()["loaded_from"] == str(path) and "loaded_from" not in result.methods["teacher_1"].summary()
    for seed in (0, 1):  # every seed's student distilled from the saved network, unchanged by training
        for name, state in net.state_dict().items():
            torch.testing.assert_close(loaded.model.seed_state(seed)[name], state)
    assert result.methods["teacher_1"].epochs_run == 2 and result.methods["student"].epochs_run == 2
