"""A search space: ordered knobs sampled define-by-run on top of fixed experiment settings.

Validated eagerly: every knob names a setting of ``kdcore.config.ExperimentConfig``, every condition names
an earlier knob and a value it can take, and the edges of every knob's domain build a valid experiment,
so that a study cannot sample a combination kdcore rejects halfway through.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from kdcore import ConfigError, ExperimentConfig, knob_paths
from search_spaces.errors import SpaceError
from search_spaces.knobs import Knob, Trial, knob_from_dict, same_value

MODES = ("max", "min")
# The holdout is never an objective: choosing on it is what the honest protocol exists to prevent.
METRICS = ("inner_acc", "inner_loss")
TOP_LEVEL_KEYS = ("name", "description", "data", "fixed", "objective", "knobs")


@dataclass(frozen=True)
class Objective:
    """The metric a study optimises (as the trainable reports it) and its direction."""

    metric: str = "inner_acc"
    mode: str = "max"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise SpaceError(f"objective.metric must be one of {list(METRICS)}, but got {self.metric!r}")
        if self.mode not in MODES:
            raise SpaceError(f"objective.mode must be one of {list(MODES)}, but got {self.mode!r}")

    @classmethod
    def from_dict(cls, data: Any) -> Objective:
        valid = ["metric", "mode"]
        if not isinstance(data, Mapping):
            raise SpaceError(
                f"objective must be a mapping like {{metric: inner_acc, mode: max}}, but got {data!r}"
            )
        unknown = sorted(str(k) for k in data if k not in valid)
        if unknown:
            raise SpaceError(f"unknown key(s) {unknown} in objective; valid keys are {valid}")
        return cls(**data)

    def to_dict(self) -> dict[str, str]:
        return {"metric": self.metric, "mode": self.mode}

    @property
    def direction(self) -> str:
        """Optuna's name for the mode: ``maximize`` or ``minimize``."""
        return "maximize" if self.mode == "max" else "minimize"


def _check_data(data: Any) -> None:
    """``data:`` names a ``--data`` value: ``builtin:NAME`` of a built-in set, or a path or description."""
    from kdcore import BUILTIN_NAMES

    if not isinstance(data, str):
        raise SpaceError(f"data must be a string naming the data the space is for (e.g. builtin:digits), but got "
                         f"{data!r}")
    if data.startswith("builtin:") and data.removeprefix("builtin:") not in BUILTIN_NAMES:
        raise SpaceError(f"data must name a built-in data set ({', '.join('builtin:' + n for n in BUILTIN_NAMES)}) "
                         f"or your own, but got {data!r}")


