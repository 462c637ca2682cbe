"""What ``kdtune search`` and ``kdtune resume`` say of a study: the status line's best is the study's (earlier
runs included), the summary counts the trials against the budget, and every run ends with a fresh report."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import optuna
import pytest

from tune.outcome import best_value, trial_counts
from tune.plan import RunOptions
from tune.progress import study_progress
from tune.render import outcome_line


def _finished(trial_id: str, acc: float) -> Any:
    return SimpleNamespace(trial_id=trial_id, status="TERMINATED", config={},
                           last_result={"is_final": True, "inner_acc": acc, "trial_seconds": 1.0})


def test_the_resumed_status_line_shows_the_studys_best_not_this_runs() -> None:
    """A resume whose trials are worse than an earlier run's: the line keeps the earlier best (it showed
    this run's best, 80.00 %, before)."""
    study = optuna.create_study(direction="maximize")
    for value in (0.85, 0.9):
        trial = study.ask()
        trial.set_user_attr("inner_acc", value)
        study.tell(trial, value)
    stream = io.StringIO()
    callback = study_progress(2, RunOptions(stream=stream), [], lambda _: None, "inner_acc", best_value(study))
    trial = _finished("a", 0.8)
    callback.on_trial_complete(0, [trial], trial)
    assert "best inner acc 90.00 %" in stream.getvalue().splitlines()[-1], stream.getvalue()


def test_a_new_studys_status_line_starts_with_no_best() -> None:
    assert best_value(optuna.create_study()) is None
    stream = io.StringIO()
    callback = study_progress(2, RunOptions(stream=stream), [], lambda _: None, "inner_acc")
    trial = _finished("a", 0.8)
    callback.on_trial_complete(0, [trial], trial)
    assert "best inner acc 80.00 %" in stream.getvalue()


def test_the_interrupted_summary_counts_against_the_budget() -> None:
    """Ctrl-C during the first trials of a 4-trial study: "0 trials (3 interrupted, 3 waiting)" before."""
    counts = {"total": 0, "INTERRUPTED": 3, "WAITING": 3}
    line = outcome_line({"study": "S", "trials": counts, "budget": 4, "interrupted": True, "seconds": 12.2})
    assert line == "study S: 0 of 4 trials done, 3 interrupted and will rerun, in 12 s"
    counts = {"total": 3, "COMPLETE": 2, "PRUNED": 1, "INTERRUPTED": 1, "WAITING": 1}
    line = outcome_line({"study": "S", "trials": counts, "budget": 4, "interrupted": True, "seconds": 3})
    assert line == "study S: 3 of 4 trials done (2 complete, 1 pruned), 1 interrupted and will rerun, in 3 s"


def test_a_finished_summary_leaves_out_trials_that_reran() -> None:
    counts = {"total": 4, "COMPLETE": 4, "INTERRUPTED": 1}
    line = outcome_line({"study": "S", "trials": counts, "budget": 4, "interrupted": False, "seconds": 30})
    assert line == "study S: 4 of 4 trials done (4 complete), in 30 s"


def test_trial_counts_keep_interrupted_trials_off_the_budget() -> None:
    done = SimpleNamespace(state=optuna.trial.TrialState.COMPLETE, user_attrs={})
    cut = SimpleNamespace(state=optuna.trial.TrialState.FAIL, user_attrs={"interrupted": True})
    assert trial_counts([done, cut]) == {"total": 1, "COMPLETE": 1, "INTERRUPTED": 1}


def test_the_report_is_written_after_a_run_and_a_failure_to_analyse_is_one_warning(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tune import commands

    calls: list[Any] = []
    monkeypatch.setattr("results.report.analyse", lambda study, **kw: calls.append(study) or {})
    commands.refresh_report(tmp_path)
    assert calls == [tmp_path]

    def broken(study: Any, **kw: Any) -> Any:
        raise ValueError("no tables\nsecond line")

    monkeypatch.setattr("results.report.analyse", broken)
    commands.refresh_report(tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kdtune: warning: report.md was not rewritten"), err
    assert f"kdtune analyse {tmp_path}" in err[0]
