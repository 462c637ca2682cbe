"""kdcore.config: eager validation with messages that name the problem, round trips, dotted overrides."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from kdcore.config import DEFAULT_SEEDS, ExperimentConfig, FitConfig, KDConfig, knob_paths
from kdcore.errors import ConfigError, KDCoreError


def test_defaults_are_the_measured_recipe() -> None:
    config = ExperimentConfig()
    assert config.seeds == DEFAULT_SEEDS == (0, 10, 1234, 99, 2021)
    assert (config.protocol, config.inner, config.n_folds) == ("honest", "folds", 5)
    student = config.student
    assert student.hidden == (20, 10) and student.optimizer == "adam"
    assert (student.schedule, student.max_lr, student.batch_size, student.epochs) == ("onecycle", 0.01, 128, 300)
    assert config.baseline == config.teacher == student
    assert (config.kd.method, config.kd.alpha, config.kd.temperature) == ("hinton", 0.9, 1.0)


@pytest.mark.parametrize(("cls", "data", "names"), [
    (FitConfig, {"lrr": 0.1}, ["lr", "epochs", "batch_size"]),
    (KDConfig, {"alpah": 0.1}, ["alpha", "temperature"]),
    (ExperimentConfig, {"seed": [0]}, ["seeds", "protocol", "student"]),
])
def test_unknown_key_lists_the_valid_keys(cls: Any, data: dict[str, Any], names: list[str]) -> None:
    with pytest.raises(ConfigError, match="unknown key") as info:
        cls.from_dict(data)
    text = str(info.value)
    assert repr(next(iter(data))) in text
    for name in names:
        assert repr(name) in text


def test_unknown_nested_key_names_its_section() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['learning_rate'\] in student") as info:
        ExperimentConfig.from_dict({"student": {"learning_rate": 0.1}})
    assert "'lr'" in str(info.value)


def test_non_string_unknown_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        ExperimentConfig.from_dict({1: "a", "foo": "b"})


def test_weight_decay_only_with_adamw() -> None:
    with pytest.raises(ConfigError, match="adamw") as info:
        FitConfig(optimizer="adam", weight_decay=0.01)
    assert "weight_decay" in str(info.value)
    assert FitConfig(optimizer="adamw", weight_decay=0.01).weight_decay == 0.01
    assert FitConfig(optimizer="adam", weight_decay=0).weight_decay == 0.0


@pytest.mark.parametrize("alpha", [-0.1, 1.0001, 2, float("nan"), "0.5", None, True])
def test_alpha_out_of_range_or_not_a_number(alpha: Any) -> None:
    with pytest.raises(ConfigError, match="alpha"):
        KDConfig(alpha=alpha)


def test_annealing_knobs_are_only_cross_checked_for_annealing() -> None:
    assert KDConfig(method="hinton", tau_max=10, anneal_epochs=5).anneal_epochs == 5


@pytest.mark.parametrize("alpha", [0, 0.0, 0.5, 1])
def test_alpha_bounds_are_inclusive(alpha: float) -> None:
    assert KDConfig(alpha=alpha).alpha == float(alpha)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"temperature": 0}, "temperature must be > 0"),
    ({"temperature": -2.0}, "temperature must be > 0"),
    ({"method": "fitnets"}, "kd.method must be one of"),
    ({"tau_max": 0}, "tau_max must be >= 1"),
    ({"method": "annealing", "tau_max": 10, "anneal_epochs": 5}, "anneal_epochs >= tau_max"),
    ({"anneal_epochs": 0}, "anneal_epochs must be >= 1"),
])
def test_kd_settings_are_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        KDConfig(**kwargs)


@pytest.mark.parametrize("seeds", [[], [-1], [0, 0], 5, [True], ["a"], [1.5], None, "0,1"])
def test_bad_seeds(seeds: Any) -> None:
    with pytest.raises(ConfigError, match="seed"):
        ExperimentConfig(seeds=seeds)


def test_seeds_are_normalised_to_a_tuple_of_ints() -> None:
    assert ExperimentConfig(seeds=[3, 1.0, 2]).seeds == (3, 1, 2)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lr": 0}, "lr must be > 0"),
    ({"lr": float("inf")}, "lr must be finite"),
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"epochs": 2.5}, "epochs must be an integer"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"patience": -3}, "patience must be >= 1"),
    ({"hidden": []}, "hidden must be a non-empty list"),
    ({"hidden": 20}, "hidden must be a non-empty list"),
    ({"hidden": [20, 0]}, "every hidden width must be >= 1"),
    ({"optimizer": "rmsprop"}, "optimizer must be one of"),
    ({"optimizer": "adam", "weight_decay": 5e-4}, "adam_coupled"),
    ({"optimizer": "adamw", "nesterov": True}, "nesterov applies to optimizer 'sgd'"),
    ({"optimizer": "sgd", "momentum": 1.0}, "0 <= momentum < 1"),
    ({"schedule": "multistep"}, "needs milestones"),
    ({"schedule": "multistep", "milestones": [30, 10]}, "milestones must be increasing"),
    ({"model": "vgg"}, "model must be one of"),
    ({"model": "resnet", "depth": 10}, "6n"),
    ({"model": "resnet", "channels": [16, 32]}, "resnet channels must be 4"),
    ({"width": 0}, "width must be >= 1"),
    ({"schedule": "cosine"}, "schedule must be one of"),
    ({"gamma": 0}, "gamma"),
    ({"pct_start": 1.0}, "pct_start"),
    ({"batch_norm": "yes"}, "batch_norm must be true or false"),
    ({"restore_best": 1}, "restore_best must be true or false"),
])
def test_fit_settings_are_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FitConfig(**kwargs)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"protocol": "published"}, "protocol must be one of"),
    ({"inner_fraction": 0}, "inner_fraction"),
    ({"inner_fraction": 1}, "inner_fraction"),
    ({"eval_every": 0}, "eval_every must be >= 1"),
    ({"student": {"lr": 1}}, "student must be FitConfig"),
])
def test_experiment_settings_are_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig(**kwargs)


def test_errors_share_the_kdcore_base() -> None:
    with pytest.raises(KDCoreError):
        FitConfig.from_dict({"nope": 1})
    with pytest.raises(ConfigError, match="must be a mapping"):
        FitConfig.from_dict([("lr", 0.1)])  # type: ignore[arg-type]


def test_from_dict_round_trips_to_dict() -> None:
    config = ExperimentConfig.from_dict({
        "seeds": [7, 3], "protocol": "seed", "inner_fraction": 0.3, "split_seed": 4, "eval_every": 5,
        "baseline": {"hidden": [8], "lr": 0.01, "batch_size": 64, "patience": 10},
        "teacher": {"optimizer": "adamw", "weight_decay": 0.1, "schedule": "cyclic", "max_lr": 0.05},
        "student": {"batch_norm": True, "schedule": "onecycle", "pct_start": 0.2, "restore_best": False},
        "kd": {"method": "annealing", "tau_max": 4, "anneal_epochs": 40},
    })
    data = config.to_dict()
    json.dumps(data)  # plain data only
    again = ExperimentConfig.from_dict(data)
    assert again == config and again.to_dict() == data
    assert again.baseline.hidden == (8,) and again.student.batch_norm is True and again.seeds == (7, 3)
    assert ExperimentConfig.from_dict(ExperimentConfig().to_dict()) == ExperimentConfig()
    # an empty or null section means defaults
    assert ExperimentConfig.from_dict({"student": None, "kd": {}}) == ExperimentConfig()


def test_with_overrides() -> None:
    config = ExperimentConfig()
    new = config.with_overrides({"kd.alpha": 0.3, "student.lr": 0.01, "seeds": [0, 1]})
    assert (new.kd.alpha, new.student.lr, new.seeds) == (0.3, 0.01, (0, 1))
    assert new.baseline == config.baseline and config.kd.alpha == 0.9  # the original is untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.kd.alpha = 0.1  # type: ignore[misc]
    with pytest.raises(ConfigError, match="0 <= alpha <= 1"):  # overrides are validated like everything else
        config.with_overrides({"kd.alpha": 3})


@pytest.mark.parametrize(("path", "fragment"), [
    ("kd.alpah", "kd has no key 'alpah'"),
    ("nope", "the experiment has no key 'nope'"),
    ("student.lr.x", "unknown setting 'student.lr.x'"),
    ("students.lr", "has no key 'students'"),
])
def test_with_overrides_rejects_unknown_paths(path: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match="unknown setting") as info:
        ExperimentConfig().with_overrides({path: 1})
    assert fragment in str(info.value)
    if path == "kd.alpah":
        assert "'alpha'" in str(info.value)  # the valid keys are listed


def test_knob_paths_cover_every_setting() -> None:
    paths = knob_paths()
    assert {"kd.alpha", "student.lr", "seeds", "teacher.batch_norm"} <= set(paths)
    for path in paths:  # every advertised path is accepted by with_overrides
        section, _, key = path.partition(".")
        value = ExperimentConfig().to_dict()[section]
        ExperimentConfig().with_overrides({path: value[key] if key else value})
