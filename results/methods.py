"""The comparison of distillation methods: in a study that searches ``kd.method``, each method's best
COMPLETE trial against the same recipe without KD (its own ablation, or the best ``none`` trial when every
non-``kd.*`` knob is the same), paired by seed; without one, no difference is given and the entry says why.

Every trial of a study runs the same seeds and folds, so seed s of one method pairs with seed s of another.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from kdcore import (
    NO_KD,  # the kd.method that trains on hard labels only: what the others are measured against
)
from results.cells import first_int, plain, seed_accuracies, text
from results.json_view import FLATTEN
from results.recipe import Change, Sides, recipe_changes, sides
from results.schema import param_column
from results.stats import PairedTest, finite, paired_test
from results.study_data import StudyData
from results.summaries import Trainable, ranked_complete, status_counts, trainable_params, trial_params

METHOD_KNOB = "kd.method"


@dataclass(frozen=True)
class MethodBest:
    """A method's best COMPLETE trial by the objective."""

    number: int | None
    trial_id: Any
    objective: float
    params: dict[str, Any]
    inner_acc_mean: float | None
    inner_acc_std: float | None
    holdout_acc_mean: float | None
    holdout_acc_std: float | None
    n_seeds: int
    seeds: list[int]
    trainable: Trainable
    head: str | None


@dataclass(frozen=True)
class SeedDiff:
    """Seed s of a method's best trial minus seed s of the comparator, on holdout accuracy."""

    seed: int
    diff: float


@dataclass(frozen=True)
class MethodDifference:
    """A method's best trial against the comparator: the paired test and the differences it is made of."""

    test: PairedTest = field(metadata=FLATTEN)
    seed_diffs: tuple[SeedDiff, ...] = ()


@dataclass(frozen=True)
class MethodEntry:
    """One ``kd.method``: its trials by status, its best trial (None: no COMPLETE one) and ``vs``, that trial
    minus the same recipe without KD (None: no same-recipe comparison, or no common seeds).

    ``compared_with`` names that other side: ``ablation`` (trial ``compared_trial`` retrained without its KD
    term) or ``none`` (the best ``none`` trial, whose every non-``kd.*`` knob is the same); ``differs`` says
    what differs between the two sides, or why there is no same-recipe comparison; ``sides`` holds it as data.
    """

    method: str
    trials: dict[str, int]
    best: MethodBest | None
    vs: MethodDifference | None = None
    compared_with: str | None = None
    compared_trial: int | None = None
    differs: str | None = None
    sides: Sides | None = None


@dataclass(frozen=True)
class Comparator:
    """What the methods are measured against: the best ``none`` trial, or the ablation."""

    kind: str
    method: str
    trial_number: int | None
    meaning: str


@dataclass(frozen=True)
class MethodComparison:
    """The comparison of the ``kd.method`` values a study searched (``method_comparison``)."""

    knob: str
    methods: tuple[MethodEntry, ...]
    against: Comparator | None
    shared_seeds: bool
    seeds: list[int]
    note: str


def _fixed_method(study: StudyData) -> str | None:
    """The space's fixed ``kd.method`` (what a trial ran where the knob is absent or inactive)."""
    if study.space is None:
        return None
    try:
        return str(study.space.base.kd.method)
    except Exception:  # noqa: BLE001 - a stored space whose fixed settings this kdcore rejects
        return None


def trial_methods(study: StudyData, trials: pd.DataFrame | None = None) -> pd.Series:
    """The ``kd.method`` of each row of ``trials`` (the study's trials by default): its knob value, else the
    space's fixed method; None where neither is known."""
    trials = study.trials if trials is None else trials
    column = param_column(METHOD_KNOB)
    fixed = _fixed_method(study)
    values = trials[column] if column in trials.columns else [None] * len(trials)
    return pd.Series([text(v) or fixed for v in values], index=trials.index, dtype=object)


def kd_methods(study: StudyData) -> list[str] | None:
    """The ``kd.method`` values a study compares: the choices of a categorical ``kd.method`` knob (then any
    other its trials ran), or the methods its trials ran when there are several; None when it compares none."""
    knob = next((k for k in study.space.knobs if k.path == METHOD_KNOB), None) if study.space is not None else None
    seen = list(dict.fromkeys(m for m in trial_methods(study) if m is not None))
    if knob is not None and knob.kind == "categorical":
        choices = [str(c) for c in knob.choices]
        return choices + [m for m in seen if m not in choices]
    return seen if len(seen) > 1 else None


