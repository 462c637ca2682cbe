"""Holdout accuracy against trainable parameters: every COMPLETE trial by size, and the references."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from results.cells import plain, text
from results.classes import TEACHER_PREFIX, study_task, teacher_summary
from results.json_view import NOT_IN_JSON
from results.methods import trial_methods
from results.study_data import StudyData
from results.summaries import Trainable, ranked_complete, reference_summary, trainable_params


@dataclass(frozen=True)
class SizedTrial:
    """A COMPLETE trial's size (``trainable``: student + projector = total) and accuracy (seed means)."""

    number: int | None
    trial_id: Any
    method: str | None
    trainable: Trainable
    head: str | None
    objective: float
    holdout_acc_mean: float | None
    holdout_acc_std: float | None
    inner_acc_mean: float | None
    n_seeds: int = field(default=0, metadata=NOT_IN_JSON)  # for the report's "one seed: no spread"


@dataclass(frozen=True)
class SizedReference:
    """A reference method whose size is recorded (``own_classes``: a teacher measured on its own classes;
    ``measured_on``: what a teacher is measured on where it is not every holdout sample, as "own classes",
    "own domain" or "own classes and domain", else None)."""

    method: str
    params: int
    n_seeds: int
    holdout_acc_mean: float
    holdout_acc_std: float | None
    own_classes: bool
    measured_on: str | None = None


@dataclass(frozen=True)
class AccuracyVsParams:
    """The sized COMPLETE trials, smallest first; how many were not sized; the sized references."""

    trials: tuple[SizedTrial, ...]
    unsized: int
    references: tuple[SizedReference, ...]


def accuracy_vs_params(study: StudyData, ranked: pd.DataFrame | None = None) -> AccuracyVsParams:
    """Holdout accuracy (seed mean) against trainable parameters: one point per COMPLETE trial (its method,
    parameters ``student`` + ``projector`` = ``total``, head), smallest first, and each reference method whose
    parameters are recorded (``own_classes``: a teacher measured on its own classes only, not every class).
    ``unsized`` counts the COMPLETE trials whose size was not recorded."""
    ranked = ranked_complete(study) if ranked is None else ranked
    methods = trial_methods(study, ranked)
    seeds = study.seeds.dropna(subset=["trial_id"]).groupby("trial_id")["seed"].nunique()
    points = []
    for row, method in zip(ranked.to_dict("records"), methods):
        number = plain(row.get("number"))
        points.append(SizedTrial(
            number=None if number is None else int(number), trial_id=plain(row.get("trial_id")), method=method,
            trainable=trainable_params(row), head=text(row.get("head")), objective=float(row["_objective"]),
            **{k: plain(row.get(k)) for k in ("holdout_acc_mean", "holdout_acc_std", "inner_acc_mean")},
            n_seeds=int(seeds.get(row["trial_id"], 0))))
    sized = sorted((p for p in points if p.trainable.total is not None), key=lambda p: p.trainable.total or 0)
    task = study_task(study)
    n_classes = task.get("n_classes") if task else None
    teachers = {t.method: t for t in teacher_summary(study)}
    classes = {m: t.classes for m, t in teachers.items()}
    references = []
    for ref in reference_summary(study.reference):
        if ref.params is None or ref.holdout_acc_mean is None:
            continue
        known = classes.get(ref.method)
        own = ref.method.startswith(TEACHER_PREFIX) and not (
            known is not None and isinstance(n_classes, int) and sorted(known) == list(range(n_classes)))
        group = teachers[ref.method].group if ref.method in teachers else None
        parts = [w for w, on in (("classes", own), ("domain", group is not None)) if on]
        references.append(SizedReference(method=ref.method, params=ref.params, n_seeds=ref.n_seeds,
                                         holdout_acc_mean=ref.holdout_acc_mean,
                                         holdout_acc_std=ref.holdout_acc_std, own_classes=own,
                                         measured_on="own " + " and ".join(parts) if parts else None))
    return AccuracyVsParams(trials=tuple(sized), unsized=len(points) - len(sized), references=tuple(references))
