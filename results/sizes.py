"""Holdout accuracy against trainable parameters: every COMPLETE trial by size, and the references."""

from __future__ import annotations

from typing import Any

import pandas as pd

from results.cells import plain, text
from results.classes import TEACHER_PREFIX, study_task, teacher_summary
from results.methods import trial_methods
from results.study_data import StudyData
from results.summaries import ranked_complete, reference_summary, trainable_params


def accuracy_vs_params(study: StudyData, ranked: pd.DataFrame | None = None) -> dict[str, Any]:
    """Holdout accuracy (seed mean) against trainable parameters: one point per COMPLETE trial (its method,
    parameters ``student`` + ``projector`` = ``total``, head), smallest first, and each reference method whose
    parameters are recorded (``own_classes``: a teacher measured on its own classes only, not every class).
    ``unsized`` counts the COMPLETE trials whose size was not recorded."""
    ranked = ranked_complete(study) if ranked is None else ranked
    methods = trial_methods(study, ranked)
    points = []
    for row, method in zip(ranked.to_dict("records"), methods):
        number = plain(row.get("number"))
        points.append({"number": None if number is None else int(number), "trial_id": plain(row.get("trial_id")),
                       "method": method, "trainable": trainable_params(row), "head": text(row.get("head")),
                       "objective": float(row["_objective"]),
                       **{k: plain(row.get(k)) for k in ("holdout_acc_mean", "holdout_acc_std", "inner_acc_mean")}})
    sized = sorted((p for p in points if p["trainable"]["total"] is not None), key=lambda p: p["trainable"]["total"])
    task = study_task(study)
    n_classes = task.get("n_classes") if task else None
    classes = {t["method"]: t["classes"] for t in teacher_summary(study)}
    references = []
    for ref in reference_summary(study.reference):
        if ref["params"] is None or ref["holdout_acc_mean"] is None:
            continue
        known = classes.get(ref["method"])
        own = ref["method"].startswith(TEACHER_PREFIX) and not (
            known is not None and isinstance(n_classes, int) and sorted(known) == list(range(n_classes)))
        references.append({"method": ref["method"], "params": ref["params"], "n_seeds": ref["n_seeds"],
                           "holdout_acc_mean": ref["holdout_acc_mean"], "holdout_acc_std": ref["holdout_acc_std"],
                           "own_classes": own})
    return {"trials": sized, "unsized": len(points) - len(sized), "references": references}
