"""The knobs of a search space: one frozen dataclass per kind of parameter, and the conditions on them.

A knob suggests its value through any object with Optuna's ``Trial`` methods (the ``Trial`` protocol
below), so this module never imports Optuna. Error messages name no file; the space prefixes them.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeAlias

from search_spaces.errors import SpaceError

Scalar: TypeAlias = None | bool | int | float | str
"""A value Optuna can store for a categorical parameter."""


class Trial(Protocol):
    """The part of ``optuna.Trial`` a space samples through (define-by-run)."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


def same_value(a: Any, b: Any) -> bool:
    """Equality that keeps booleans apart from numbers (``True == 1`` in Python, not here)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _is_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (bool, int, str))


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _number(value: Any, name: str, *, integer: bool = False) -> Any:
    kind = "an integer" if integer else "a finite number"
    if isinstance(value, str) and _parses_as_float(value):
        # PyYAML follows YAML 1.1, where 1e-4 (no dot) is a string
        raise SpaceError(
            f"{name} must be {kind}, but got the string {value!r}; unquote it"
        )
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise SpaceError(f"{name} must be {kind}, but got {value!r}")
    if not integer and not math.isfinite(value):
        raise SpaceError(f"{name} must be {kind}, but got {value!r}")
    return int(value) if integer else float(value)


@dataclass(frozen=True)
class Condition:
    """Holds when the knob at ``path`` was sampled with one of ``values``."""

    path: str
    values: tuple[Scalar, ...]

    def __post_init__(self) -> None:
        values = self.values
        if isinstance(values, (list, tuple)):
            values = tuple(values)
        else:
            values = (values,)
        if not values:
            raise SpaceError(f"condition on {self.path!r} must allow at least one value, but got []")
        bad = [v for v in values if not _is_scalar(v)]
        if bad:
            raise SpaceError(
                f"condition on {self.path!r} must name null, true/false, numbers or strings, "
                f"but got {bad[0]!r}"
            )
        object.__setattr__(self, "values", values)

    def holds(self, params: Mapping[str, Any]) -> bool:
        return self.path in params and any(same_value(params[self.path], v) for v in self.values)

    def __str__(self) -> str:
        if len(self.values) == 1:
            return f"{self.path} == {self.values[0]!r}"
        return f"{self.path} in {list(self.values)}"


@dataclass(frozen=True, kw_only=True)
class Knob(ABC):
    """One searched setting, named by its dotted path in ``kdcore.config.ExperimentConfig``.

    ``when`` makes it conditional: it is sampled only if every condition holds on the values sampled
    before it.
    """

    kind: ClassVar[str]
    path: str
    when: tuple[Condition, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise SpaceError(f"a knob's path must be a non-empty string, but got {self.path!r}")
        object.__setattr__(self, "when", tuple(self.when))
        try:
            if not all(isinstance(c, Condition) for c in self.when):
                raise SpaceError(f"when must hold Condition objects, but got {self.when!r}")
            self._validate()
        except SpaceError as err:
            raise SpaceError(f"knob {self.path!r}: {err}") from None

    @abstractmethod
    def _validate(self) -> None: ...

    @abstractmethod
    def suggest(self, trial: Trial) -> Any:
        """Ask ``trial`` for this knob's value, under the name ``self.path``."""

    @abstractmethod
    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this knob can take."""

    @abstractmethod
    def extremes(self) -> tuple[Any, ...]:
        """The values at the edges of the domain (every choice, for a categorical knob)."""

    @abstractmethod
    def describe(self) -> str:
        """The domain in words, for error messages."""

    def active(self, params: Mapping[str, Any]) -> bool:
        return all(c.holds(params) for c in self.when)

    def to_dict(self) -> dict[str, Any]:
        """The knob's spec as written in YAML (without its path, which is the key)."""
        out: dict[str, Any] = {"type": self.kind}
        out.update(
            {
                f.name: getattr(self, f.name)
                for f in dataclasses.fields(self)
                if f.name not in ("path", "when")
            }
        )
        if "choices" in out:
            out["choices"] = list(out["choices"])
        if self.when:
            out["when"] = {c.path: list(c.values) for c in self.when}
        return out


@dataclass(frozen=True, kw_only=True)
class FloatKnob(Knob):
    """A float in ``[low, high]``, on a log scale if ``log``, on a grid of ``step`` if given."""

    kind: ClassVar[str] = "float"
    low: float
    high: float
    log: bool = False
    step: float | None = None

    def _validate(self) -> None:
        low, high = _number(self.low, "low"), _number(self.high, "high")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        _check_range(low, high, self.log, self.step is not None)
        if self.step is not None:
            step = _number(self.step, "step")
            if step <= 0:
                raise SpaceError(f"`step > 0` must hold, but got step={step}")
            ratio = (high - low) / step
            if not math.isclose(ratio, round(ratio), abs_tol=1e-9):
                raise SpaceError(
                    f"`high - low` must be a multiple of step, but got low={low}, high={high}, step={step}"
                )
            object.__setattr__(self, "step", step)

    def suggest(self, trial: Trial) -> float:
        return trial.suggest_float(self.path, self.low, self.high, step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high
        )

    def extremes(self) -> tuple[float, ...]:
        return (self.low, self.high)

    def describe(self) -> str:
        return f"floats in [{self.low}, {self.high}]"