@dataclass(frozen=True)
class SearchSpace:
    """Knobs (sampled in order) over an experiment built from ``fixed`` (dotted paths, flattened here).

    A knob may also appear in ``fixed``: the fixed value is the one used while the knob is inactive.
    ``source`` names where the space came from (a file path) and prefixes every error; ``source_text``
    is the YAML as written, kept for provenance (rendered from ``to_dict`` for spaces built in code).
    """

    name: str
    knobs: tuple[Knob, ...]
    description: str = ""
    fixed: dict[str, Any] = field(default_factory=dict, hash=False)
    objective: Objective = field(default_factory=Objective)
    # The data the space was written for (a --data value, e.g. "builtin:digits"; "" when not said): named in
    # the error when a space does not fit the data it is run on.
    data: str = ""
    source: str = field(default="<dict>", compare=False)
    source_text: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self._validate()
        except SpaceError as err:
            raise SpaceError(f"{self.source}: {err}") from None
        if not self.source_text:
            object.__setattr__(self, "source_text", yaml.safe_dump(self.to_dict(), sort_keys=False))

    def _validate(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SpaceError(f"name must be a non-empty string, but got {self.name!r}")
        if not isinstance(self.description, str):
            raise SpaceError(f"description must be a string, but got {self.description!r}")
        _check_data(self.data)
        if not isinstance(self.objective, Objective):
            raise SpaceError(f"objective must be an Objective, but got {self.objective!r}")
        if not isinstance(self.fixed, Mapping):
            raise SpaceError(f"fixed must be a mapping of settings, but got {self.fixed!r}")
        object.__setattr__(self, "fixed", _flatten(self.fixed))
        object.__setattr__(self, "knobs", tuple(self.knobs))
        if not self.knobs:
            raise SpaceError("a search space needs at least one knob, but knobs is empty")
        valid = knob_paths()
        earlier: dict[str, Knob] = {}
        for knob in self.knobs:
            if not isinstance(knob, Knob):
                raise SpaceError(f"knobs must hold Knob objects, but got {knob!r}")
            if knob.path in earlier:
                raise SpaceError(f"knob {knob.path!r} is defined twice")
            if knob.path not in valid:
                close = difflib.get_close_matches(knob.path, valid, n=3)
                hint = (
                    f"did you mean {' or '.join(map(repr, close))}?" if close else f"valid knobs are {valid}"
                )
                raise SpaceError(f"unknown knob {knob.path!r}; {hint}")
            for cond in knob.when:
                _check_condition(knob, cond.path, cond.values, earlier, [k.path for k in self.knobs])
            earlier[knob.path] = knob
        self._check_edges()

    @property
    def base(self) -> ExperimentConfig:
        """The experiment before any knob is applied: kdcore's defaults overridden by ``fixed``."""
        try:
            return ExperimentConfig().with_overrides(self.fixed)
        except ConfigError as err:
            raise SpaceError(f"fixed: {err}") from None

    def without_kd(self) -> SearchSpace:
        """The same space for a student without distillation: the CE-only baseline search of a study.

        Drops every ``kd.*`` knob (and any knob conditional on a dropped one) and fixes the ablation's KD
        settings (``kdcore.METHODS``: Hinton KD with alpha = 0), so the student trains on hard labels with the
        same recipe knobs and the same budget.
        """
        from kdcore import METHODS

        dropped: set[str] = set()
        kept: list[Knob] = []
        for knob in self.knobs:
            if knob.path.startswith("kd.") or any(c.path in dropped for c in knob.when):
                dropped.add(knob.path)
            else:
                kept.append(knob)
        fixed = {k: v for k, v in self.fixed.items() if not k.startswith("kd.")}
        ablation = METHODS[self.base.kd.method].ablation(self.base.kd)
        fixed.update({f"kd.{key}": value for key, value in ablation.items() if key in ("method", "alpha")})
        return SearchSpace(name=f"{self.name}-ce", knobs=tuple(kept), fixed=fixed, objective=self.objective,
                           data=self.data,
                           description=f"{self.name} without distillation (CE only): the tuned baseline",
                           source=f"{self.source} (CE only)")

    def sample(self, trial: Trial) -> dict[str, Any]:
        """Suggest, in order, every knob whose conditions hold; return ``{dotted_path: value}`` of those."""
        params: dict[str, Any] = {}
        for knob in self.knobs:
            if knob.active(params):
                params[knob.path] = knob.suggest(trial)
        return params

    def experiment(self, params: Mapping[str, Any]) -> ExperimentConfig:
        """The experiment for sampled ``params``: exactly the active knobs, each with a value it can take."""
        by_path = {k.path: k for k in self.knobs}
        unknown = [p for p in params if p not in by_path]
        if unknown:
            raise SpaceError(
                f"{self.source}: unknown knob(s) {unknown}; this space's knobs are {list(by_path)}"
            )
        for knob in self.knobs:
            given, active = knob.path in params, knob.active(params)
            if given and not active:
                failed = next(str(c) for c in knob.when if not c.holds(params))
                raise SpaceError(
                    f"{self.source}: knob {knob.path!r} was given but is inactive: {failed} fails"
                )
            if active and not given:
                raise SpaceError(f"{self.source}: knob {knob.path!r} is active but missing from the params")
            if given and not knob.contains(params[knob.path]):
                raise SpaceError(
                    f"{self.source}: knob {knob.path!r} takes {knob.describe()}, "
                    f"but got {params[knob.path]!r}"
                )
        try:
            return self.base.with_overrides(params)
        except ConfigError as err:
            raise SpaceError(
                f"{self.source}: params {dict(params)} build no valid experiment: {err}"
            ) from None

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>", source_text: str = "") -> SearchSpace:
        """Build a space from parsed YAML; every error names ``source``."""
        try:
            if not isinstance(data, Mapping):
                got = "an empty document" if data is None else f"{type(data).__name__} {data!r}"
                raise SpaceError(
                    f"a search space must be a mapping with keys {list(TOP_LEVEL_KEYS)}, but got {got}"
                )
            unknown = sorted(str(k) for k in data if k not in TOP_LEVEL_KEYS)
            if unknown:
                raise SpaceError(f"unknown top-level key(s) {unknown}; valid keys are {list(TOP_LEVEL_KEYS)}")
            missing = [k for k in ("name", "knobs") if k not in data]
            if missing:
                raise SpaceError(f"missing top-level key(s) {missing}")
            knobs = data["knobs"]
            if not isinstance(knobs, Mapping):
                raise SpaceError(f"knobs must map dotted paths to knob specs, but got {knobs!r}")
            objective = Objective.from_dict(_or_empty(data.get("objective")))
            parsed = tuple(knob_from_dict(str(path), spec) for path, spec in knobs.items())
        except SpaceError as err:
            raise SpaceError(f"{source}: {err}") from None
        return cls(
            name=data["name"],
            description=data.get("description") or "",
            knobs=parsed,
            fixed=_or_empty(data.get("fixed")),
            objective=objective,
            data=data.get("data") or "",
            source=source,
            source_text=source_text,
        )

    def to_dict(self) -> dict[str, Any]:
        """The normalised space in the YAML layout (``fixed`` as dotted paths); ``from_dict`` reads it."""
        return {
            "name": self.name,
            "description": self.description,
            **({"data": self.data} if self.data else {}),
            "fixed": dict(self.fixed),
            "objective": self.objective.to_dict(),
            "knobs": {k.path: k.to_dict() for k in self.knobs},
        }

    def _check_edges(self) -> None:
        """Build the experiment at the edges of each knob's domain, the other knobs at one edge or the other.

        Catches spaces where some combination breaks a cross-setting rule of kdcore (weight decay without
        adamw, anneal_epochs < tau_max) before a study samples it. About 2 * (number of edge values) builds.
        """
        base = self.base
        for target in self.knobs:
            required = _requirements(target, self.knobs)
            for value in target.extremes():
                for side in (0, -1):
                    params: dict[str, Any] = {}
                    for knob in self.knobs:
                        if not knob.active(params):
                            continue
                        if knob is target:
                            params[knob.path] = value
                        elif required.get(knob.path):
                            params[knob.path] = required[knob.path][0]
                        else:
                            params[knob.path] = knob.extremes()[side]
                    if target.path not in params:
                        raise SpaceError(
                            f"knob {target.path!r} can never be sampled: its conditions (and those of the "
                            f"knobs they name) contradict each other: {', '.join(map(str, target.when))}"
                        )
                    try:
                        base.with_overrides(params)
                    except ConfigError as err:
                        raise SpaceError(
                            f"knobs at {params} build no valid experiment: {err}; "
                            f"add a `when` condition or narrow a range"
                        ) from None


def _or_empty(value: Any) -> Any:
    """A key written with no value (``fixed:``) means an empty mapping; anything else is kept to validate."""
    return {} if value is None else value


def _flatten(fixed: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"student": {"epochs": 5}, "kd.alpha": 0.5}`` -> ``{"student.epochs": 5, "kd.alpha": 0.5}``."""
    out: dict[str, Any] = {}
    for key, value in fixed.items():
        if not isinstance(key, str):
            raise SpaceError(f"fixed: setting names must be strings, but got {key!r}")
        path = prefix + key
        items = _flatten(value, path + ".") if isinstance(value, Mapping) else {path: value}
        for sub, sub_value in items.items():
            if sub in out:
                raise SpaceError(f"fixed: {sub!r} is set twice")
            out[sub] = list(sub_value) if isinstance(sub_value, tuple) else sub_value
    return out


def _check_condition(
    knob: Knob, path: str, values: tuple[Any, ...], earlier: Mapping[str, Knob], all_paths: list[str]
) -> None:
    where = f"knob {knob.path!r}: condition on {path!r}"
    if path == knob.path:
        raise SpaceError(f"{where}: a knob cannot be conditional on itself")
    if path not in earlier:
        if path in all_paths:
            raise SpaceError(f"{where}: {path!r} is defined after {knob.path!r}; move it earlier")
        raise SpaceError(f"{where}: {path!r} is not a knob of this space; earlier knobs are {list(earlier)}")
    ref = earlier[path]
    for value in values:
        if not ref.contains(value):
            raise SpaceError(f"{where}: {path!r} can never be {value!r}; it takes {ref.describe()}")


def _requirements(target: Knob, knobs: tuple[Knob, ...]) -> dict[str, list[Any]]:
    """The values each knob must take for ``target`` to be active: its conditions and theirs, intersected."""
    by_path = {k.path: k for k in knobs}
    required: dict[str, list[Any]] = {}
    pending = list(target.when)
    while pending:
        cond = pending.pop()
        if cond.path in required:
            required[cond.path] = [
                v for v in required[cond.path] if any(same_value(v, w) for w in cond.values)
            ]
        else:
            required[cond.path] = list(cond.values)
            pending.extend(by_path[cond.path].when)
    return required
