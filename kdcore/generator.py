"""The project's own generator of the reference family: 2-D points from K Gaussian domains, each an inner
disc (class 0) and a ring (class 1), and its law (centres, the exact posterior, the Bayes accuracy), so
that quality can be measured on large fresh holdouts against the best any classifier can reach.
"""

from __future__ import annotations

import math

import numpy as np

from kdcore.dataset import ClassificationData
from kdcore.errors import DataError

BUILTIN_DISTANCES = (0.25, 0.5, 0.75, 1.0)
# The built-in sets mirror the reference files: 800 train and 100 validation points per domain.
BUILTIN_TRAIN_PER_DOMAIN = 800
BUILTIN_VALID_PER_DOMAIN = 100
BUILTIN_SEED = 20211


def generate(
    distance: float,
    *,
    train_per_domain: int = BUILTIN_TRAIN_PER_DOMAIN,
    valid_per_domain: int = BUILTIN_VALID_PER_DOMAIN,
    n_domains: int = 3,
    seed: int,
    source: str | None = None,
) -> ClassificationData:
    """The project's own member of the reference family of tasks.

    Domain k is N(c_k, I) with c_k = 4·d·(cos θ_k, sin θ_k), θ_k = 360°·k/K (0°, 120°, 240° for K = 3);
    class 0 lies within the median radius sqrt(2 ln 2) of its centre (so classes are balanced in
    expectation), class 1 outside. Samples are stored domain after domain, as in the reference files.
    """
    if not math.isfinite(distance) or distance < 0:
        raise DataError(f"distance must be a finite number >= 0, but got {distance!r}")
    if n_domains < 1 or train_per_domain < 2 or valid_per_domain < 1:
        raise DataError(
            "n_domains >= 1, train_per_domain >= 2 and valid_per_domain >= 1 must hold, but got "
            f"n_domains={n_domains}, train_per_domain={train_per_domain}, valid_per_domain={valid_per_domain}"
        )
    rng = np.random.default_rng(seed)
    radius = math.sqrt(2 * math.log(2))
    centres = domain_centres(distance, n_domains)

    def draw(per_domain: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        noise = rng.standard_normal((n_domains, per_domain, 2))
        x = (centres[:, None, :] + noise).reshape(-1, 2)
        y = (np.linalg.norm(noise, axis=2) > radius).astype(np.int64).reshape(-1)
        d = np.repeat(np.arange(n_domains, dtype=np.int64), per_domain)
        return x, y, d

    xt, yt, dt = draw(train_per_domain)
    xv, yv, dv = draw(valid_per_domain)
    return ClassificationData(xt, yt, dt, xv, yv, dv, source=source or f"generated:d{distance}:seed{seed}")


def domain_centres(distance: float, n_domains: int = 3) -> np.ndarray:
    """(K, 2) centres of ``generate``'s domains: c_k = 4·d·(cos θ_k, sin θ_k), θ_k = 360°·k/K."""
    theta = 2 * math.pi * np.arange(n_domains) / n_domains
    return 4 * distance * np.stack([np.cos(theta), np.sin(theta)], axis=1)


def class0_posterior(x: np.ndarray, distance: float, n_domains: int = 3) -> np.ndarray:
    """P(y = 0 | x) under ``generate``'s law when the domain is not known: (N, 2) -> (N,).

    The domains are equally likely and N(c_k, I); within domain k the label is 0 exactly when
    |x - c_k| < sqrt(2 ln 2). So the posterior is the Gaussian responsibility of the domains whose disc holds x.
    """
    radius = math.sqrt(2 * math.log(2))
    sq = ((x[:, None, :] - domain_centres(distance, n_domains)[None]) ** 2).sum(axis=-1)  # (N, K)
    weight = np.exp(-0.5 * (sq - sq.min(axis=1, keepdims=True)))
    return (weight * (sq < radius**2)).sum(axis=1) / weight.sum(axis=1)


def bayes_accuracy(distance: float, *, n: int = 300_000, seed: int = 0, n_domains: int = 3) -> float:
    """The best accuracy any classifier reaches on ``generate``'s law without the domain as input.

    Monte Carlo over ``n`` fresh points of E[max(p, 1 - p)] with the exact posterior p: its standard error
    is below 0.05 points at the default n.
    """
    fresh = generate(distance, train_per_domain=2, valid_per_domain=max(1, n // n_domains),
                     n_domains=n_domains, seed=seed)
    p = class0_posterior(fresh.x_valid.astype(np.float64), distance, n_domains)
    return float(np.maximum(p, 1 - p).mean())
