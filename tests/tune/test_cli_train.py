"""``kdtune train``: one JSON object on stdout, an optimism warning under protocol seed, and every user error
as exit code 2 with one line on stderr and no traceback."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_errors import assert_one_line_error

import kdcore
from tune.cli import main

ROOT = Path(__file__).resolve().parents[2]
METHOD_KEYS = {"holdout_acc_mean", "holdout_acc_std", "inner_acc_mean", "best_epoch_mean", "per_seed"}
FAST = ["--data", "builtin:d0.5", "--epochs", "2", "--seeds", "0", "--batch-size", "512", "--quiet"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    return subprocess.run([sys.executable, "-m", "tune.cli", "train", *args], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["train", *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_train_json_output_shape() -> None:
    proc = _cli("--data", "builtin:d0.5", "--epochs", "3", "--seeds", "0,1", "--batch-size", "256", "--json",
                "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # --quiet: no progress lines
    assert len(proc.stdout.strip().splitlines()) == 1  # ONE JSON object, nothing else on stdout
    result = json.loads(proc.stdout)
    assert set(result["methods"]) == {"baseline", "teacher_0", "teacher_1", "teacher_2", "student"}
    assert result["protocol"] == "honest"
    assert result["seeds"] == [0, 1]
    fingerprint = result["data"]["fingerprint"]
    assert re.fullmatch(r"[0-9a-f]{64}", fingerprint)
    assert fingerprint == kdcore.builtin("d0.5").fingerprint()
    for name, m in result["methods"].items():
        assert METHOD_KEYS <= set(m), name
        assert [row["seed"] for row in m["per_seed"]] == [0, 1]
        accs = [row["holdout_acc"] for row in m["per_seed"]]
        inner = [row["inner_acc"] for row in m["per_seed"]]
        for value in [*accs, *inner, m["holdout_acc_mean"], m["inner_acc_mean"]]:
            assert 0.0 <= value <= 1.0, (name, value)  # fractions, not percentages
        assert m["holdout_acc_mean"] == pytest.approx(float(np.mean(accs)))
        assert m["holdout_acc_std"] == pytest.approx(float(np.std(accs, ddof=1)))
        assert 1 <= m["best_epoch_mean"] <= 3
        assert m["epochs_run"] == 3
    assert result["config"]["student"]["batch_size"] == 256 and result["config"]["kd"]["alpha"] == 0.9


def test_seed_protocol_text_output_warns_about_optimism(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _main(capsys, *FAST, "--protocol", "seed")
    assert rc == 0, err
    assert "protocol seed" in out
    assert "optimistic" in out
    assert "validation acc %" in out  # the column says what it is under this protocol
    for name in ("baseline", "teacher_0", "teacher_1", "teacher_2", "student"):
        assert re.search(rf"^{name}\s+\d+\.\d\d \(1 seed\)", out, re.MULTILINE), name  # one seed: no ±
    rc, out, _ = _main(capsys, *FAST)
    assert rc == 0 and "optimistic" not in out and "holdout acc %" in out


def test_set_and_config_file_reach_the_experiment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "exp.yaml"
    config.write_text("kd:\n  alpha: 0.25\nstudent:\n  hidden: [6]\n")
    rc, out, err = _main(capsys, *FAST, "--json", "--config", str(config), "--set", "kd.temperature=3",
                         "--set", "teacher.lr=0.01")
    assert rc == 0, err
    cfg = json.loads(out)["config"]
    assert cfg["kd"]["alpha"] == 0.25 and cfg["kd"]["temperature"] == 3
    assert cfg["student"]["hidden"] == [6] and cfg["teacher"]["lr"] == 0.01
    assert cfg["baseline"]["epochs"] == 2 and cfg["seeds"] == [0]


# ---------------------------------------------------------------- user errors


def test_missing_data_file_in_a_real_process(tmp_path: Path) -> None:
    proc = _cli("--data", str(tmp_path / "missing.pkl"), "--epochs", "1", "--seeds", "0")
    assert_one_line_error("train", proc.returncode, proc.stderr, "data file not found", "missing.pkl", out=proc.stdout)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_in_a_real_process(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"x_train": _Evil(marker)}, protocol=3))
    proc = _cli("--data", str(path), "--epochs", "1", "--seeds", "0", "--quiet")
    assert_one_line_error("train", proc.returncode, proc.stderr, "refusing to load")
    assert not marker.exists()


def _write(tmp_path: Path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


ERROR_CASES: dict[str, tuple[list[str], list[str]]] = {
    "unknown --set key": (["--set", "student.learning_rate=0.1"],
                          ["unknown setting", "learning_rate", "'lr'"]),
    "unknown --set section": (["--set", "teachers.lr=0.1"], ["unknown setting", "teachers"]),
    "alpha out of range": (["--alpha", "2"], ["alpha", "2"]),
    "negative temperature": (["--temperature", "-1"], ["temperature"]),
    "zero epochs": (["--epochs", "0"], ["epochs must be >= 1"]),
    "duplicate seeds": (["--seeds", "0,0"], ["--seeds must name each seed once", "0 appears"]),
    "duplicate seeds across separators": (["--seeds", "0,10 0"], ["--seeds must name each seed once"]),
    "a seed that is not a number": (["--seeds", "0 x"], ["--seeds takes non-negative integers", "'0 x'"]),
    "seeds with a semicolon": (["--seeds", "0;1"], ["--seeds takes"]),
    "no seeds": (["--seeds", " "], ["--seeds takes"]),
    "weight decay with adam": (["--set", "student.weight_decay=0.1"], ["adamw"]),
    "bad device": (["--device", "tpu"], ["--device"]),
    "unknown builtin": (["--data", "builtin:d0.3"], ["unknown built-in dataset"]),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_user_errors_are_one_line_exit_2(capsys: pytest.CaptureFixture[str], case: str) -> None:
    args, fragments = ERROR_CASES[case]
    rc, out, err = _main(capsys, "--epochs", "1", "--seeds", "0", "--quiet", *args)
    assert_one_line_error("train", rc, err, *fragments, out=out)


def test_malicious_pickle_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned-in-process"
    path = _write(tmp_path, "evil.pkl", pickle.dumps(_Evil(marker), protocol=5))
    rc, _, err = _main(capsys, "--data", path, "--epochs", "1", "--seeds", "0", "--quiet")
    assert_one_line_error("train", rc, err, "refusing to load", "evil.pkl")
    assert not marker.exists()


def test_bad_data_file_contents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "list.pkl", pickle.dumps([np.zeros(3)], protocol=3))
    rc, _, err = _main(capsys, "--data", path, "--epochs", "1", "--seeds", "0", "--quiet")
    assert_one_line_error("train", rc, err, "expected a dict of numpy arrays")
    path = _write(tmp_path, "garbage.pkl", b"\x00\xffnot a pickle")
    rc, _, err = _main(capsys, "--data", path, "--epochs", "1", "--seeds", "0", "--quiet")
    assert_one_line_error("train", rc, err, "not a readable dataset pickle")


@pytest.mark.parametrize("text", ["0 10 1234", "0,10, 1234", " 0 ,10\t1234 "])
def test_seeds_split_on_commas_and_whitespace(text: str) -> None:
    """ "0 10 1234" once trained the single seed 101234 (the spaces were dropped, the digits joined)."""
    from tune.arguments import parse_seeds

    assert parse_seeds(text) == [0, 10, 1234]


def test_seeds_with_spaces_train_those_seeds(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _main(capsys, *[a for a in FAST if a != "0" and a != "--seeds"], "--seeds", "0 10", "--json")
    assert rc == 0, err
    assert json.loads(out)["seeds"] == [0, 10]


CONFIG_CASES: dict[str, tuple[str, list[str]]] = {
    "unknown key": ("seeds: [0]\nstudent:\n  lr: 0.01\n  dampening: 0.9\n",
                    ["unknown key", "dampening", "'lr'"]),
    "unknown top-level key": ("seed: [0]\n", ["unknown key", "seed", "'seeds'"]),
    "not YAML": ("student: {lr: 0.01\nkd: [\n", ["not valid YAML"]),
    "tabs are not YAML": ("student:\n\tlr: 0.1\n", ["not valid YAML"]),
    "a list, not a mapping": ("- 1\n- 2\n", ["expected a mapping"]),
    "a YAML tag that would build an object": ("!!python/object/apply:os.system ['true']\n",
                                               ["not valid YAML"]),
    "wrong type": ("student:\n  epochs: many\n", ["epochs must be an integer"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    text, fragments = CONFIG_CASES[case]
    path = _write(tmp_path, "exp.yaml", text)
    rc, out, err = _main(capsys, *FAST, "--config", path)
    assert_one_line_error("train", rc, err, *fragments, out=out)


def test_config_file_not_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _main(capsys, *FAST, "--config", str(tmp_path / "nope.yaml"))
    assert_one_line_error("train", rc, err, "config file not found")


def test_binary_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "exp.yaml", b"\x80\x81\xfe\xff binary")
    rc, _, err = _main(capsys, *FAST, "--config", path)
    assert_one_line_error("train", rc, err)


def test_config_with_non_string_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "exp.yaml", "1: a\nfoo: b\n")
    rc, _, err = _main(capsys, *FAST, "--config", path)
    assert_one_line_error("train", rc, err, "unknown key")


def test_zero_threads(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _main(capsys, *FAST, "--threads", "0")
    assert_one_line_error("train", rc, err, "threads")


def test_exponent_without_dot_is_a_number(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _main(capsys, *FAST, "--json", "--set", "student.lr=1e-3")
    assert rc == 0, err
    assert json.loads(out)["config"]["student"]["lr"] == 1e-3


def test_version_exits_0_and_names_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    from kdcore import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"kdtune {__version__}"


@pytest.mark.parametrize("argv", [["search", "--name", "x", "--num-sample", "5"], ["train", "--alph", "0.3"]])
def test_a_prefix_of_a_flag_is_not_taken_for_the_flag(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"unrecognized arguments: {argv[-2]}" in err
