"""``kdtune train --from DIR/NAME``: a study's trial re-trained from its folder gives that trial's figures exactly;
``--rank`` ranks COMPLETE trials in the study's direction; bad input is one line on stderr and exit code 2.

The slow tests read the session's one real 3-trial search of the ``smoke`` space (``smoke_study``, in
conftest.py). The fast ones read small studies written here with Optuna's own API into a real journal (no
training, no Ray).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from cli_errors import assert_one_line_error, snapshot
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from study_runs import SMOKE_NAME, FinishedStudy

from search_spaces import load_space
from tune.cli import main
from tune.render import print_outcome
from tune.rerun import study_trial_config
from tune.study import StudyMeta, StudyPaths, load_optuna_study

ROOT = Path(__file__).resolve().parents[2]
SMOKE_SEEDS = [0, 10]  # smoke.yaml's fixed seeds
RERUN_LINE = re.compile(r"^re-run it: (kdtune train --from .+ --trial \d+)$", re.MULTILINE)


def _train(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["train", *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _journal(study_dir: Path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(study_dir / "optuna.journal")))


# ------------------------------------------------------------------------- one real 3-trial smoke study


@dataclass
class ReadStudy:
    root: Path
    stdout: str
    trials: pd.DataFrame  # results/trials.parquet
    seeds: pd.DataFrame  # results/seeds.parquet
    study: optuna.Study


@pytest.fixture(scope="module")
def read_study(smoke_study: FinishedStudy) -> ReadStudy:
    """The session's finished smoke study (conftest.py: ``kdtune search --space smoke --num-samples 3`` in
    its own process), read back: its tables and its Optuna study."""
    root = smoke_study.root
    assert root.name == SMOKE_NAME
    return ReadStudy(root, smoke_study.stdout, pd.read_parquet(root / "results" / "trials.parquet"),
                     pd.read_parquet(root / "results" / "seeds.parquet"), load_optuna_study(StudyPaths(root)))


def _retrain_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    rc, out, err = _train(capsys, *args, "--json", "--threads", "1", "--quiet")
    assert rc == 0, err
    assert len(out.strip().splitlines()) == 1, out  # one JSON object, no "re-training ..." line
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.mark.slow
def test_retrain_reproduces_every_complete_trial_exactly(read_study: ReadStudy,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    complete = read_study.trials[read_study.trials["status"] == "COMPLETE"]
    assert len(complete) >= 1, read_study.trials["status"].tolist()
    for row in complete.itertuples():
        number = int(row.number)
        result = _retrain_json(capsys, "--from", str(read_study.root), "--trial", str(number))
        params = read_study.study.trials[number].params
        assert result["from"] == {"study": str(read_study.root.resolve()), "trial": number, "params": params}
        assert result["seeds"] == SMOKE_SEEDS
        student = result["methods"]["student"]
        assert student["holdout_acc_mean"] == pytest.approx(row.holdout_acc_mean, abs=1e-9), number
        assert student["inner_acc_mean"] == pytest.approx(row.inner_acc_mean, abs=1e-9), number
        seeds = read_study.seeds[read_study.seeds["number"] == number].sort_values("seed")
        assert seeds["seed"].tolist() == SMOKE_SEEDS
        per_seed = sorted(student["per_seed"], key=lambda s: s["seed"])
        assert [s["seed"] for s in per_seed] == SMOKE_SEEDS
        assert [s["holdout_acc"] for s in per_seed] == pytest.approx(seeds["holdout_acc"].tolist(), abs=1e-9)
        assert result["config"]["kd"]["alpha"] == params["kd.alpha"]  # full precision, not a rounded figure


@pytest.mark.slow
def test_search_end_message_names_the_command_that_retrains_its_best(
        read_study: ReadStudy, capsys: pytest.CaptureFixture[str]) -> None:
    best = read_study.study.best_trial
    found = RERUN_LINE.findall(read_study.stdout)
    assert found == [f"kdtune train --from {read_study.root.resolve()} --trial {best.number}"], read_study.stdout
    rc, out, err = _train(capsys, *shlex.split(found[0])[2:], "--threads", "1", "--quiet")
    assert rc == 0, err
    first = out.splitlines()[0]
    assert first.startswith(f"re-training trial {best.number} (COMPLETE, inner acc "), first
    assert str(read_study.root.resolve()) in first and "kd.alpha = " in first and "student.optimizer = " in first
    assert re.search(r"^student\s+\d+\.\d\d ± ", out, re.MULTILINE), out


@pytest.mark.slow
def test_rank_1_is_the_best_trial_and_seeds_can_be_replaced(read_study: ReadStudy,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    best = read_study.study.best_trial
    result = _retrain_json(capsys, "--from", str(read_study.root), "--rank", "1")
    assert result["from"]["trial"] == best.number
    assert result["from"]["params"] == best.params
    result = _retrain_json(capsys, "--from", str(read_study.root), "--seeds", "5,6")
    assert result["from"]["trial"] == best.number  # neither --trial nor --rank: the best
    assert result["seeds"] == [5, 6]
    for name, method in result["methods"].items():
        assert [s["seed"] for s in method["per_seed"]] == [5, 6], name
    assert result["config"]["student"]["epochs"] == 5  # the space's fixed settings still apply


# ------------------------------------------------------------------ hand-made studies (fast: no training)

DISTRIBUTIONS = {"kd.alpha": FloatDistribution(0.0, 1.0), "kd.temperature": FloatDistribution(1.0, 20.0, log=True),
                 "student.optimizer": CategoricalDistribution(["adam", "adamw"])}


def _params(alpha: float) -> dict[str, Any]:
    return {"kd.alpha": alpha, "kd.temperature": 3.0, "student.optimizer": "adamw"}


def _hand_study(root: Path, trials: list[tuple[TrialState, float | None, dict[str, Any]]],
                direction: str = "maximize") -> Path:
    """A study folder holding a smoke-space study.json and a real Optuna journal with ``trials``."""
    paths = StudyPaths(root)
    root.mkdir(parents=True)
    space = load_space("smoke")
    StudyMeta(name=root.name, data="builtin:d0.5", data_source="builtin:d0.5", fingerprint="0" * 64,
              space_name=space.name, space_text=space.source_text, num_samples=len(trials), seed=0, max_t=7,
              grace_period=7, reduction_factor=3, cpus_per_trial=1.0, gpus_per_trial=0.0,
              max_concurrent=0).write(paths)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=root.name, storage=_journal(root), direction=direction)
    for state, value, params in trials:
        dists = {k: v for k, v in DISTRIBUTIONS.items() if k in params}
        study.add_trial(optuna.trial.create_trial(state=state, value=value, params=params, distributions=dists,
                                                  intermediate_values={1: 0.5} if state == TrialState.PRUNED
                                                  else None))
    return root


C, P, F = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL
ALPHA = 0.12345678901234567  # more digits than any report prints


@pytest.fixture
def hand_study(tmp_path: Path) -> Path:
    """Trials 0..4: COMPLETE 0.5, COMPLETE 0.9, COMPLETE 0.9 (a tie), PRUNED, FAIL."""
    return _hand_study(tmp_path / "studies" / "hand", [
        (C, 0.5, _params(0.1)), (C, 0.9, _params(0.2)), (C, 0.9, _params(0.3)), (P, None, _params(ALPHA)),
        (F, None, _params(0.5)),
    ])


def test_rank_follows_the_study_direction_and_ties_go_to_the_lower_number(tmp_path: Path,
                                                                         hand_study: Path) -> None:
    ranked = [study_trial_config(hand_study, rank=k)[2]["trial"] for k in (1, 2, 3)]
    assert ranked == [1, 2, 0]
    assert study_trial_config(hand_study)[2]["trial"] == 1  # neither: rank 1
    low = _hand_study(tmp_path / "studies" / "low", [(C, 0.5, _params(0.1)), (C, 0.2, _params(0.2)),
                                                     (C, 0.2, _params(0.3)), (C, 0.9, _params(0.4))],
                      direction="minimize")
    assert [study_trial_config(low, rank=k)[2]["trial"] for k in (1, 2, 3, 4)] == [1, 2, 0, 3]


def test_a_pruned_trial_gives_its_exact_params_on_the_space_fixed_settings(hand_study: Path) -> None:
    config, data, description = study_trial_config(hand_study, trial=3)
    assert description["trial"] == 3 and description["state"] == "PRUNED" and description["value"] is None
    assert description["params"] == _params(ALPHA)
    assert config.kd.alpha == ALPHA  # bit for bit
    assert config.kd.temperature == 3.0 and config.student.optimizer == "adamw"
    assert config.seeds == tuple(SMOKE_SEEDS) and config.student.epochs == 5 and config.eval_every == 1
    assert config.student.batch_size == 256 and config.teacher.epochs == 5  # smoke.yaml's fixed settings
    assert data == "builtin:d0.5"
    assert study_trial_config(hand_study, trial=3, seeds=[7, 8])[0].seeds == (7, 8)


def test_train_from_imports_optuna_only_and_never_ray(hand_study: Path) -> None:
    """``kdtune train`` never pays for Ray; ``--from`` reads the journal with Optuna alone."""
    code = ("import sys, json; from tune.cli import main; from tune.rerun import study_trial_config; "
            f"study_trial_config({str(hand_study)!r}, trial=3); "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'optuna'})))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["optuna"]
    code = ("import sys, json; from tune.cli import main; "
            "rc = main(['train', '--epochs', '1', '--seeds', '0', '--batch-size', '512', '--quiet', '--json']); "
            "print(json.dumps([rc, sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'optuna'})]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [0, []]


def test_search_end_message_has_the_rerun_line_in_text_only(capsys: pytest.CaptureFixture[str]) -> None:
    outcome = {"study": "/s/studies/x", "trials": {"total": 2, "COMPLETE": 2}, "seconds": 3.0,
               "interrupted": False, "best": {"number": 1, "params": _params(0.25), "inner_acc_mean": 0.9,
                                              "holdout_acc_mean": 0.8, "holdout_acc_std": 0.01}}
    print_outcome(outcome, as_json=False)
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "re-run it: kdtune train --from /s/studies/x --trial 1"
    print_outcome(outcome, as_json=True)
    out = capsys.readouterr().out
    assert "re-run" not in out and json.loads(out) == outcome


# ---------------------------------------------------------------------------------------------- bad input


def _bad_cases(tmp_path: Path, study: Path) -> dict[str, tuple[list[str], list[str]]]:
    (tmp_path / "plain").mkdir()
    (tmp_path / "nojournal").mkdir()
    (tmp_path / "nojournal" / "study.json").write_text((study / "study.json").read_text())
    s = str(study)
    return {
        "missing study": (["--from", str(tmp_path / "nope")], ["no study at", "nope"]),
        "not a study": (["--from", str(tmp_path / "plain")], ["is not a kdtune study", "study.json"]),
        "no journal": (["--from", str(tmp_path / "nojournal")], ["has no optuna.journal"]),
        "--trial and --rank": (["--from", s, "--trial", "1", "--rank", "1"], ["--trial 1 and --rank 1"]),
        "--rank 0": (["--from", s, "--rank", "0"], ["--rank must be >= 1", "but got 0"]),
        "--rank past the COMPLETE trials": (["--from", s, "--rank", "4"],
                                            ["COMPLETE trials", "(3)", "but got 4"]),
        "a trial that does not exist": (["--from", s, "--trial", "9"],
                                        ["has no trial 9", "numbered 0 to 4"]),
        "a FAIL trial": (["--from", s, "--trial", "4"], ["trial 4", "is FAIL", "COMPLETE or PRUNED"]),
        "with --set": (["--from", s, "--set", "kd.alpha=0.1"], ["exactly", "but got --set"]),
        "with --config": (["--from", s, "--config", "exp.yaml"], ["but got --config"]),
        "with --data": (["--from", s, "--data", "builtin:d0.5"], ["but got --data"]),
        "with --batch-size full": (["--from", s, "--batch-size", "full"], ["but got --batch-size"]),
        "with several recipe flags": (["--from", s, "--alpha", "0.1", "--epochs", "3", "--protocol", "seed"],
                                      ["but got --alpha, --epochs, --protocol"]),
        "--trial without --from": (["--trial", "1"], ["--trial", "needs --from"]),
        "--rank without --from": (["--rank", "1"], ["--rank", "needs --from"]),
        "duplicate --seeds": (["--from", s, "--seeds", "1,1"], ["--seeds must name each seed once"]),
    }


BAD_CASES = ["missing study", "not a study", "no journal", "--trial and --rank", "--rank 0",
             "--rank past the COMPLETE trials", "a trial that does not exist", "a FAIL trial", "with --set",
             "with --config", "with --data", "with --batch-size full", "with several recipe flags",
             "--trial without --from", "--rank without --from", "duplicate --seeds"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case: str, tmp_path: Path, hand_study: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    args, fragments = _bad_cases(tmp_path, hand_study)[case]
    before = snapshot(tmp_path)
    rc, out, err = _train(capsys, *args, "--quiet")
    assert_one_line_error("train", rc, err, *fragments, out=out)
    assert snapshot(tmp_path) == before  # no journal created, no lock left, no study touched


def test_a_study_with_no_complete_trial_has_no_best(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = _hand_study(tmp_path / "studies" / "none", [(P, None, _params(0.1)), (F, None, _params(0.2))])
    rc, out, err = _train(capsys, "--from", str(study), "--quiet")
    assert_one_line_error("train", rc, err, "has no COMPLETE trial", "--trial N", out=out)


def test_changed_data_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The hand-made study's fingerprint is not the data's: re-training would not be that trial's."""
    study = _hand_study(tmp_path / "studies" / "moved", [(C, 0.5, _params(0.1))])
    rc, out, err = _train(capsys, "--from", str(study), "--quiet")
    assert_one_line_error("train", rc, err, "builtin:d0.5", "has changed since the study ran", "000000000000",
                          out=out)
