"""What the report's figures rest on, said before any of them: how many holdout samples there are (so what
one sample is worth), what ± means, and the inner − holdout gap of the best trial beside the baseline's.

The holdout size is read from the metadata where the study recorded it (``evaluation_sizes``:
``holdout_points``, ``holdout_class_points``, as ``tune.plan.evaluation_sizes`` writes them). Otherwise it is inferred: an accuracy on n samples is a whole number of samples out of n, so
every recorded holdout accuracy (over every class: students and the references that predict every class)
is a multiple of 1/d for a d that divides n, and each class's accuracy likewise gives its count. The
inference says so, because a larger multiple of what it finds cannot be ruled out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from results.cells import list_cell
from results.stats import finite
from results.study_data import StudyData
from results.summaries import ReferenceStats, TopTrial

SPREAD = "sample sd over seeds of one fixed holdout; not a confidence interval"
EVERY_CLASS = ("baseline", "ablation", "tuned_baseline")  # references measured on every holdout sample
# Accuracies are stored rounded to 9 decimals (kdcore.result.ACC_DECIMALS): k/n is known to 5e-10, and two
# distinct fractions k/n, k'/n' differ by at least 1/(n n') > 1.6e-9 up to 25,000 samples, more than twice
# that, so an n that fits gives the stored accuracies exactly, never by accident.
ROUNDING = 6e-10
MAX_HOLDOUT = 25_000
_CHUNK = 2_000


@dataclass(frozen=True)
class HoldoutSize:
    """The holdout's size ``n`` (None: unknown), per class where known, and where it comes from:
    ``recorded`` (the metadata), ``inferred`` (from the accuracies; see the module) or ``unknown``."""

    n: int | None
    class_counts: tuple[int, ...] | None
    source: str
    one_sample: float | None  # 1 / n, as a fraction of accuracy
    note: str


@dataclass(frozen=True)
class Gap:
    """Inner minus holdout accuracy (seed means) of one side."""

    who: str
    inner_acc_mean: float | None
    holdout_acc_mean: float | None
    gap: float | None


@dataclass(frozen=True)
class Header:
    """The report's header: the holdout size, what ± means, the inner − holdout gaps and why they arise."""

    holdout: HoldoutSize
    spread: str
    gaps: tuple[Gap, ...]
    gap_why: str


def report_header(study: StudyData, best: TopTrial | None, baseline: ReferenceStats | None) -> Header:
    gaps = []
    if best is not None:
        gaps.append(_gap(f"best trial #{best.number}", best.inner_acc_mean, best.holdout_acc_mean))
    if baseline is not None:
        gaps.append(_gap("mixed baseline", baseline.inner_acc_mean, baseline.holdout_acc_mean))
    return Header(holdout=holdout_size(study), spread=SPREAD, gaps=tuple(gaps), gap_why=_gap_why(study))


def holdout_size(study: StudyData) -> HoldoutSize:
    """The holdout's size: recorded in the metadata, else inferred from the accuracies, else unknown."""
    meta = study.metadata
    sizes = meta.get("evaluation_sizes") if isinstance(meta.get("evaluation_sizes"), dict) else {}
    recorded = meta.get("holdout_size", sizes.get("holdout_points"))  # tune.plan.evaluation_sizes records it
    per_class = meta.get("holdout_class_counts", sizes.get("holdout_class_points"))
    counts = tuple(int(c) for c in per_class) if isinstance(per_class, list) and per_class else None
    if isinstance(recorded, int) and recorded > 0:
        return HoldoutSize(recorded, counts, "recorded", 1 / recorded, "recorded by the study")
    every = study.reference[study.reference["method"].isin(EVERY_CLASS)]
    overall = _denominator([*study.seeds["holdout_acc"], *every["holdout_acc"]])
    if overall is None:
        return HoldoutSize(None, None, "unknown", None,
                           "not recorded by the study, and the accuracies do not give it")
    by_class = _class_denominators([*study.seeds["holdout_class_acc"], *every["holdout_class_acc"]])
    n = overall
    if by_class and sum(by_class) % overall == 0:
        n = sum(by_class)  # each class count is a multiple of its own denominator, so n is at least their sum
    else:
        by_class = None
    split = f", per class {' + '.join(map(str, by_class))}" if by_class and len(by_class) > 1 else ""
    return HoldoutSize(n, None if by_class is None else tuple(by_class), "inferred", 1 / n,
                       f"not recorded by the study; inferred: every recorded holdout accuracy is a whole number "
                       f"of samples out of {n:,}{split}; a multiple of it cannot be ruled out")


def _denominator(values: list[Any]) -> int | None:
    """The least n (<= MAX_HOLDOUT) for which every finite value is a whole number k out of n, to the
    rounding of the tables (``ROUNDING``); None when no such n exists or there are no values."""
    v = np.array([float(x) for x in values if finite(x)], dtype=float)
    if v.size == 0:
        return None
    for start in range(1, MAX_HOLDOUT + 1, _CHUNK):
        n = np.arange(start, min(start + _CHUNK, MAX_HOLDOUT + 1), dtype=float)[:, None]  # (candidates, 1)
        scaled = n * v[None, :]  # (candidates, values): k where n is the size
        fits = (np.abs(scaled - np.rint(scaled)) <= n * ROUNDING).all(axis=1)
        if fits.any():
            return int(n[int(np.argmax(fits)), 0])
    return None


def _class_denominators(cells: list[Any]) -> list[int] | None:
    """Per class, the ``_denominator`` of its accuracies in the per-class lists (None if any class lacks one)."""
    lists = [c for c in map(list_cell, cells) if c]
    if not lists or len({len(c) for c in lists}) != 1:
        return None
    out = [_denominator([c[k] for c in lists]) for k in range(len(lists[0]))]
    return None if any(d is None for d in out) else [int(d) for d in out if d is not None]


def _gap(who: str, inner: float | None, holdout: float | None) -> Gap:
    return Gap(who, inner, holdout, None if inner is None or holdout is None else inner - holdout)


def _gap_why(study: StudyData) -> str:
    if study.metadata.get("protocol") == "seed":
        return ("Under the seed protocol the selection set is the holdout itself, so the holdout figures are "
                "those the epoch was chosen on: optimistic, not an independent estimate.")
    return ("Inner accuracy is measured on the folds of the training set that chose the epoch (and, for a "
            "trial, the configuration), so it is optimistic for the model it chose; the holdout is another "
            "sample, of another size, so the gap also carries the sampling noise of both sets and has either "
            "sign. A gap the baseline shares is not caused by the search.")
