"""What differs between the two sides of a comparison: the KD term, the recipe (every setting that is not
``kd.*``), the network's size and the seeds, as data and as one line of text ("KD term only (same recipe,
seeds, folds)", "KD term, optimizer adam→adamw", "network size: student 19,562 vs baseline 5,178
parameters").

A difference ``a→b`` reads "the trial's value, then the other side's". Two trials of one study share every
fixed setting, so their recipes differ only in the non-``kd.*`` knobs; the mixed baseline has the space's
fixed baseline settings, so it is compared setting by setting with the trial's student.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from results.cells import plain
from results.study_data import StudyData

KD_PREFIX = "kd."
CE_BASELINE = "ce-baseline"  # the folder of a study's CE-only search (``--tune-baseline``, tune.reference)
_MISSING = "inactive"  # a knob that one side has and the other has not (a condition on it failed)


@dataclass(frozen=True)
class Change:
    """One setting that differs: its name, the trial's value, the other side's."""

    setting: str
    trial: Any
    other: Any

    def text(self) -> str:
        return f"{self.setting} {_value(self.trial)}→{_value(self.other)}"


@dataclass(frozen=True)
class Sides:
    """What differs between a trial and what it is compared with; ``differs`` says it in one line.

    ``recipe_changes`` is None where the recipes could not be compared (the stored space does not parse, or
    the other side's settings are not recorded); ``same_size`` None where a size is not recorded.
    """

    kd_term: bool
    recipe_changes: tuple[Change, ...] | None
    same_recipe: bool | None
    student_params: int | None
    reference_params: int | None
    same_size: bool | None
    same_seeds: bool
    differs: str


def sides(*, kd_term: bool, changes: tuple[Change, ...] | None, trial_params: int | None,
          other_params: int | None, other_name: str, same_seeds: bool) -> Sides:
    """The ``Sides`` of a comparison, with its ``differs`` text."""
    same_size = None if trial_params is None or other_params is None else trial_params == other_params
    parts = ["KD term"] if kd_term else []
    if changes:
        parts += [c.text() for c in changes]
    if same_size is False:
        parts.append(f"network size: student {trial_params:,} vs {other_name} {other_params:,} parameters")
    same = [w for w, ok in (("recipe", changes is not None and not changes), ("size", same_size),
                            ("seeds, folds", same_seeds)) if ok]
    if not parts:
        text = "nothing recorded differs" + (f" (same {', '.join(same)})" if same else "")
    elif len(parts) == 1 and kd_term and same_size is not False and changes is not None and same_seeds:
        text = "KD term only (same recipe, seeds, folds)"
    else:
        text = ", ".join(parts)
        if changes is None:
            text += "; recipes not compared (not recorded)"
        if not same_seeds:
            text += "; seeds differ (paired on the seeds both have)"
    return Sides(kd_term=kd_term, recipe_changes=changes, same_recipe=None if changes is None else not changes,
                 student_params=trial_params, reference_params=other_params, same_size=same_size,
                 same_seeds=same_seeds, differs=text)


def recipe(params: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's recipe: its knobs that are not ``kd.*`` (the study's fixed settings are shared)."""
    return {k: v for k, v in params.items() if not k.startswith(KD_PREFIX)}


def recipe_changes(trial: Mapping[str, Any], other: Mapping[str, Any]) -> tuple[Change, ...]:
    """The non-``kd.*`` knobs whose values differ between two trials' params (``inactive`` where absent)."""
    mine, theirs = recipe(trial), recipe(other)
    keys = list(mine) + [k for k in theirs if k not in mine]
    return tuple(Change(_short(k), mine.get(k, _MISSING), theirs.get(k, _MISSING)) for k in keys
                 if mine.get(k, _MISSING) != theirs.get(k, _MISSING))


def baseline_changes(study: StudyData, params: Mapping[str, Any]) -> tuple[Change, ...] | None:
    """The settings in which the trial's student differs from the mixed baseline (the space's fixed baseline
    settings); None where the stored space does not parse or does not take these params."""
    if study.space is None:
        return None
    try:
        student = study.space.experiment(dict(params)).student
        baseline = study.space.base.baseline
    except Exception:  # noqa: BLE001 - a stored space this kdcore rejects, or params it no longer takes
        return None
    mine, theirs = dataclasses.asdict(student), dataclasses.asdict(baseline)
    return tuple(Change(k, mine[k], theirs[k]) for k in mine if mine[k] != theirs.get(k))


def ce_baseline_params(study: StudyData, number: int | None) -> dict[str, Any] | None:
    """The knobs of trial ``number`` of the study's CE-only search (``DIR/NAME/ce-baseline``), the tuned
    baseline; None where that search or trial is not on disk."""
    from results.errors import ResultsError
    from results.reader import read_table

    folder = study.root / CE_BASELINE
    if number is None or not (folder / "results").is_dir():
        return None
    try:
        trials = read_table(folder, "trials")
    except ResultsError:
        return None
    if "number" not in trials.columns:
        return None
    rows = trials[trials["number"] == number]
    if rows.empty:
        return None
    row = rows.iloc[-1]
    columns = [c for c in trials.columns if str(c).startswith("param_")]
    return {c.removeprefix("param_").replace("__", "."): plain(row[c]) for c in columns
            if plain(row[c]) is not None}


def uses_kd(study: StudyData, params: Mapping[str, Any]) -> bool:
    """Whether a trial with ``params`` has a KD term (its ``kd.method`` is not ``none``)."""
    from kdcore import NO_KD

    method = params.get(f"{KD_PREFIX}method")
    if method is None and study.space is not None:
        try:
            method = study.space.base.kd.method
        except Exception:  # noqa: BLE001 - a stored space whose fixed settings this kdcore rejects
            method = None
    return str(method) != NO_KD


def _short(setting: str) -> str:
    """``student.optimizer`` -> ``optimizer``: a trial's recipe knobs are the student's."""
    return setting.removeprefix("student.")


def _value(value: Any) -> str:
    value = plain(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(map(str, value)) + ")"
    return "none" if value is None else str(value)
