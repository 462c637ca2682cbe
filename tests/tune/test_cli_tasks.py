"""``kdtune train`` on other tasks: a user's NPZ, the digits with class-subset teachers, bad layouts and
checkpoints refused with one line before anything trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_errors import assert_one_line_error

from kdcore import FitConfig, networks
from tune.cli import main


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["train", *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _npz(path: Path, **extra: np.ndarray) -> Path:
    """5 features, 4 classes, no groups: class c sits around c in every feature."""
    rng = np.random.default_rng(0)
    y, yv = np.repeat(np.arange(4), 40), np.repeat(np.arange(4), 10)
    x = rng.normal(size=(160, 5)) * 0.3 + y[:, None]
    xv = rng.normal(size=(40, 5)) * 0.3 + yv[:, None]
    np.savez(path, x_train=x, y_train=y, x_valid=xv, y_valid=yv, **extra)
    return path


def test_train_on_a_users_npz_without_groups(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _npz(tmp_path / "my.npz")
    rc, out, err = _run(capsys, "--data", str(path), "--epochs", "100", "--seeds", "0,1", "--json", "--quiet")
    assert rc == 0, err
    result = json.loads(out)
    assert set(result["methods"]) == {"baseline", "teacher_0", "student"}  # one teacher, on all the data
    assert result["task"]["n_classes"] == 4 and result["task"]["n_groups"] == 1
    assert result["methods"]["teacher_0"]["classes"] == [0, 1, 2, 3]
    assert result["methods"]["student"]["holdout_acc_mean"] > 0.9  # well-separated classes
    assert len(result["methods"]["student"]["per_seed"][0]["holdout_class_acc"]) == 4


def test_an_npz_with_an_object_array_is_refused_before_anything_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.array([{"a": 1}] * 4, dtype=object), y_train=np.zeros(4, dtype=np.int64),
             x_valid=np.zeros((2, 1)), y_valid=np.zeros(2, dtype=np.int64))
    rc, out, err = _run(capsys, "--data", str(path), "--epochs", "1", "--seeds", "0")
    assert_one_line_error("train", rc, err, "object array")
    assert out == ""


def test_digits_with_class_subset_teachers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "subsets.yaml"
    config.write_text(
        "seeds: [0, 1]\n"
        "task: {routing: label, teachers: [{classes: [0, 6, 8, 9]}, {classes: [1, 4, 7]}, {classes: [2, 3, 5]}]}\n"
        "teacher: {model: cnn, channels: [8, 16], epochs: 3, batch_size: 64}\n"
        "baseline: {model: cnn, channels: [8, 16], epochs: 3, batch_size: 64}\n"
        "student: {model: cnn, channels: [8, 16], epochs: 3, batch_size: 64}\n")
    rc, out, err = _run(capsys, "--data", "builtin:digits", "--config", str(config), "--json", "--quiet")
    assert rc == 0, err
    result = json.loads(out)
    assert [result["methods"][f"teacher_{k}"]["classes"] for k in range(3)] == [[0, 6, 8, 9], [1, 4, 7], [2, 3, 5]]
    assert result["task"]["routing"] == "label" and result["task"]["shared_classes"] == []
    assert result["methods"]["student"]["params"] == result["methods"]["baseline"]["params"] > 0


@pytest.mark.parametrize(("task", "fragment"), [
    ("{routing: label, teachers: [{classes: [0, 1, 2]}, {classes: [3, 4, 5, 6, 7, 8]}]}", "class(es) [9] have no teacher"),
    ("{routing: label, teachers: [{classes: [0, 1, 1]}]}", "twice"),
    ("{routing: label, teachers: [{classes: [0, 1, 2, 3, 4]}, {classes: [5, 6, 7, 8, 9, 12]}]}",
     "names class(es) [12], but the data has classes 0..9"),
])
def test_a_bad_layout_is_refused_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], task: str,
                                               fragment: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(f"task: {task}\n")
    rc, out, err = _run(capsys, "--data", "builtin:digits", "--config", str(config), "--epochs", "1")
    assert_one_line_error("train", rc, err, fragment)
    assert out == ""


def test_a_checkpoint_that_does_not_fit_is_refused_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "teacher.pt"
    torch.save(networks.build(FitConfig(model="cnn", channels=(8, 16)).model_spec, (1, 8, 8), 4, 0).state_dict(), ckpt)
    config = tmp_path / "ckpt.yaml"
    config.write_text(
        "teacher: {model: cnn, channels: [4, 8]}\n"  # not the saved network's widths
        f"task: {{routing: label, teachers: [{{classes: [0, 1, 2, 3], checkpoint: {ckpt}}}, "
        "{classes: [4, 5, 6, 7, 8, 9]}]}\n")
    rc, out, err = _run(capsys, "--data", "builtin:digits", "--config", str(config), "--epochs", "1")
    assert_one_line_error("train", rc, err, "teacher_0", "does not fit its architecture 'cnn'")
    assert out == ""


def test_a_space_that_samples_simkd_for_several_teachers_is_refused_before_ray(tmp_path: Path) -> None:
    """The plan checks every kd.method a space may sample against the task, before Ray or torch start."""
    from kdcore import ConfigError
    from tune.plan import SearchSettings, plan_study

    space = tmp_path / "bad.yaml"
    root = Path(__file__).resolve().parents[2]
    space.write_text((root / "search_spaces/digits-subsets.yaml").read_text().replace(
        "knobs:\n", "knobs:\n  kd.method: {type: categorical, choices: [hinton, simkd]}\n"))
    with pytest.raises(ConfigError, match="kd.method 'simkd' distils one teacher that knows every class"):
        plan_study(SearchSettings(data="builtin:digits", space=str(space), name="x", storage=tmp_path, num_samples=1))


def _loaded_teacher_config(tmp_path: Path) -> tuple[Path, Path]:
    """A config whose teacher 0 (digits 0..3) is a file of a CNN of the teacher's widths, never trained."""
    ckpt = tmp_path / "resnet32x4_cifar100.pth"  # a name the file does not live up to: an untrained CNN
    torch.save(networks.build(FitConfig(model="cnn", channels=(4, 8)).model_spec, (1, 8, 8), 4, 0).state_dict(), ckpt)
    config = tmp_path / "ckpt.yaml"
    config.write_text(
        "teacher: {model: cnn, channels: [4, 8]}\n"
        f"task: {{routing: label, teachers: [{{classes: [0, 1, 2, 3], checkpoint: {ckpt}}}, "
        "{classes: [4, 5, 6, 7, 8, 9]}]}\n")
    return ckpt, config


def test_a_loaded_teacher_shows_its_file_beside_its_accuracy(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, config = _loaded_teacher_config(tmp_path)
    args = ("--data", "builtin:digits", "--config", str(config), "--epochs", "1", "--seeds", "0,1", "--quiet")
    rc, out, err = _run(capsys, *args, "--json")
    assert rc == 0, err
    methods = json.loads(out)["methods"]
    loaded = methods["teacher_0"]
    assert loaded["loaded_from"] == str(ckpt) and loaded["epochs_run"] == 0
    assert "loaded_from" not in methods["teacher_1"] and "loaded_from" not in methods["student"]
    rc, out, err = _run(capsys, *args)
    assert rc == 0, err
    line = next(x for x in out.splitlines() if x.startswith("teacher_0 was loaded"))
    accuracy = f"{100 * loaded['holdout_acc_mean']:.2f}"  # the same network, so the same figure as --json
    assert line.startswith(f"teacher_0 was loaded from {ckpt}, not trained here: holdout {accuracy} ")
    assert line.endswith("on its own 4 classes, chance 25.00 %")
    assert not any(x.startswith("teacher_1 was loaded") for x in out.splitlines())
