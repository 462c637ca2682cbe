"""The Ray Tune trainable: one trial = one student configuration over all seeds, reported each evaluation.

The trial's config holds the sampled knobs (dotted paths) and ``STUDY_KEY``, the absolute path of the
study folder; everything else (data, space, teacher cache) is read from there. With ``reuse_actors`` one
worker process runs many trials, so the dataset and its tensors are cached per process.

Reports: one per evaluation (``training_iteration`` counts them; ``epoch`` is the epoch it was taken at).
Each result is held back until the next one exists, so that the trial's last result can carry
``is_final=True`` and the *selected* metrics (best weights restored); a trial ASHA stops never sends it.
A loss that turns NaN or infinite ends the trial at once with ``trial_error`` in its last result (the
searcher and the tables record it as ERROR) rather than raising: Tune would retry a raised error, and a
deterministic divergence would only diverge again.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import torch

from kdcore import data as kdata
from kdcore.config import ExperimentConfig
from kdcore.errors import TrainingError
from kdcore.teacher_cache import TeacherCache
from kdcore.train import EpochReport, Prepared, prepare, train_student
from tune.searcher import FINAL_KEY
from tune.study import StudyMeta, StudyPaths

STUDY_KEY = "kdtune_study"
METRIC = "inner_acc"

_DATA: dict[str, kdata.MultiDomainData] = {}
_PREP: dict[tuple[Any, ...], Prepared] = {}


def _prepared(spec: str, config: ExperimentConfig, device: str) -> tuple[Prepared, str]:
    if spec not in _DATA:
        _DATA.clear()
        _PREP.clear()
        _DATA[spec] = kdata.load(spec)
    data = _DATA[spec]
    key = (spec, config.protocol, config.inner_fraction, config.split_seed, device)
    if key not in _PREP:
        _PREP[key] = prepare(data, config, device)
    return _PREP[key], data.fingerprint()


def _metrics(report: EpochReport, seeds: tuple[int, ...]) -> dict[str, Any]:
    return {
        "seeds": list(seeds),
        "epoch": report.epoch,
        "inner_acc": float(report.inner_acc.mean()),
        "inner_loss": float(report.inner_loss.mean()),
        "holdout_acc": float(report.holdout_acc.mean()),
        "holdout_loss": float(report.holdout_loss.mean()),
        "seed_inner_acc": [float(v) for v in report.inner_acc],
        "seed_holdout_acc": [float(v) for v in report.holdout_acc],
    }


def experiment_config(config: dict[str, Any]) -> tuple[StudyPaths, StudyMeta, ExperimentConfig]:
    """The study and the ExperimentConfig a trial's Tune config stands for."""
    from search_spaces import parse_space

    paths = StudyPaths(Path(config[STUDY_KEY]))
    meta = StudyMeta.read(paths)
    space = parse_space(meta.space_text, source=f"{paths.meta}:space")
    params = {k: v for k, v in config.items() if k != STUDY_KEY}
    return paths, meta, space.experiment(params)


def kd_trial(config: dict[str, Any]) -> None:
    """Train one student configuration; teachers come from the study's cache (trained on first need)."""
    from ray import tune

    start = time.perf_counter()
    paths, meta, exp = experiment_config(config)
    context = tune.get_context()
    resources = context.get_trial_resources().required_resources
    torch.set_num_threads(max(1, int(resources.get("CPU", 1))))
    use_gpu = resources.get("GPU", 0) > 0 and torch.cuda.is_available()
    device = "cuda" if use_gpu else "cpu"
    prep, fingerprint = _prepared(meta.data, exp, device)
    teachers = TeacherCache(paths.teachers).get_or_train(prep, exp, fingerprint)

    import ray

    where = {
        "node": ray.get_runtime_context().get_node_id()[:12],
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "device": torch.cuda.get_device_name() if use_gpu else "cpu",
        "teacher_cache_hit": teachers.hit,
        "teacher_key": teachers.key[:16],
    }
    pending: list[EpochReport] = []

    def on_epoch(report: EpochReport) -> None:
        if pending:
            tune.report({**_metrics(pending.pop(), exp.seeds), **where, FINAL_KEY: False})
        pending.append(report)

    try:
        result = train_student(prep, exp, teachers.models, on_epoch)
    except TrainingError as exc:
        # Deterministic divergence: end now as an error with its reason (a retry would diverge again).
        last = _metrics(pending.pop(), exp.seeds) if pending else {"epoch": 0, "seeds": list(exp.seeds)}
        last.setdefault(METRIC, float("nan"))
        tune.report({**last, **where, FINAL_KEY: False, "trial_error": f"TrainingError: {exc}",
                     "trial_seconds": time.perf_counter() - start})
        return
    final = _metrics(pending.pop(), exp.seeds)
    summary = result.summary()
    final.update({f"last_{m}": final[m] for m in ("inner_acc", "inner_loss", "holdout_acc", "holdout_loss")})
    final.update({
        "inner_acc": summary["inner_acc_mean"],
        "inner_loss": summary["inner_loss_mean"],
        "holdout_acc": summary["holdout_acc_mean"],
        "holdout_loss": summary["holdout_loss_mean"],
        "inner_acc_std": summary["inner_acc_std"],
        "holdout_acc_std": summary["holdout_acc_std"],
        "best_epoch": summary["best_epoch_mean"],
        "epochs_run": result.epochs_run,
        "per_seed": summary["per_seed"],
        "trial_seconds": time.perf_counter() - start,
    })
    tune.report({**final, **where, FINAL_KEY: True})
