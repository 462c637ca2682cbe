"""bench/reproduce_cifar100.py runs the published recipe end to end: on a tiny CIFAR-100-format folder written
here, one epoch, one seed, on the CPU, with a teacher file of kdcore's ResNet-32x4 saved as the toolboxes save
it, and without one (the teacher is then trained first). Its table sets our figures beside the published
ones and its JSON holds them; bad input is one line and exit code 2."""

from __future__ import annotations

import importlib.util
import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kdcore import FitConfig, networks

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "reproduce_cifar100.py"
N_CLASSES = 4  # few classes and images: a full ResNet-32x4 is what costs on a CPU


def _folder(root: Path) -> Path:
    """``train`` (3 images per class) and ``test`` (1 per class) pickles as in cifar-100-python/."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, per_class in (("train", 3), ("test", 1)):
        labels = [c for c in range(N_CLASSES) for _ in range(per_class)]
        batch = {b"data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8), b"fine_labels": labels,
                 b"coarse_labels": [0] * len(labels)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return folder


def _teacher_file(root: Path) -> Path:
    """kdcore's ResNet-32x4, saved as RepDistiller's zoo saves it: {"epoch", "model": state_dict}."""
    spec = FitConfig(model="resnet", depth=32, channels=(8, 16, 32, 64), width=4).model_spec
    net = networks.build(spec, (3, 32, 32), N_CLASSES, seed=0)
    path = root / "resnet32x4_vanilla" / "ckpt_epoch_240.pth"
    path.parent.mkdir()
    torch.save({"epoch": 240, "model": net.state_dict()}, path)
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, check=False)


def test_the_recipe_runs_one_epoch_from_a_teacher_file_and_prints_ours_beside_the_published(tmp_path: Path) -> None:
    folder, teacher = _folder(tmp_path), _teacher_file(tmp_path)
    out = tmp_path / "figures.json"
    proc = _run("--data", str(folder), "--teacher", str(teacher), "--epochs", "1", "--seeds", "0",
                "--device", "cpu", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    methods = figures["methods"]
    assert set(methods) == {"teacher", "vanilla", "kd", "simkd"}
    assert methods["teacher"]["loaded_from"] == str(teacher.resolve()) and methods["teacher"]["epochs_run"] == 0
    for name in ("vanilla", "kd", "simkd"):
        assert methods[name]["epochs_run"] == 1 and 0 <= methods[name]["final_mean"] <= 100
        assert methods[name]["best_mean"] >= methods[name]["final_mean"]
    recipe = figures["recipe"]
    assert recipe["protocol"] == "seed" and recipe["seeds"] == [0]
    student = recipe["student"]
    assert (student["optimizer"], student["lr"], student["momentum"], student["weight_decay"],
            student["batch_size"], student["augment"]) == ("sgd", 0.05, 0.9, 5e-4, 64, "crop_flip")
    assert (recipe["teacher"]["depth"], student["depth"], student["width"]) == (32, 8, 4)
    assert (figures["kd"]["alpha"], figures["kd"]["temperature"], figures["simkd"]["factor"]) == (0.9, 4.0, 2)
    assert figures["data"]["source"].endswith(":normalise=standard") and figures["data"]["n_classes"] == N_CLASSES
    text = proc.stdout
    assert f"teacher loaded from {teacher.resolve()}: test accuracy" in text
    assert "note: not the full CIFAR-100" in text
    for label, published in (("vanilla ResNet-8x4", "72.50 / 73.09"), ("KD (T 4, 0.1 CE + 0.9 KD)", "73.33 / 74.42"),
                             ("SimKD (f 2)", "- / 78.08"), ("teacher ResNet-32x4", "79.42 / 79.42")):
        row = next(line for line in text.splitlines() if line.startswith(label))
        assert row.endswith(published), row


@pytest.mark.slow  # a second run of the recipe, ~25 s on two busy cores: the teacher-file run above is the fast one
def test_without_a_teacher_file_the_teacher_is_trained_first_and_said_so(tmp_path: Path) -> None:
    proc = _run("--data", str(_folder(tmp_path)), "--epochs", "1", "--seeds", "0", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no --teacher: the teacher (ResNet-32x4) is trained first" in proc.stdout
    assert next(line for line in proc.stdout.splitlines() if line.startswith("teacher ResNet-32x4"))


def _script() -> Any:
    """bench/reproduce_cifar100.py as a module (bench/ is no package)."""
    spec = importlib.util.spec_from_file_location("reproduce_cifar100", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_schedule_s_milestones_scale_with_the_epochs() -> None:
    milestones = _script().milestones
    assert milestones(240) == [150, 180, 210] and milestones(24) == [15, 18, 21]
    assert milestones(2) == [1, 2] and milestones(1) == [1]


@pytest.mark.parametrize(("args", "fragment"), [
    (["--teacher", "/nonexistent/t.pth"], "--teacher /nonexistent/t.pth: no such file"),
    (["--epochs", "0"], "--epochs and --eval-every must be >= 1"),
    (["--seeds", "0,ten"], "--seeds takes integers separated by commas, but got '0,ten'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                          fragment: str) -> None:
    rc = _script().main(["--data", str(_folder(tmp_path)), *args])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == ""
    assert captured.err.strip().splitlines() == [captured.err.strip()] and fragment in captured.err, captured.err


def test_data_that_is_no_cifar_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc = _script().main(["--data", "builtin:digits", "--epochs", "1"])
    captured = capsys.readouterr()
    assert rc == 2 and "the recipe is for CIFAR images (3, 32, 32), but the data's features have shape (1, 8, 8)" \
        in captured.err
