"""What training reports: each evaluation (``EpochReport``), one method's outcome at its selected epoch
(``FitResult``), and an experiment's outcomes (``ExperimentResult``). Numpy only: the results outlive torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, SupportsFloat

import numpy as np

if TYPE_CHECKING:
    from kdcore.batching import SeedModel
    from kdcore.config import ExperimentConfig
    from kdcore.task import Task


@dataclass(frozen=True)
class EpochReport:
    """Metrics of every seed after ``epoch`` epochs (1-based) of one method; arrays are (S,)."""

    method: str
    epoch: int
    inner_acc: np.ndarray
    inner_loss: np.ndarray
    holdout_acc: np.ndarray
    holdout_loss: np.ndarray

    @property
    def inner_acc_mean(self) -> float:
        return float(self.inner_acc.mean())


ReportFn = Callable[[EpochReport], None]


ACC_DECIMALS = 9  # accuracies in summaries: a ratio of counts, rounded far below any set's resolution


def round_acc(value: SupportsFloat) -> float:
    """An accuracy (or a mean of them) as reported: float64, rounded to ``ACC_DECIMALS``."""
    return round(float(value), ACC_DECIMALS)


@dataclass(frozen=True)
class FitResult:
    """One method's outcome at its selected epoch, per seed; ``model`` holds the selected weights.

    ``classes[j]`` is the global class of output j (a teacher of a class subset has its own label space);
    ``class_acc`` (S, len(classes)) is the holdout accuracy on each class at the selected weights (NaN for a
    class the holdout lacks); ``params`` counts one network's trainable parameters (``params_detail`` by
    part where there are several, e.g. SimKD's student and projector); ``head`` names the classifier whose
    logits every metric is measured on. ``loaded_from`` is the checkpoint file of a teacher that was loaded,
    not trained (its summary says so beside its accuracy, so that a file that is not what its name claims
    shows); None for every network trained here.
    """

    method: str
    seeds: tuple[int, ...]
    inner_acc: np.ndarray
    inner_loss: np.ndarray
    holdout_acc: np.ndarray
    holdout_loss: np.ndarray
    best_epoch: np.ndarray
    epochs_run: int
    seconds: float
    model: SeedModel
    history: list[EpochReport] = field(default_factory=list)
    classes: tuple[int, ...] = ()
    class_acc: np.ndarray | None = None
    params: int = 0
    head: str = "student"
    params_detail: dict[str, int] = field(default_factory=dict)
    loaded_from: str | None = None

    def summary(self) -> dict[str, object]:
        """Seed means and sample standard deviations (ddof=1; None for a single seed, which has no spread:
        kdtune's one rule, as ``results.stats.sample_std``) plus per-seed rows.

        Accuracies are rounded to ``ACC_DECIMALS`` (far below any evaluation set's resolution), so that
        0.974 is 0.974 in JSON and Parquet, not 0.9740000000000001. A loaded teacher's summary adds
        ``loaded_from`` (the networks trained here have no such key, as before there were loaded teachers).
        """

        def std(a: np.ndarray) -> float | None:
            return round_acc(a.std(ddof=1)) if a.size > 1 else None

        def per_class(i: int) -> list[float | None]:
            if self.class_acc is None:
                return []
            return [None if np.isnan(v) else round_acc(v) for v in self.class_acc[i]]

        loaded = {} if self.loaded_from is None else {"loaded_from": self.loaded_from}
        return {
            **loaded,
            "holdout_acc_mean": round_acc(self.holdout_acc.mean()),
            "holdout_acc_std": std(self.holdout_acc),
            "inner_acc_mean": round_acc(self.inner_acc.mean()),
            "inner_acc_std": std(self.inner_acc),
            "inner_loss_mean": float(self.inner_loss.mean()),
            "holdout_loss_mean": float(self.holdout_loss.mean()),
            "best_epoch_mean": float(self.best_epoch.mean()),
            "epochs_run": self.epochs_run,
            "seconds": self.seconds,
            "classes": list(self.classes),
            "params": self.params,
            "params_detail": dict(self.params_detail),
            "head": self.head,
            "per_seed": [
                {
                    "seed": s,
                    "holdout_acc": round_acc(self.holdout_acc[i]),
                    "inner_acc": round_acc(self.inner_acc[i]),
                    "inner_loss": float(self.inner_loss[i]),
                    "holdout_loss": float(self.holdout_loss[i]),
                    "best_epoch": int(self.best_epoch[i]),
                    "holdout_class_acc": per_class(i),
                }
                for i, s in enumerate(self.seeds)
            ],
        }


def joined(first: FitResult, then: FitResult) -> FitResult:
    """One result of two phases trained one after the other (annealing KD): ``then``'s selection and weights,
    both phases' evaluations and time."""
    return dataclasses.replace(then, history=first.history + then.history, seconds=then.seconds + first.seconds)


@dataclass
class ExperimentResult:
    """Every method's FitResult, keyed ``baseline``, ``teacher_0`` .. ``teacher_{K-1}``, ``student``."""

    config: ExperimentConfig
    fingerprint: str
    methods: dict[str, FitResult]
    task: Task | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "methods": {name: r.summary() for name, r in self.methods.items()},
            "protocol": self.config.protocol,
            "seeds": list(self.config.seeds),
            "config": self.config.to_dict(),
            "data": {"fingerprint": self.fingerprint},
            "task": None if self.task is None else self.task.describe(),
        }
