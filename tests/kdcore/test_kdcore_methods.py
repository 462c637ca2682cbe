"""kdcore.methods: the KD method registry. Every entry owns its checks, phases and epochs; the config reads
its names and rules from it; a new entry trains through the same path as the built-in ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import kdcore
from kdcore import methods
from kdcore.config import KD_METHODS, ExperimentConfig, KDConfig
from kdcore.errors import ConfigError
from kdcore.experiment import run_experiment
from kdcore.generator import generate
from kdcore.methods import METHODS, Method
from kdcore.result import FitResult
from kdcore.student import StudentRun

ROOT = Path(__file__).resolve().parents[2]


def test_a_trainer_that_is_not_there_is_one_line() -> None:
    with pytest.raises(ConfigError, match="cannot be loaded"):
        methods.resolve("kdcore.distillers:no_such_method")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        methods.resolve("no_such_package.module:train")


def test_kd_methods_are_the_registry_keys_in_its_order() -> None:
    assert KD_METHODS == tuple(METHODS) == kdcore.KD_METHODS
    assert set(METHODS) == {"none", "hinton", "annealing", "simkd"}
    assert kdcore.METHODS is METHODS


def test_the_cli_offers_every_registered_method() -> None:
    from tune.cli import build_parser

    train = build_parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    (action,) = [a for a in train._actions if "--kd-method" in a.option_strings]
    assert list(action.choices) == list(METHODS)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_entry_owns_checks_phases_and_epochs(name: str) -> None:
    method = METHODS[name]
    assert isinstance(method, Method)
    assert callable(methods.resolve(method.trainer))  # it names the function that trains its phases
    kd = KDConfig(method=name)
    method.check_config(kd)  # the defaults are valid for every method
    phases = method.phase_epochs(kd, 7)
    assert phases[-1] == 7 and all(e >= 1 for e in phases)
    assert isinstance(method.uses_teachers(kd), bool)
    assert KDConfig(**method.ablation(kd)) == kd.without_kd()
    assert not kd.without_kd().uses_teachers


def test_the_config_asks_each_method_its_rules() -> None:
    assert [KDConfig(method=m).uses_teachers for m in METHODS] == [True, True, True, False]
    assert not KDConfig(method="hinton", alpha=0.0).uses_teachers
    assert METHODS["annealing"].phase_epochs(KDConfig(method="annealing", anneal_epochs=30), 7) == (30, 7)
    with pytest.raises(ConfigError, match="anneal_epochs >= tau_max must hold"):
        KDConfig(method="annealing", anneal_epochs=3, tau_max=5)
    KDConfig(method="hinton", anneal_epochs=3, tau_max=5)  # the rule is annealing's own
    with pytest.raises(ConfigError, match=r"kd.method must be one of \['hinton', 'annealing', 'simkd', 'none'\]"):
        KDConfig(method="fitnets")
    with pytest.raises(ConfigError, match="kd.method must be one of"):
        methods.method_of("fitnets")


def test_the_registry_and_the_config_import_without_torch() -> None:
    probe = ("import json, sys; import kdcore.methods, kdcore.config; "
             "print(json.dumps('torch' in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) is False


SEEN: list[StudentRun] = []


def two_stage(run: StudentRun) -> FitResult:
    """The made-up method's trainer, named by import path as the built-in ones are."""
    SEEN.append(run)
    first = run.fit(run.phase(run.new_model(), *run.hard_label_losses(), epochs=2, patience=None))
    second = run.fit(run.phase(first.model, *run.hard_label_losses(), epoch_offset=first.epochs_run))
    return run.joined(first, second)


class TwoStageCE(Method):
    """A made-up method: two hard-label phases, the second continuing the first, after the teachers trained."""

    trainer = f"{__name__}:two_stage"

    def __init__(self) -> None:
        self.seen = SEEN
        SEEN.clear()

    def phase_epochs(self, kd: object, student_epochs: int) -> tuple[int, ...]:
        return (2, student_epochs)


def test_a_new_entry_trains_through_the_same_path(monkeypatch: pytest.MonkeyPatch) -> None:
    fit = {"epochs": 3, "batch_size": None, "schedule": "constant", "lr": 1e-2}
    spec = {"seeds": [0, 10], "baseline": fit, "teacher": fit, "student": fit, "kd": {"method": "two_stage"}}
    with pytest.raises(ConfigError, match="kd.method must be one of"):
        ExperimentConfig.from_dict(spec)
    method = TwoStageCE()
    monkeypatch.setitem(METHODS, "two_stage", method)
    config = ExperimentConfig.from_dict(spec)
    assert config.kd.uses_teachers and config.kd.without_kd().method == "hinton"
    data = generate(0.5, train_per_domain=20, valid_per_domain=10, seed=0)
    result = run_experiment(data, config)
    (run,) = method.seen
    assert len(run.teachers) == len(run.task.teachers) == 3  # one per domain, trained before the student
    student = result.methods["student"]
    assert [r.epoch for r in student.history] == [1, 2, 3, 4, 5]
    assert student.epochs_run == 5 and student.seeds == (0, 10)
    assert set(result.methods) == {"baseline", "teacher_0", "teacher_1", "teacher_2", "student"}
