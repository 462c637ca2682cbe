"""ASHA judges every KD method at the same point of its own schedule: its rung and ``max_t`` count the
evaluations of the phase the objective measures (annealing KD's phase 2), not those of phase 1 too.

Fast: the trainable's reporter and kdtune's scheduler are driven by hand, no Ray cluster.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from kdcore import EpochReport, ExperimentConfig


def _evaluation(epoch: int, acc: float) -> EpochReport:
    values = np.full(2, acc)
    return EpochReport(method="student", epoch=epoch, inner_acc=values, inner_loss=1 - values,
                       holdout_acc=values, holdout_loss=1 - values)


def _annealing(anneal_epochs: int, epochs: int = 81) -> ExperimentConfig:
    return ExperimentConfig().with_overrides({"kd.method": "annealing", "kd.anneal_epochs": anneal_epochs,
                                              "kd.tau_max": 5, "student.epochs": epochs, "eval_every": 1})


def test_the_measured_phase_starts_after_annealings_phase_1_and_at_once_for_one_phase_methods() -> None:
    from kdcore import evaluations_before_measured_phase as measured_phase_start

    config = _annealing(79)
    assert measured_phase_start(config.kd, config.student.epochs, 1) == 79
    assert measured_phase_start(config.kd, config.student.epochs, 10) == 8  # evaluations at 10, ..., 70, 79
    hinton = ExperimentConfig()
    assert measured_phase_start(hinton.kd, hinton.student.epochs, 1) == 0


def test_an_older_studys_record_keeps_counting_every_evaluation() -> None:
    from tune.trainable import asha_offset

    config = _annealing(79)
    assert asha_offset(SimpleNamespace(asha_counts=None), config) == 0
    assert asha_offset(SimpleNamespace(asha_counts="evaluations of the student's last phase"), config) == 79


def _run(reporter: Any, curve: list[float]) -> None:
    for i, acc in enumerate(curve, start=1):
        reporter.evaluation(_evaluation(i, acc))


def test_a_two_phase_trials_rung_decision_comes_at_its_phase_2_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Hinton trial and an annealing trial with 79 phase-1 evaluations, rung at 54: the annealing trial is
    judged after 54 evaluations of its phase 2 (its evaluation 133), and its high phase-1 values count for
    nothing; before, it was judged at its evaluation 54, in phase 1."""
    from tune import trainable
    from tune.scheduler import RungASHA
    from tune.searcher import ASHA_KEY, EVAL_KEY, SCHEDULER_KEY

    monkeypatch.setattr(trainable, "REPORT_EVERY_S", 1e9)  # reports at the rung and max_t only
    grace, max_t = 54, 83
    rungs = frozenset(trainable.asha_rungs(grace, 2, max_t))
    scheduler = RungASHA(time_attr=ASHA_KEY, metric=SCHEDULER_KEY, mode="max", max_t=max_t, grace_period=grace,
                         reduction_factor=2)
    decisions: dict[str, list[tuple[int, int, str]]] = {"hinton": [], "annealing": []}

    def reporter(name: str, before: int) -> Any:
        trial = SimpleNamespace(trial_id=name)
        scheduler.on_trial_add(None, trial)  # type: ignore[arg-type]

        def report(result: dict[str, Any]) -> None:
            action = scheduler.on_trial_result(None, trial, result)  # type: ignore[arg-type]
            decisions[name].append((result[EVAL_KEY], result[ASHA_KEY], action))

        return trainable._Reporter(report, rungs, max_t, {}, (0, 1), before=before)

    _run(reporter("hinton", 0), [0.9] * 60)
    # phase 1 (79 evaluations) regresses on the teacher and scores well; phase 2 restarts lower
    _run(reporter("annealing", trainable.asha_offset(SimpleNamespace(asha_counts="x"), _annealing(79))),
         [0.99] * 79 + [0.5] * 60)
    assert decisions["hinton"] == [(54, 54, "CONTINUE")]
    assert decisions["annealing"] == [(133, 54, "STOP")]  # after 54 evaluations of phase 2, on its own values


def test_max_t_counts_the_last_phase_only() -> None:
    """The default space samples annealing KD with up to 100 phase-1 epochs before its 200 student epochs;
    ASHA's max_t counts the 200 (and two of slack), as it does for a Hinton trial."""
    from search_spaces import load_space
    from tune.plan import default_grace, max_evaluations

    space = load_space("default")
    assert 200 <= max_evaluations(space) <= 202
    assert default_grace(space) == 133


def test_a_new_study_records_what_its_rung_counts(tmp_path: Any) -> None:
    from tune.plan import ASHA_COUNTS, SearchSettings, plan_study

    _, meta = plan_study(SearchSettings(data="builtin:d0.5", space="smoke", name="s", storage=tmp_path,
                                        num_samples=2))
    assert meta.asha_counts == ASHA_COUNTS and "last phase" in ASHA_COUNTS

