"""Reading one settings value: a mapping's keys, a number, a choice, a list of integers, each refused with a
one-line ConfigError that says what was expected and what came. Every settings class checks with these."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from kdcore.errors import ConfigError


def check_keys(cls: type, data: Mapping[str, Any], where: str) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping, but got {type(data).__name__}: {data!r}")
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted((str(k) for k in data if k not in valid), key=str)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; valid keys are {valid}")


def number(value: Any, name: str, *, integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name} must be {kind}, but got {value!r}")
    if integer:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{name} must be an integer, but got {value!r}")
        return int(value)
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, but got {value!r}")
    return float(value)


def choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {list(choices)}, but got {value!r}")
    return str(value)



def int_tuple(value: Any, name: str, *, allow_empty: bool = False) -> tuple[int, ...]:
    if isinstance(value, (int, str)) or not isinstance(value, (list, tuple)) or (not value and not allow_empty):
        raise ConfigError(f"{name} must be a {'' if allow_empty else 'non-empty '}list of integers, but got {value!r}")
    return tuple(number(v, name, integer=True) for v in value)

