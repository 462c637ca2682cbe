"""The inputs of the golden figures and how each is produced (shared by make_golden.py and the test)."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.study_runs import run_kdtune

ROOT = Path(__file__).resolve().parents[2]

_DIGITS_SUBSETS = {
    "seeds": [0, 10],
    "task": {"teachers": [{"classes": [0, 6, 8, 9]}, {"classes": [1, 4, 7]}, {"classes": [2, 3, 5]}],
             "routing": "label"},
    "teacher": {"model": "cnn", "channels": [8, 16], "width": 2, "batch_norm": True, "epochs": 3,
                "batch_size": 64, "max_lr": 0.01},
    "baseline": {"model": "cnn", "channels": [8, 16], "batch_norm": True, "epochs": 3, "batch_size": 64},
    "student": {"model": "cnn", "channels": [8, 16], "epochs": 3, "batch_size": 64, "optimizer": "sgd",
                "lr": 0.05, "schedule": "multistep", "milestones": [2], "gamma": 0.1},
    "kd": {"method": "hinton", "alpha": 0.7, "temperature": 3.0},
}
_DIGITS_SIMKD = {
    "seeds": [0, 10],
    "teacher": {"model": "resnet", "depth": 8, "channels": [8, 8, 16, 32], "epochs": 2, "batch_size": 128,
                "max_lr": 0.05},
    "baseline": {"model": "resnet", "depth": 8, "channels": [4, 4, 8, 16], "epochs": 2, "batch_size": 128},
    "student": {"model": "resnet", "depth": 8, "channels": [4, 4, 8, 16], "epochs": 2, "batch_size": 128,
                "optimizer": "adamw", "weight_decay": 1e-4},
    "kd": {"method": "simkd", "factor": 2, "placement": "last_two", "ce_weight": 0.1, "use_labels": True},
}

# name -> kdtune train arguments (a dict is written as a --config YAML file first)
TRAIN_CASES: dict[str, list[Any]] = {
    "d05-hinton": ["--data", "builtin:d0.5", "--epochs", "20", "--seeds", "0,10", "--alpha", "0.5",
                   "--temperature", "4", "--optimizer", "adamw"],
    "d05-annealing-split": ["--data", "builtin:d0.25", "--epochs", "12", "--seeds", "0,10,1234",
                            "--kd-method", "annealing", "--set", "kd.anneal_epochs=8", "--set", "kd.tau_max=4",
                            "--set", "inner=split", "--set", "student.schedule=onecycle"],
    "d1-none-seed-protocol": ["--data", "builtin:d1.0", "--epochs", "10", "--seeds", "0", "--kd-method", "none",
                              "--protocol", "seed", "--batch-size", "full"],
    "digits-subsets": ["--data", "builtin:digits", {"config": _DIGITS_SUBSETS}],
    "digits-simkd": ["--data", "builtin:digits", {"config": _DIGITS_SIMKD}],
}

# A small fixed study: trials one at a time so that TPE and ASHA see the same history every run.
STUDY_ARGS = ["--space", "smoke", "--num-samples", "4", "--max-concurrent", "1", "--seed", "0",
              "--tune-baseline", "2", "--num-cpus", "2"]


def kdtune(*args: str) -> str:
    """``kdtune ARGS`` from the checkout in a child process; its stdout (fails on a non-zero exit)."""
    proc = run_kdtune(*args, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"kdtune {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.stdout


def train_json(args: list[Any], tmp: Path) -> dict[str, Any]:
    flat: list[str] = []
    for arg in args:
        if isinstance(arg, dict):
            path = tmp / "config.json"  # JSON is YAML
            path.write_text(json.dumps(arg["config"]))
            flat += ["--config", str(path)]
        else:
            flat.append(arg)
    return json.loads(kdtune("train", *flat, "--json", "--quiet"))


def analyse_json(study: Path) -> dict[str, Any]:
    """``kdtune analyse --json`` of a copy of ``study`` (analyse writes its report into the folder)."""
    tmp = Path(tempfile.mkdtemp(prefix="kdga-", dir="/tmp"))
    try:
        shutil.copytree(study, tmp / "g", symlinks=True)
        return json.loads(kdtune("analyse", str(tmp / "g"), "--json"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def study_tables(study: Path) -> dict[str, Any]:
    """The trials, seeds and reference rows of a study (and of its CE baseline), sorted, as JSON values."""
    sys.path.insert(0, str(ROOT))
    from results.reader import read_table

    out: dict[str, Any] = {}
    for folder, prefix in ((study, ""), (study / "ce-baseline", "ce-baseline/")):
        for table in ("trials", "seeds", "reference"):
            if not (folder / "results" / f"{table}.parquet").exists():
                continue
            frame = read_table(folder, table)
            keys = [k for k in ("number", "seed", "method", "trial_number") if k in frame.columns]
            frame = frame.sort_values(keys).reset_index(drop=True)
            out[prefix + table] = json.loads(frame.to_json(orient="records", double_precision=15, date_format="iso"))
    return out
