"""The ranking of a study's trials and their comparison with its references (baseline, ablation, tuned
baseline), computed from the tables of ``results.study_data``.

The comparison with a reference pairs seed s of a trial with seed s of the reference (the same data split
and initialisation seed) and tests the per-seed holdout differences (``results.stats.paired_test``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from results.cells import first_int, knob_value, plain, seed_accuracies, text
from results.json_view import FLATTEN
from results.recipe import Change, Sides, baseline_changes, ce_baseline_params, recipe_changes, sides, uses_kd
from results.schema import STATUSES
from results.stats import PairedTest, mean_std, paired_test
from results.study_data import StudyData

# The references a best student is compared with, the one that changes least first: the best configuration
# without its KD term (same recipe, seeds and size: the comparison that isolates distillation), a baseline
# tuned with the student's budget, the fixed-recipe mixed baseline. A reference of another network size
# goes after every one of the student's size (``reference_comparisons``).
COMPARISONS = {
    "ablation": "the best configuration retrained without its KD term, same recipe and seeds",
    "tuned_baseline": "the best of a CE-only search with the same sampler (--tune-baseline)",
    "baseline": "the mixed baseline with the space's fixed settings",
}


@dataclass(frozen=True)
class Trainable:
    """One network's trainable parameters: ``total``, of which ``projector`` (SimKD's, else None) and
    ``student`` (the rest: the network itself); None where not recorded."""

    student: int | None
    projector: int | None
    total: int | None


@dataclass(frozen=True)
class ReferenceStats:
    """A reference method over its seeds: inner and holdout mean and sample std, one network's parameters."""

    method: str
    n_seeds: int
    inner_acc_mean: float | None
    inner_acc_std: float | None
    holdout_acc_mean: float | None
    holdout_acc_std: float | None
    params: int | None


@dataclass(frozen=True)
class TopTrial:
    """One of the best COMPLETE trials: its knobs, size, accuracies over seeds and the test against the
    baseline (None without baseline seeds to pair with)."""

    rank: int
    number: int | None
    trial_id: Any
    params: dict[str, Any]
    student_params: int | None
    projector_params: int | None
    head: str | None
    objective: float
    inner_acc_mean: float | None
    inner_acc_std: float | None
    holdout_acc_mean: float | None
    holdout_acc_std: float | None
    inner_loss_mean: float | None
    holdout_loss_mean: float | None
    best_epoch: float | None
    epochs_run: int | None
    wall_seconds: float | None
    n_seeds: int
    vs_baseline: PairedTest | None


@dataclass(frozen=True)
class Comparison:
    """The best trial minus one reference (``COMPARISONS``), paired by seed; ``sides`` says what differs
    between the two (``differs``, one line), ``headline`` whether it is the comparison the study reports."""

    meaning: str
    trial_number: int | None
    holdout_acc_mean: float | None
    holdout_acc_std: float | None
    test: PairedTest = field(metadata=FLATTEN)
    sides: Sides | None = field(default=None, metadata=FLATTEN)
    headline: bool = False


def status_counts(trials: pd.DataFrame) -> dict[str, int]:
    """Trials by status (every known status, zeros included, then any other) and ``total``."""
    counts = trials["status"].value_counts(dropna=False) if len(trials) else pd.Series(dtype="int64")
    out = {s: int(counts.get(s, 0)) for s in STATUSES}
    for status, count in counts.items():
        key = "UNKNOWN" if pd.isna(status) else str(status)
        if key not in out:
            out[key] = out.get(key, 0) + int(count)
    out["total"] = len(trials)
    return out


def ranked_complete(study: StudyData) -> pd.DataFrame:
    """COMPLETE trials with a finite objective, best first (ties: lower trial number first)."""
    trials, column = study.trials, study.objective_column
    objective = pd.to_numeric(trials[column], errors="coerce")
    done = trials[(trials["status"] == "COMPLETE") & np.isfinite(objective.to_numpy(dtype=float))].copy()
    done["_objective"] = objective[done.index].astype(float)
    done["_number"] = pd.to_numeric(done["number"], errors="coerce").fillna(np.inf)
    return done.sort_values(["_objective", "_number"], ascending=[not study.maximize, True], kind="mergesort")


def trial_params(row: Mapping[str, Any], study: StudyData) -> dict[str, Any]:
    """``{knob path: value}`` of the knobs active in a trials row (inactive knobs are null there)."""
    knobs = {k.path: k for k in study.space.knobs} if study.space is not None else {}
    out: dict[str, Any] = {}
    for column, path in study.param_columns().items():
        value = plain(row.get(column))
        if value is None:
            continue
        out[path] = knob_value(value, knobs.get(path))
    return out


