"""Tests of search_spaces: loading, validation errors, define-by-run sampling and the built-in spaces."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from kdcore import ExperimentConfig, KDCoreError
from search_spaces import (
    CategoricalKnob,
    FloatKnob,
    IntKnob,
    SearchSpace,
    SpaceError,
    builtin_spaces,
    load_space,
    parse_space,
)

SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"


class EdgeTrial:
    """A stand-in for optuna.Trial: takes each low/first (or high/last) value and records the names."""

    def __init__(self, side: int = 0, picks: dict[str, Any] | None = None) -> None:
        self.side, self.picks = side, picks or {}
        self.asked: list[str] = []

    def _pick(self, name: str, values: Sequence[Any]) -> Any:
        self.asked.append(name)
        return self.picks.get(name, values[self.side])

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        return float(self._pick(name, [low, high]))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return int(self._pick(name, [low, high]))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._pick(name, choices)


def write_space(tmp_path: Path, knobs: str, fixed: str = "{seeds: [0]}") -> Path:
    path = tmp_path / "space.yaml"
    body = f"name: t\nfixed: {fixed}\nknobs:\n" + textwrap.indent(textwrap.dedent(knobs).strip(), "  ")
    path.write_text(body + "\n", encoding="utf-8")
    return path


def load_error(path: Path | str) -> str:
    with pytest.raises(SpaceError) as info:
        load_space(path)
    message = str(info.value)
    assert "\n" not in message, "errors must be one line"
    return message


# --- the built-in spaces ------------------------------------------------------------------------------------


def test_builtin_spaces_are_listed_and_load() -> None:
    assert builtin_spaces() == ["default", "digits-overlap", "digits-simkd", "digits-subsets", "published", "simkd-cifar100", "smoke"]
    for name in builtin_spaces():
        space = load_space(name)
        assert space.name == name and space.description
        assert space.source_text == (SPACES_DIR / f"{name}.yaml").read_text(encoding="utf-8")
        assert isinstance(space.base, ExperimentConfig)


def test_load_space_by_path_equals_by_name() -> None:
    by_path = load_space(SPACES_DIR / "smoke.yaml")
    assert by_path == load_space("smoke") and by_path.source == str(SPACES_DIR / "smoke.yaml")
    assert load_space(str(SPACES_DIR / "smoke.yaml")) == by_path


def test_unknown_builtin_name_lists_the_builtins() -> None:
    message = load_error("defualt")
    assert "'defualt'" in message and "['default', 'digits-overlap', 'digits-simkd', 'digits-subsets', 'published', 'simkd-cifar100', 'smoke']" in message


def test_default_space_covers_the_design_table() -> None:
    space = load_space("default")
    knobs = {k.path: k for k in space.knobs}
    assert next(iter(knobs)) == "kd.method"
    assert set(knobs) == {
        "kd.method",
        "kd.alpha",
        "kd.temperature",
        "kd.tau_max",
        "kd.anneal_epochs",
        "student.optimizer",
        "student.weight_decay",
        "student.lr",
        "student.schedule",
        "student.max_lr",
        "student.cycle_epochs",
        "student.pct_start",
        "student.batch_size",
        "student.batch_norm",
    }
    conditions = {path: {str(c) for c in k.when} for path, k in knobs.items()}
    assert conditions["student.weight_decay"] == {"student.optimizer == 'adamw'"}
    assert conditions["student.max_lr"] == {"student.schedule in ['cyclic', 'onecycle']"}
    assert conditions["kd.tau_max"] == {"kd.method == 'annealing'"}
    assert conditions["kd.alpha"] == {"kd.method == 'hinton'"}
    temperature = knobs["kd.temperature"]
    assert (
        isinstance(temperature, FloatKnob)
        and temperature.log
        and (temperature.low, temperature.high) == (1, 20)
    )
    assert space.objective.metric == "inner_acc" and space.objective.mode == "max"
    base = space.base
    assert base.seeds == (0, 10, 1234, 99, 2021)
    assert (base.student.epochs, base.student.patience) == (200, None)
    assert (base.teacher.schedule, base.teacher.max_lr, base.teacher.batch_size, base.teacher.epochs) == (
        "onecycle", 0.01, 128, 300)
    assert base.baseline == base.teacher


def test_published_space_is_the_hand_search() -> None:
    space = load_space("published")
    assert [k.path for k in space.knobs] == ["kd.alpha", "kd.temperature"]
    base = space.base
    assert base.kd.method == "hinton"
    for fit in (base.student, base.teacher, base.baseline):
        assert (fit.optimizer, fit.lr, fit.batch_size) == ("adam", 1e-3, None)
    assert "30,000" in space.source_text


# --- sampling and building experiments ----------------------------------------------------------------------


def test_sample_suggests_only_active_knobs_in_order() -> None:
    space = load_space("default")
    trial = EdgeTrial(side=0)  # hinton, adam, constant
    params = space.sample(trial)
    assert (
        trial.asked
        == list(params)
        == [
            "kd.method",
            "kd.alpha",
            "kd.temperature",
            "student.optimizer",
            "student.schedule",
            "student.lr",
            "student.batch_size",
            "student.batch_norm",
        ]
    )
    trial = EdgeTrial(side=-1)  # annealing, adamw, onecycle
    params = space.sample(trial)
    assert list(params) == [
        "kd.method",
        "kd.tau_max",
        "kd.anneal_epochs",
        "student.optimizer",
        "student.weight_decay",
        "student.schedule",
        "student.max_lr",
        "student.pct_start",
        "student.batch_size",
        "student.batch_norm",
    ]
    params = space.sample(EdgeTrial(picks={"student.schedule": "cyclic"}))
    assert (
        "student.cycle_epochs" in params and "student.max_lr" in params and "student.pct_start" not in params
    )


def test_experiment_applies_the_params_over_fixed() -> None:
    space = load_space("default")
    params = space.sample(EdgeTrial(side=-1))
    config = space.experiment(params)
    assert (config.kd.method, config.kd.tau_max, config.kd.anneal_epochs) == ("annealing", 20, 100)
    assert (config.student.optimizer, config.student.weight_decay) == ("adamw", 1e-2)
    assert (config.student.schedule, config.student.max_lr, config.student.batch_norm) == (
        "onecycle",
        5e-2,
        True,
    )
    assert config.student.epochs == 200 and config.teacher.epochs == 300


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"kd.alpa": 0.5}, "unknown knob(s) ['kd.alpa']"),
        ({"kd.tau_max": 5}, "'kd.tau_max' was given but is inactive: kd.method == 'annealing' fails"),
        ({"kd.alpha": None}, "'kd.alpha' is active but missing"),
        ({"kd.alpha": 1.5}, "'kd.alpha' takes floats in [0.0, 1.0], but got 1.5"),
        ({"student.batch_norm": 1}, "'student.batch_norm' takes choices [False, True], but got 1"),
    ],
)
def test_experiment_rejects_params_the_space_cannot_produce(change: dict[str, Any], expected: str) -> None:
    space = load_space("default")
    params = space.sample(EdgeTrial())
    params.update(change)
    params = {k: v for k, v in params.items() if v is not None}
    with pytest.raises(SpaceError, match="search_spaces/default.yaml") as info:
        space.experiment(params)
    assert expected in str(info.value)


def test_experiment_accepts_integral_floats_for_int_knobs() -> None:
    space = load_space("default")
    params = space.sample(EdgeTrial(side=-1))
    params.update({"kd.tau_max": 12.0, "student.batch_size": 128.0})
    config = space.experiment(params)
    assert (config.kd.tau_max, config.student.batch_size) == (12, 128)
    assert isinstance(config.kd.tau_max, int) and isinstance(config.student.batch_size, int)


def test_to_dict_round_trips() -> None:
    for name in builtin_spaces():
        space = load_space(name)
        again = SearchSpace.from_dict(space.to_dict())
        assert again == space and again.to_dict() == space.to_dict()
        assert parse_space(again.source_text) == space


def test_space_built_in_code_validates_and_renders_yaml() -> None:
    space = SearchSpace(
        name="code",
        knobs=(
            CategoricalKnob(path="kd.method", choices=("hinton", "annealing")),
            IntKnob(path="kd.tau_max", low=2, high=8, step=2),
            FloatKnob(path="kd.alpha", low=0, high=1, step=0.25),
        ),
        fixed={"student": {"epochs": 3}},
    )
    assert space.fixed == {"student.epochs": 3}
    assert "kd.tau_max" in space.source_text and parse_space(space.source_text) == space
    with pytest.raises(SpaceError, match="<dict>: unknown knob 'kd.alpa'; did you mean 'kd.alpha'"):
        SearchSpace(name="bad", knobs=(FloatKnob(path="kd.alpa", low=0, high=1),))


def test_every_tpe_sample_of_the_default_space_builds_an_experiment() -> None:
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space("default")
    configs: list[ExperimentConfig] = []

    def objective(trial: Any) -> float:
        configs.append(space.experiment(space.sample(trial)))
        return 0.0

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=30)
    assert len(configs) == 30
    for trial, config in zip(study.trials, configs):
        keys = set(trial.params)
        hinton, adamw = config.kd.method == "hinton", config.student.optimizer == "adamw"
        schedule = config.student.schedule
        assert ({"kd.alpha", "kd.temperature"} <= keys) == hinton
        assert ({"kd.tau_max", "kd.anneal_epochs"} <= keys) == (not hinton)
        assert not (hinton and keys & {"kd.tau_max", "kd.anneal_epochs"})
        assert not (not hinton and keys & {"kd.alpha", "kd.temperature"})
        assert ("student.weight_decay" in keys) == adamw
        assert ("student.max_lr" in keys) == (schedule in ("cyclic", "onecycle"))
        assert ("student.cycle_epochs" in keys) == (schedule == "cyclic")
        assert ("student.pct_start" in keys) == (schedule == "onecycle")
        assert space.experiment(trial.params) == config
    seen = {(c.kd.method, c.student.optimizer, c.student.schedule) for c in configs}
    assert {m for m, _, _ in seen} == {"hinton", "annealing"} and len({s for _, _, s in seen}) == 3


def test_importing_search_spaces_imports_neither_optuna_nor_ray() -> None:
    code = "import search_spaces, sys; assert 'optuna' not in sys.modules and 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=SPACES_DIR.parent)


# --- validation errors: each names the file and the thing wrong ---------------------------------------------


def test_space_error_is_a_kdcore_error_and_a_value_error() -> None:
    assert issubclass(SpaceError, KDCoreError) and issubclass(SpaceError, ValueError)


@pytest.mark.parametrize(
    ("knobs", "expected"),
    [
        ("kd.alpa: {type: float, low: 0.0, high: 1.0}", "unknown knob 'kd.alpa'; did you mean 'kd.alpha'?"),
        ("kd.nothing_like_this: {type: float, low: 0, high: 1}", "valid knobs are ['seeds'"),
        (
            "kd.alpha: {type: float, low: 3, high: 1}",
            "knob 'kd.alpha': `low <= high` must hold, but got low=3.0, high=1.0",
        ),
        (
            "kd.tau_max: {type: int, low: 9, high: 2}",
            "knob 'kd.tau_max': `low <= high` must hold, but got low=9, high=2",
        ),
        (
            "kd.temperature: {type: float, low: 0.0, high: 20.0, log: true}",
            "knob 'kd.temperature': `low > 0` must hold",
        ),
        ("kd.method: {type: categorical, choices: []}", "knob 'kd.method': choices must be a non-empty list"),
        (
            "kd.method: {type: categorical, choices: hinton}",
            "knob 'kd.method': choices must be a list, but got 'hinton'",
        ),
        ("kd.method: {type: categorical, choices: [hinton, hinton]}", "'hinton' appears twice"),
        ("kd.method: {type: categorical, choices: [[hinton]]}", "every choice must be null, true/false"),
        (
            "kd.alpha: {type: float, low: abc, high: 1.0}",
            "knob 'kd.alpha': low must be a finite number, but got 'abc'",
        ),
        ("student.lr: {type: float, low: '1.0e-4', high: 1.0e-2}", "unquote it"),
        (
            "kd.tau_max: {type: int, low: 1.5, high: 4}",
            "knob 'kd.tau_max': low must be an integer, but got 1.5",
        ),
        (
            "kd.alpha: {type: floaty, low: 0, high: 1}",
            "type must be one of ['float', 'int', 'categorical'], but got 'floaty'",
        ),
        ("kd.alpha: {low: 0, high: 1}", "knob 'kd.alpha': type must be one of"),
        (
            "kd.alpha: {type: float, low: 0, hihg: 1}",
            "knob 'kd.alpha': unknown key(s) ['hihg'] for type float; valid keys",
        ),
        ("kd.alpha: {type: float, low: 0}", "knob 'kd.alpha': missing key(s) ['high']"),
        ("kd.alpha: [0, 1]", "knob 'kd.alpha' must be a mapping"),
        ("kd.alpha: {type: float, low: 0, high: 1, log: yes please}", "log must be true or false"),
        (
            "kd.alpha: {type: float, low: 0.0, high: 1.0, step: 0.3}",
            "`high - low` must be a multiple of step",
        ),
        ("kd.tau_max: {type: int, low: 2, high: 16, log: true, step: 2}", "log and step cannot be combined"),
        (
            "kd.tau_max: {type: int, low: 2, high: 8, when: {kd.method: annealing}}",
            "knob 'kd.tau_max': condition on 'kd.method': 'kd.method' is not a knob of this space",
        ),
        (
            """
            kd.tau_max: {type: int, low: 2, high: 8, when: {kd.method: annealing}}
            kd.method: {type: categorical, choices: [hinton, annealing]}
            """,
            "'kd.method' is defined after 'kd.tau_max'; move it earlier",
        ),
        (
            """
            kd.method: {type: categorical, choices: [hinton, annealing]}
            kd.tau_max: {type: int, low: 2, high: 8, when: {kd.method: anealing}}
            """,
            "'kd.method' can never be 'anealing'; it takes choices ['hinton', 'annealing']",
        ),
        (
            """
            kd.tau_max: {type: int, low: 2, high: 8}
            kd.anneal_epochs: {type: int, low: 10, high: 20, when: {kd.tau_max: [4, 9]}}
            """,
            "'kd.tau_max' can never be 9; it takes integers in [2, 8]",
        ),
        (
            """
            kd.method: {type: categorical, choices: [hinton, annealing]}
            kd.tau_max: {type: int, low: 2, high: 8, when: {kd.method: []}}
            """,
            "knob 'kd.tau_max': condition on 'kd.method' must allow at least one value",
        ),
        (
            """
            kd.method: {type: categorical, choices: [hinton, annealing]}
            student.optimizer: {type: categorical, choices: [adam, adamw], when: {kd.method: hinton}}
            kd.tau_max: {type: int, low: 2, high: 8, when: {kd.method: annealing, student.optimizer: adamw}}
            """,
            "knob 'kd.tau_max' can never be sampled",
        ),
        (
            """
            student.optimizer: {type: categorical, choices: [adam, adamw]}
            student.weight_decay: {type: float, low: 1.0e-6, high: 1.0e-2, log: true}
            """,
            "weight_decay=1e-06 applies only to optimizers",
        ),
        (
            """
            kd.method: {type: categorical, choices: [annealing]}
            kd.tau_max: {type: int, low: 2, high: 20}
            kd.anneal_epochs: {type: int, low: 10, high: 100}
            """,
            "anneal_epochs >= tau_max must hold",
        ),
        (
            "kd.tau_max: {type: int, low: 2, high: 8, when: {kd.tau_max: 4}}",
            "condition on 'kd.tau_max': a knob cannot be conditional on itself",
        ),
        ("seeds: {type: categorical, choices: [0, 1]}", "knobs at {'seeds': 0} build no valid experiment"),
        ("{}", "a search space needs at least one knob"),
    ],
)
def test_bad_knobs_are_rejected_naming_file_and_knob(tmp_path: Path, knobs: str, expected: str) -> None:
    path = write_space(tmp_path, knobs)
    message = load_error(path)
    assert message.startswith(f"{path}: ")
    assert expected in message


@pytest.mark.parametrize(
    ("fixed", "expected"),
    [
        ("{student: {lr: -1.0}}", "fixed: student: lr must be > 0, but got -1.0"),
        ("{student: {optimizer: rmsprop}}", "fixed: student: optimizer must be one of ['adam', 'adamw', 'adam_coupled', 'sgd'], but got 'rmsprop'"),
        ("{student: {lrr: 0.1}}", "fixed: unknown setting 'student.lrr'"),
        ("{seeds: [0, 0]}", "fixed: seeds must be distinct"),
        ("{student.lr: 0.1, student: {lr: 0.2}}", "fixed: 'student.lr' is set twice"),
        ("[1, 2]", "fixed must be a mapping"),
        ("[]", "fixed must be a mapping"),
    ],
)
def test_fixed_settings_kdcore_rejects_are_reported_with_the_file(
    tmp_path: Path, fixed: str, expected: str
) -> None:
    path = write_space(tmp_path, "kd.alpha: {type: float, low: 0, high: 1}", fixed=fixed)
    message = load_error(path)
    assert message.startswith(f"{path}: ") and expected in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: t\nknobs: {kd.alpha: {type: float, low: 0, high: [1}\n", "invalid YAML at line 2"),
        (
            "- just\n- a list\n",
            "must be a mapping with keys ['name', 'description', 'data', 'fixed', 'objective', 'knobs']",
        ),
        ("", "but got an empty document"),
        ("name: t\nknob: {}\n", "unknown top-level key(s) ['knob']; valid keys are"),
        ("name: t\nfixed: {}\n", "missing top-level key(s) ['knobs']"),
        ("name: t\nknobs: [kd.alpha]\n", "knobs must map dotted paths to knob specs"),
        ("name: 3\nknobs: {kd.alpha: {type: float, low: 0, high: 1}}\n", "name must be a non-empty string"),
        (
            "name: t\nobjective: {metric: inner_acc, mode: maximise}\nknobs: {}\n",
            "objective.mode must be one of",
        ),
        ("name: t\nobjective: {metrik: acc}\nknobs: {}\n", "unknown key(s) ['metrik'] in objective"),
        ("name: t\nobjective: []\nknobs: {}\n", "objective must be a mapping"),
        ("name: !!python/object/apply:os.system [ls]\nknobs: {}\n", "invalid YAML"),
    ],
)
def test_bad_files_are_rejected_naming_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text, encoding="utf-8")
    message = load_error(path)
    assert message.startswith(f"{path}: ") and expected in message


def test_missing_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    assert load_error(path) == f"{path}: no such search-space file"
    assert load_error("nowhere.yaml") == "nowhere.yaml: no such search-space file"


def test_a_knob_may_also_be_fixed_for_when_it_is_inactive(tmp_path: Path) -> None:
    path = write_space(
        tmp_path,
        """
        kd.method: {type: categorical, choices: [hinton, annealing]}
        kd.alpha: {type: float, low: 0.0, high: 1.0, when: {kd.method: hinton}}
        """,
        fixed="{kd: {alpha: 0.25}}",
    )
    space = load_space(path)
    assert space.experiment({"kd.method": "annealing"}).kd.alpha == 0.25
    assert space.experiment({"kd.method": "hinton", "kd.alpha": 0.75}).kd.alpha == 0.75


def test_exponent_without_a_dot_is_a_float(tmp_path: Path) -> None:
    """YAML 1.1 reads 1e-4 as a string; spaces are read as YAML 1.2 does, so it is the float 0.0001."""
    path = tmp_path / "space.yaml"
    path.write_text("name: e\nknobs:\n  student.lr: {type: float, low: 1e-4, high: 1e-2, log: true}\n")
    knob = load_space(str(path)).knobs[0]
    assert (knob.low, knob.high) == (1e-4, 1e-2)


def test_a_space_names_the_data_it_was_written_for() -> None:
    from search_spaces import load_space, parse_space

    for name in ("digits-subsets", "digits-overlap", "digits-simkd"):
        assert load_space(name).data == "builtin:digits"
    assert load_space("smoke").data == ""  # for any data
    text = "name: s\ndata: builtin:digits\nknobs:\n  kd.alpha: {type: float, low: 0.0, high: 1.0}\n"
    assert parse_space(text).to_dict()["data"] == "builtin:digits"
    with pytest.raises(SpaceError, match="data must name a built-in data set"):
        parse_space(text.replace("builtin:digits", "builtin:digit"))
    with pytest.raises(SpaceError, match="data must be a string"):
        parse_space(text.replace("builtin:digits", "[1, 2]"))