def method_comparison(study: StudyData, ranked: pd.DataFrame | None = None) -> MethodComparison | None:
    """Each ``kd.method``'s best COMPLETE trial (by the objective) against the same recipe without KD: the
    ablation of that trial (a reference row ``ablation`` with its ``trial_number``) when recorded, else the
    best ``none`` trial only if its recipe (every non-``kd.*`` knob) is the same, else nothing (``differs``
    says so): per-seed holdout differences, paired by seed, with ``paired_test``. None when the study
    compares no methods (``kd_methods``).

    ``methods`` holds one entry per method: its trial counts by status, its best trial (accuracies, the
    trainable parameters, the head it predicts through) or None, and ``vs`` (the paired test with the
    per-seed differences; None for ``none`` itself, without a same-recipe comparison or common seeds) with
    what it was compared with and what differs. ``against`` names the study's comparator as a whole (the
    best ``none`` trial, else the ablation of the best trial), which a method is measured against only where
    the recipes match; ``shared_seeds`` says whether every best trial (and the comparator) ran the same seeds.
    """
    methods = kd_methods(study)
    if methods is None:
        return None
    ranked = ranked_complete(study) if ranked is None else ranked
    of_ranked, of_all = trial_methods(study, ranked), trial_methods(study)
    entries: list[MethodEntry] = []
    accuracies: dict[str, dict[int, float]] = {}
    for method in methods:
        rows = ranked[of_ranked == method]
        best = None
        if len(rows):
            row = rows.iloc[0].to_dict()
            accuracies[method] = seed_accuracies(study.seeds[study.seeds["trial_id"] == row["trial_id"]])
            number = plain(row.get("number"))
            best = MethodBest(
                number=None if number is None else int(number), trial_id=plain(row.get("trial_id")),
                objective=float(row["_objective"]), params=trial_params(row, study),
                **{k: plain(row.get(k)) for k in ("inner_acc_mean", "inner_acc_std", "holdout_acc_mean",
                                                  "holdout_acc_std")},
                n_seeds=len(accuracies[method]), seeds=sorted(accuracies[method]), trainable=trainable_params(row),
                head=text(row.get("head")))
        entries.append(MethodEntry(method=method, trials=status_counts(study.trials[of_all == method]), best=best))

    against: Comparator | None = None
    if accuracies.get(NO_KD):
        none_best = next(e.best for e in entries if e.method == NO_KD)
        against = Comparator(kind=NO_KD, method=NO_KD, trial_number=none_best.number if none_best else None,
                             meaning=f"the best `{NO_KD}` trial (hard labels only, searched like the others)")
        theirs = accuracies[NO_KD]
    else:
        rows = study.reference[study.reference["method"] == "ablation"]
        if len(ranked) and "trial_number" in rows:  # a study may hold the ablation of each method's best
            best_rows = rows[rows["trial_number"] == plain(ranked.iloc[0].get("number"))]
            rows = best_rows if len(best_rows) else rows
        theirs = seed_accuracies(rows)
        if theirs:
            number = first_int(rows["trial_number"])
            why = "not searched" if NO_KD not in methods else "without a COMPLETE trial"
            against = Comparator(kind="ablation", method="ablation", trial_number=number,
                                 meaning=(f"the ablation (`{NO_KD}` {why}): the study's best trial"
                                          f"{'' if number is None else f' (#{number})'} retrained without its KD "
                                          "term, same recipe and seeds"))
    compared, sides_seen = [], []
    none_best = next((e.best for e in entries if e.method == NO_KD), None)
    for entry in entries:
        entry, other = _same_recipe(study, entry, accuracies.get(entry.method, {}), none_best,
                                    accuracies.get(NO_KD, {}))
        compared.append(entry)
        if other:
            sides_seen.append(other)
    seed_sets = {tuple(sorted(a)) for a in accuracies.values()}
    seed_sets |= {tuple(sorted(a)) for a in sides_seen}
    if against is not None and theirs:
        seed_sets.add(tuple(sorted(theirs)))
    shared = len(seed_sets) <= 1
    seeds = sorted(next(iter(seed_sets))) if shared and seed_sets else \
        [int(s) for s in study.metadata.get("seeds") or []]
    return MethodComparison(knob=METHOD_KNOB, methods=tuple(compared), against=against, shared_seeds=shared,
                            seeds=seeds, note=_seeds_note(shared, seeds))


def _same_recipe(study: StudyData, entry: MethodEntry, mine: dict[int, float], none_best: MethodBest | None,
                 none_acc: dict[int, float]) -> tuple[MethodEntry, dict[int, float]]:
    """``entry`` with its best trial minus the same recipe without KD: the ablation of that very trial when
    the reference table holds one, else the best ``none`` trial when every non-``kd.*`` knob is the same,
    else no comparison (``differs`` says why). Returns the entry and the other side's ``{seed: accuracy}``."""
    best = entry.best
    if best is None or not mine:
        return entry, {}
    if entry.method == NO_KD:
        return replace(entry, differs="no KD term: the comparator of the methods that have one"), {}
    rows = study.reference[study.reference["method"] == "ablation"]
    rows = rows[pd.to_numeric(rows["trial_number"], errors="coerce") == best.number]
    theirs = seed_accuracies(rows)
    if theirs:
        kind, number, size, name = "ablation", best.number, first_int(rows["params"]), "ablation"
        changes: tuple[Change, ...] = ()
    elif none_best is not None and none_acc and not recipe_changes(best.params, none_best.params):
        kind, number, size, name, theirs = NO_KD, none_best.number, none_best.trainable.total, f"`{NO_KD}`", none_acc
        changes = ()
    else:
        why = f"no ablation of #{best.number} recorded"
        if none_best is not None:
            diff = ", ".join(c.text() for c in recipe_changes(best.params, none_best.params))
            why += f", and the best `{NO_KD}` trial (#{none_best.number}) has another recipe ({diff})"
        return replace(entry, differs=f"no same-recipe comparison: {why}"), {}
    test = paired_test(mine, theirs)
    what = sides(kd_term=True, changes=changes, trial_params=best.trainable.total, other_params=size,
                 other_name=name, same_seeds=set(mine) == set(theirs))
    diffs = () if test is None else tuple(SeedDiff(s, mine[s] - theirs[s]) for s in sorted(mine)
                                          if s in theirs and finite(mine[s]) and finite(theirs[s]))
    return replace(entry, vs=None if test is None else MethodDifference(test, diffs), compared_with=kind,
                   compared_trial=number, differs=what.differs, sides=what), theirs


def _seeds_note(shared: bool, seeds: list[int]) -> str:
    if shared:
        listed = ", ".join(map(str, seeds)) if seeds else "none recorded yet"
        return (f"Every method's trials share the study's seeds ({listed}) and, seed by seed, the same folds "
                "(data split and initialisation), so each difference pairs seed s of one method with seed s of "
                "the other.")
    return ("The methods' best trials do not all hold the same seeds: each difference uses the seeds both "
            "have (see n).")