def reference_summary(reference: pd.DataFrame) -> list[ReferenceStats]:
    """Per reference method (baseline first, then the others by name): seeds, inner and holdout mean and
    std, and the parameters of one network (None where not recorded)."""
    if reference.empty:
        return []
    out = []
    methods = sorted(reference["method"].dropna().unique(), key=lambda m: (m != "baseline", str(m)))
    for method in methods:
        rows = reference[reference["method"] == method]
        inner_mean, inner_std = mean_std(rows["inner_acc"])
        holdout_mean, holdout_std = mean_std(rows["holdout_acc"])
        params = first_int(rows["params"]) if "params" in rows.columns else None
        out.append(ReferenceStats(method=str(method), n_seeds=int(rows["seed"].nunique()),
                                  inner_acc_mean=inner_mean, inner_acc_std=inner_std,
                                  holdout_acc_mean=holdout_mean, holdout_acc_std=holdout_std, params=params))
    return out


def baseline_summary(reference: pd.DataFrame) -> ReferenceStats | None:
    """The mixed baseline's holdout and inner accuracy over seeds, or None if it is not recorded."""
    return next((entry for entry in reference_summary(reference) if entry.method == "baseline"), None)


def top_configurations(study: StudyData, top_k: int, ranked: pd.DataFrame | None = None) -> list[TopTrial]:
    """The ``top_k`` best COMPLETE trials with their spread and the paired comparison with the baseline."""
    ranked = ranked_complete(study) if ranked is None else ranked
    top = ranked.head(top_k)
    baseline = study.reference[study.reference["method"] == "baseline"]
    baseline_acc = seed_accuracies(baseline)
    seeds = study.seeds[study.seeds["trial_id"].isin(top["trial_id"])]
    by_trial = {tid: rows for tid, rows in seeds.groupby("trial_id", sort=False)}
    out = []
    for rank, row in enumerate(top.to_dict("records"), start=1):
        rows = by_trial.get(row["trial_id"], seeds.iloc[:0])
        number, epochs_run = plain(row.get("number")), plain(row.get("epochs_run"))
        sizes = trainable_params(row)
        out.append(TopTrial(
            rank=rank, number=int(number) if number is not None else None, trial_id=plain(row.get("trial_id")),
            params=trial_params(row, study), student_params=sizes.total, projector_params=sizes.projector,
            head=text(row.get("head")), objective=float(row["_objective"]),
            **{k: plain(row.get(k)) for k in ("inner_acc_mean", "inner_acc_std", "holdout_acc_mean",
                                              "holdout_acc_std", "inner_loss_mean", "holdout_loss_mean",
                                              "best_epoch", "wall_seconds")},
            epochs_run=None if epochs_run is None else int(epochs_run), n_seeds=int(rows["seed"].nunique()),
            vs_baseline=paired_test(seed_accuracies(rows), baseline_acc) if baseline_acc else None))
    return out


def reference_comparisons(study: StudyData, best: TopTrial | None) -> dict[str, Comparison]:
    """The best trial minus each reference of ``COMPARISONS`` that the study recorded, paired by seed, each
    with what differs between the two sides; those of the student's size first, the first the headline.

    The ablation counts only if it is of this very trial (it is retrained whenever the best trial changes).
    """
    if not best:
        return {}
    mine = seed_accuracies(study.seeds[study.seeds["trial_id"] == best.trial_id])
    kd_term = uses_kd(study, best.params)
    out: list[tuple[str, Comparison]] = []
    for method, meaning in COMPARISONS.items():
        rows = study.reference[study.reference["method"] == method]
        if method == "ablation":
            rows = rows[pd.to_numeric(rows["trial_number"], errors="coerce") == best.number]
        theirs = seed_accuracies(rows)
        test = paired_test(mine, theirs) if theirs and mine else None
        if test is None:
            continue
        number = plain(rows["trial_number"].iloc[0]) if len(rows) else None
        number = None if number is None else int(number)
        if method == "ablation":
            changes: tuple[Change, ...] | None = ()
        elif method == "tuned_baseline":
            other = ce_baseline_params(study, number)
            changes = None if other is None else recipe_changes(best.params, other)
        else:
            changes = baseline_changes(study, best.params)
        name = {"tuned_baseline": "tuned baseline", "baseline": "baseline"}.get(method, method)
        holdout, holdout_sd = mean_std(rows["holdout_acc"])
        out.append((method, Comparison(
            meaning=meaning, trial_number=number, holdout_acc_mean=holdout, holdout_acc_std=holdout_sd, test=test,
            sides=sides(kd_term=kd_term, changes=changes, trial_params=best.student_params,
                        other_params=first_int(rows["params"]), other_name=name,
                        same_seeds=set(mine) == set(theirs)))))
    out.sort(key=lambda mc: mc[1].sides is not None and mc[1].sides.same_size is False)  # stable: as above
    return {m: replace(c, headline=i == 0) for i, (m, c) in enumerate(out)}


def trainable_params(row: Mapping[str, Any]) -> Trainable:
    """A trials row's trainable parameters (``student_params`` is the total); None where not recorded."""
    total, projector = plain(row.get("student_params")), plain(row.get("projector_params"))
    total = None if total is None else int(total)
    projector = None if projector is None else int(projector)
    return Trainable(student=None if total is None else total - (projector or 0), projector=projector,
                     total=total)