@dataclass(frozen=True, kw_only=True)
class IntKnob(Knob):
    """An integer in ``[low, high]``, on a log scale if ``log``, in steps of ``step``."""

    kind: ClassVar[str] = "int"
    low: int
    high: int
    log: bool = False
    step: int = 1

    def _validate(self) -> None:
        low, high = _number(self.low, "low", integer=True), _number(self.high, "high", integer=True)
        step = _number(self.step, "step", integer=True)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "step", step)
        _check_range(low, high, self.log, step != 1)
        if step < 1:
            raise SpaceError(f"`step >= 1` must hold, but got step={step}")
        if (high - low) % step:
            raise SpaceError(
                f"`high - low` must be a multiple of step, but got low={low}, high={high}, step={step}"
            )

    def suggest(self, trial: Trial) -> int:
        return trial.suggest_int(self.path, self.low, self.high, step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        # integral floats too: tables with missing (inactive) values store integer columns as floats
        integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        return (
            integral
            and not isinstance(value, bool)
            and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )

    def extremes(self) -> tuple[int, ...]:
        return (self.low, self.high)

    def describe(self) -> str:
        return f"integers in [{self.low}, {self.high}]" + (
            f" in steps of {self.step}" if self.step != 1 else ""
        )


@dataclass(frozen=True, kw_only=True)
class CategoricalKnob(Knob):
    """One of ``choices``: null, true/false, numbers or strings (what Optuna can store)."""

    kind: ClassVar[str] = "categorical"
    choices: tuple[Scalar, ...]

    def _validate(self) -> None:
        if not isinstance(self.choices, (list, tuple)):
            raise SpaceError(f"choices must be a list, but got {self.choices!r}")
        choices = tuple(self.choices)
        if not choices:
            raise SpaceError("choices must be a non-empty list, but got []")
        bad = [c for c in choices if not _is_scalar(c)]
        if bad:
            raise SpaceError(
                f"every choice must be null, true/false, a number or a string, but got {bad[0]!r}"
            )
        for i, c in enumerate(choices):
            if any(same_value(c, d) for d in choices[:i]):
                raise SpaceError(f"choices must be distinct, but {c!r} appears twice in {list(choices)}")
        object.__setattr__(self, "choices", choices)

    def suggest(self, trial: Trial) -> Scalar:
        return trial.suggest_categorical(self.path, list(self.choices))  # type: ignore[no-any-return]

    def contains(self, value: Any) -> bool:
        return any(same_value(value, c) for c in self.choices)

    def extremes(self) -> tuple[Scalar, ...]:
        return self.choices

    def describe(self) -> str:
        return f"choices {list(self.choices)}"


def _check_range(low: float, high: float, log: Any, stepped: bool) -> None:
    if not isinstance(log, bool):
        raise SpaceError(f"log must be true or false, but got {log!r}")
    if low > high:
        raise SpaceError(f"`low <= high` must hold, but got low={low}, high={high}")
    if log and low <= 0:
        raise SpaceError(f"`low > 0` must hold for a log range, but got low={low}, high={high}")
    if log and stepped:
        raise SpaceError("log and step cannot be combined (Optuna samples a log range without a grid)")


KNOB_TYPES: dict[str, type[Knob]] = {"float": FloatKnob, "int": IntKnob, "categorical": CategoricalKnob}


def knob_from_dict(path: str, spec: Any) -> Knob:
    """Build a knob from its YAML spec: ``{type: float, low: 0.0, high: 1.0, when: {kd.method: hinton}}``."""
    where = f"knob {path!r}"
    if not isinstance(spec, Mapping):
        raise SpaceError(
            f"{where} must be a mapping like {{type: float, low: 0.0, high: 1.0}}, but got {spec!r}"
        )
    kind = spec.get("type")
    if kind not in KNOB_TYPES:
        raise SpaceError(f"{where}: type must be one of {list(KNOB_TYPES)}, but got {kind!r}")
    cls = KNOB_TYPES[kind]
    own = [f for f in dataclasses.fields(cls) if f.name not in ("path", "when")]
    valid = ["type", *(f.name for f in own), "when"]
    unknown = sorted(str(k) for k in spec if k not in valid)
    if unknown:
        raise SpaceError(f"{where}: unknown key(s) {unknown} for type {kind}; valid keys are {valid}")
    required = [f.name for f in own if f.default is dataclasses.MISSING]
    missing = [name for name in required if name not in spec]
    if missing:
        raise SpaceError(f"{where}: missing key(s) {missing}; a {kind} knob needs {required}")
    when = spec.get("when") or {}
    if not isinstance(when, Mapping):
        raise SpaceError(
            f"{where}: when must map knob paths to values, like {{kd.method: hinton}}, but got {when!r}"
        )
    try:
        conditions = tuple(
            Condition(str(p), tuple(v) if isinstance(v, (list, tuple)) else (v,)) for p, v in when.items()
        )
    except SpaceError as err:
        raise SpaceError(f"{where}: {err}") from None
    kwargs = {k: v for k, v in spec.items() if k not in ("type", "when")}
    return cls(path=path, when=conditions, **kwargs)
