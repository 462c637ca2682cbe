"""The statistics of ``kdtune analyse``: one sample-std rule, the paired test, rank correlation (scipy.stats).

A trial is compared with a reference by pairing seed s of one with seed s of the other (the same data split
and initialisation seed) and testing the per-seed holdout differences with an exact sign-flip permutation
test (``scipy.stats.permutation_test``): with a handful of seeds it assumes nothing about their
distribution, and its p-value can be checked by hand (5 seeds, all differences of one sign:
p = 2 / 2**5 = 0.0625, the smallest possible). The 95 % interval of the mean difference is Student's t.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

MAX_EXACT_SEEDS = 16  # 2**16 sign assignments; beyond that the permutation test samples them
SIGN_FLIP_RESAMPLES = 2**MAX_EXACT_SEEDS  # scipy enumerates every assignment when 2**n <= n_resamples
ONE_SEED = "one seed: no spread"  # what a report prints instead of a spread that one value cannot have


def finite(value: Any) -> bool:
    """Whether ``value`` is a number that is neither NaN nor infinite."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def sample_std(values: Iterable[Any]) -> float | None:
    """The sample standard deviation (ddof=1) of the finite ``values``; None below two of them.

    kdtune's one rule for a spread over seeds: one seed has no spread (None, never 0), so a report says
    ``one seed: no spread`` rather than ``± 0.00``.
    """
    v = np.array([float(x) for x in values if finite(x)])
    return float(v.std(ddof=1)) if v.size > 1 else None


def mean_std(values: Iterable[Any]) -> tuple[float | None, float | None]:
    """Mean and ``sample_std`` of the finite ``values`` (None, None when there are none)."""
    v = [float(x) for x in values if finite(x)]
    if not v:
        return None, None
    return float(np.mean(v)), sample_std(v)


def _mean(x: np.ndarray, axis: int) -> np.ndarray:
    return np.mean(x, axis=axis)


def sign_flip_p_value(diffs: Any, *, max_exact: int = MAX_EXACT_SEEDS, n_resamples: int = SIGN_FLIP_RESAMPLES,
                      random_state: int = 0) -> float:
    """Two-sided p-value of "the paired differences are symmetric about 0" (sign-flip permutation test).

    ``scipy.stats.permutation_test`` on the one sample of differences flips their signs: exactly over all
    ``2**n`` assignments for ``n <= max_exact``, the observed one included; otherwise ``n_resamples`` random
    assignments drawn with ``random_state``, each tail counted with the observed one, so p is never 0.
    Two-sided is twice the smaller tail (at most 1); the null distribution is symmetric, so for the exact
    test this is the share of assignments whose mean is at least as far from 0 as the observed one.
    """
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 1 or d.size == 0 or not np.isfinite(d).all():
        raise ValueError(f"diffs must be a non-empty 1-D array of finite numbers, but got {diffs!r}")
    if d.size == 1:
        return 1.0  # the two assignments, +d and -d, are equally extreme (scipy needs two observations)
    resamples = 2**d.size if d.size <= max_exact else n_resamples
    result = stats.permutation_test((d,), _mean, permutation_type="samples", vectorized=True,
                                    n_resamples=resamples, alternative="two-sided",
                                    rng=np.random.default_rng(random_state))
    return float(result.pvalue)


def t_interval(diffs: Any, confidence: float = 0.95) -> tuple[float, float] | None:
    """The Student t interval of the mean of ``diffs`` (``scipy.stats.t``); None below two values."""
    d = np.asarray(diffs, dtype=float)
    if d.size < 2:
        return None
    mean = float(d.mean())
    half = float(stats.t.ppf(0.5 + confidence / 2, d.size - 1)) * float(d.std(ddof=1)) / math.sqrt(d.size)
    return mean - half, mean + half


@dataclass(frozen=True)
class PairedTest:
    """Trial minus baseline on per-seed holdout accuracy: mean difference, 95 % t interval, p-value."""

    n: int
    diff_mean: float
    ci95: tuple[float, float] | None
    p_value: float
    test: str

    def to_dict(self) -> dict[str, Any]:
        return {"diff_mean": self.diff_mean, "ci95": list(self.ci95) if self.ci95 else None,
                "p_value": self.p_value, "test": self.test, "n_seeds": self.n}


def paired_test(trial: Mapping[int, float], baseline: Mapping[int, float]) -> PairedTest | None:
    """Compare ``{seed: accuracy}`` of a trial with the baseline's on the seeds both have (None if none)."""
    seeds = sorted(s for s in trial if s in baseline and finite(trial[s]) and finite(baseline[s]))
    if not seeds:
        return None
    d = np.array([float(trial[s]) - float(baseline[s]) for s in seeds])
    n = d.size
    exact = n <= MAX_EXACT_SEEDS
    how = f"exact over 2^{n} sign assignments" if exact else f"{SIGN_FLIP_RESAMPLES} random sign assignments"
    test = (f"paired sign-flip permutation test, two-sided, {how}, {n} seed{'s' if n != 1 else ''}; "
            f"95% CI: Student t (df={n - 1})" if n >= 2 else
            "paired sign-flip permutation test, two-sided, 1 seed (uninformative: p = 1); no CI")
    return PairedTest(n=n, diff_mean=float(d.mean()), ci95=t_interval(d), p_value=sign_flip_p_value(d), test=test)


def spearman(a: Any, b: Any) -> float | None:
    """Spearman's rank correlation (``scipy.stats.spearmanr``, average ranks for ties); None when either
    ranking is constant (scipy would warn and return NaN)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size != y.size:
        raise ValueError(f"a and b must have one length, but got {x.size} and {y.size}")
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(stats.spearmanr(x, y).statistic)
