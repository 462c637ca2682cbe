"""One experiment: the baseline, the teachers and the student of one configuration, over all its seeds."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kdcore.config import ExperimentConfig
from kdcore.dataset import ClassificationData
from kdcore.prepared import prepare, task_of
from kdcore.result import ExperimentResult, FitResult, ReportFn
from kdcore.student import train_student
from kdcore.supervised import train_baseline
from kdcore.teachers import train_teachers


def run_experiment(
    data: ClassificationData,
    config: ExperimentConfig,
    *,
    device: str | torch.device = "cpu",
    on_epoch: ReportFn | None = None,
    methods: Sequence[str] = ("baseline", "teachers", "student"),
) -> ExperimentResult:
    """Train the baseline, the teachers and the student of one configuration over all its seeds."""
    prep = prepare(data, config, device)
    task = task_of(prep, config)
    out: dict[str, FitResult] = {}
    if "baseline" in methods:
        out["baseline"] = train_baseline(prep, config, on_epoch)
    if "teachers" in methods or ("student" in methods and config.kd.uses_teachers):
        teachers = train_teachers(prep, config, on_epoch)
        for t in teachers:
            out[t.method] = t
        if "student" in methods:
            out["student"] = train_student(prep, config, [t.model for t in teachers], on_epoch)
    elif "student" in methods:
        out["student"] = train_student(prep, config, None, on_epoch)
    return ExperimentResult(config, data.fingerprint(), out, task)
