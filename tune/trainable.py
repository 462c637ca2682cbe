"""The Ray Tune trainable: one trial = one student configuration over all seeds, reported each evaluation.

The trial's config holds the sampled knobs (dotted paths) and ``STUDY_KEY``, the absolute path of the
study folder; everything else (data, space, teacher cache) is read from there. With ``reuse_actors`` one
worker process runs many trials, so the dataset and its tensors are cached per process.

Reports. ``tune.report`` in a function trainable is a round trip to the driver (Ray runs it with
synchronous result reporting: the training thread waits until the driver has taken the result), about 4 ms
here; reporting each of a trial's ~150 evaluations cost a quarter of its time. So evaluations are sent in
blocks: a report goes out at each of ASHA's rungs (exactly at the rung's evaluation, so the scheduler
decides on the same value as with one report per evaluation), at least every ``REPORT_EVERY_S`` seconds
(the progress line stays live), and at the end. Each report carries ``evals``: every evaluation since the
previous report, each with its number ``evaluation`` (1, 2, ...; Optuna's step and the epochs table's
iteration) and its ``epoch``; the report's own metrics are those of its last evaluation. ASHA's time
attribute is ``measured_evaluation``, the number within the phase the objective measures (annealing KD's
phase 2; 0 during phase 1), and ASHA's value is the best so far in that phase: every method is judged at the
same point of its own schedule. The searcher and the results
recorder unpack ``evals`` (``tune.searcher.evaluations``), so Optuna's intermediate values and the epochs
table still hold every evaluation.
A trial cut off from outside (Ctrl-C, a lost worker) loses the evaluations it had not sent yet, at most
``REPORT_EVERY_S`` worth; such a trial is re-run (``kdtune resume``, Tune's retries) and reports afresh.
Each evaluation is held back until the next one exists, so that the trial's last report can carry
``is_final=True`` and the *selected* metrics (best weights restored); a trial ASHA stops never sends it.
A loss that turns NaN or infinite ends the trial at once with ``trial_error`` in its last result (the
searcher and the tables record it as ERROR) rather than raising: Tune would retry a raised error, and a
deterministic divergence would only diverge again.
"""

from __future__ import annotations

import math
import os
import socket
import time
from pathlib import Path
from typing import Any

import torch

import kdcore
from kdcore import (
    EpochReport,
    ExperimentConfig,
    Prepared,
    TeacherCache,
    TrainingError,
    VariantCache,
    prepare,
    round_acc,
    train_student,
)
from tune.searcher import (
    ASHA_KEY,
    AT_KEY,
    EVAL_KEY,
    EVALS_KEY,
    FINAL_KEY,
    METRICS,
    SCHEDULER_KEY,
    STARTED_KEY,
)
from tune.study import StudyMeta, StudyPaths
from tune.trial_log import TrialLog

STUDY_KEY = "kdtune_study"
METRIC = "inner_acc"
REPORT_EVERY_S = 0.5
_EVAL_FIELDS = (EVAL_KEY, "epoch", AT_KEY, *METRICS)

_DATA: dict[str, kdcore.ClassificationData] = {}
_PREP: dict[tuple[Any, ...], Prepared] = {}


def _prepared(spec: str, config: ExperimentConfig, device: str) -> tuple[Prepared, str]:
    if spec not in _DATA:
        _DATA.clear()
        _PREP.clear()
        _DATA[spec] = kdcore.load_data(spec)
    data = _DATA[spec]
    key = (spec, config.protocol, config.inner, config.inner_fraction, config.fold_start, config.split_seed,
           config.seeds, device)
    if key not in _PREP:
        _PREP[key] = prepare(data, config, device)
    return _PREP[key], data.fingerprint()


def _metrics(report: EpochReport, seeds: tuple[int, ...]) -> dict[str, Any]:
    return {
        "seeds": list(seeds),
        "epoch": report.epoch,
        "inner_acc": round_acc(report.inner_acc.mean()),
        "inner_loss": float(report.inner_loss.mean()),
        "holdout_acc": round_acc(report.holdout_acc.mean()),
        "holdout_loss": float(report.holdout_loss.mean()),
        "seed_inner_acc": [round_acc(v) for v in report.inner_acc],
        "seed_holdout_acc": [round_acc(v) for v in report.holdout_acc],
    }


def asha_rungs(grace_period: int, reduction_factor: int, max_t: int) -> frozenset[int]:
    """The evaluations at which ASHA compares trials (``results.asha.asha_rungs``)."""
    from results.asha import asha_rungs as rungs

    return frozenset(rungs(grace_period, reduction_factor, max_t))


def asha_offset(meta: StudyMeta, exp: ExperimentConfig) -> int:
    """The evaluations ASHA does not count (``kdcore.evaluations_before_measured_phase``): those of the phases
    before the measured one, in a study whose record says its rung counts the last phase's (``meta.asha_counts``); a
    study planned by an older kdtune counted every evaluation, and keeps doing so."""
    from kdcore import evaluations_before_measured_phase

    if meta.asha_counts is None:
        return 0
    return evaluations_before_measured_phase(exp.kd, exp.student.epochs, exp.eval_every)


class _Reporter:
    """Sends evaluations to Tune in blocks (see the module docstring): at ASHA's rungs and ``max_t``, at
    least every ``REPORT_EVERY_S`` seconds, and at the end."""

    def __init__(self, report: Any, rungs: frozenset[int], max_t: int, extra: dict[str, Any],
                 seeds: tuple[int, ...], objective: tuple[str, str] = (METRIC, "max"),
                 log: TrialLog | None = None, before: int = 0) -> None:
        self._report = report
        # Evaluations of the phases before the one the objective measures (annealing KD's phase 1): ASHA's
        # clock (ASHA_KEY) and its best-so-far value start after them; EVAL_KEY still numbers them all.
        self._before = before
        self._log = log
        self._objective = objective  # (metric, mode): SCHEDULER_KEY is its best value so far
        self._best: float | None = None
        self._rungs = rungs
        self._max_t = max_t  # ASHA stops a trial at its first report at or past max_t: send that one at once
        self._extra = extra
        self._seeds = seeds
        self._block: list[dict[str, Any]] = []
        self._held: tuple[EpochReport, float] | None = None  # the evaluation, and when it was made
        self._count = 0
        self._sent = time.monotonic()

    def evaluation(self, report: EpochReport) -> None:
        """A new evaluation: the one held back until now is not the last, so it can go."""
        if self._held is not None:
            metrics = self._queue(self._held)
            step = metrics[ASHA_KEY]
            if step in self._rungs or step >= self._max_t or time.monotonic() - self._sent >= REPORT_EVERY_S:
                self._send(metrics, final=False)
        self._held = (report, time.time())

    def _queue(self, held: tuple[EpochReport, float]) -> dict[str, Any]:
        report, at = held
        self._count += 1
        metrics = {EVAL_KEY: self._count, ASHA_KEY: self._measured(), AT_KEY: at, **_metrics(report, self._seeds)}
        if self._log is not None:
            self._log.evaluation(metrics)
        metric, mode = self._objective
        value = metrics[metric]
        if metrics[ASHA_KEY] > 0 and math.isfinite(value) and (self._best is None or (value > self._best if mode == "max" else value < self._best)):
            self._best = value
        metrics[SCHEDULER_KEY] = self._best if self._best is not None else value
        self._block.append({k: metrics[k] for k in _EVAL_FIELDS})
        return metrics

    def _measured(self) -> int:
        """The number of the current evaluation within the measured phase (0 before it)."""
        return max(0, self._count - self._before)

    def _send(self, metrics: dict[str, Any], *, final: bool, **more: Any) -> None:
        block, self._block = self._block, []
        self._report({**metrics, **self._extra, **more, EVALS_KEY: block, FINAL_KEY: final})
        self._sent = time.monotonic()

    def finish(self, selected: dict[str, Any]) -> None:
        """The last report: the held evaluation, its metrics replaced by the ``selected`` ones (best weights),
        and the curve's raw last values kept as ``last_<metric>``."""
        if self._held is None:
            raise TrainingError("the training made no evaluation (no epoch ran)")
        metrics = self._queue(self._held)
        metrics.update({f"last_{m}": metrics[m] for m in METRICS})
        metrics.update(selected)
        self._block[-1].update({k: metrics[k] for k in _EVAL_FIELDS})
        self._send(metrics, final=True)

    def fail(self, error: str, seconds: float) -> None:
        """The last report of a trial whose training diverged: what it has, and the reason."""
        if self._held is not None:
            metrics = self._queue(self._held)
        else:
            metrics = {EVAL_KEY: self._count, ASHA_KEY: self._measured(), AT_KEY: time.time(), "epoch": 0,
                       "seeds": list(self._seeds)}
        for key in (*METRICS, SCHEDULER_KEY):  # inner_acc or inner_loss may be the objective
            metrics.setdefault(key, float("nan"))
        self._send(metrics, final=False, trial_error=error, trial_seconds=seconds)


def _trial_setup(config: dict[str, Any]) -> tuple[StudyPaths, StudyMeta, Any, ExperimentConfig]:
    """The study, its search space and the ExperimentConfig a trial's Tune config stands for."""
    paths = StudyPaths(Path(config[STUDY_KEY]))
    meta = StudyMeta.read(paths)
    space = meta.space(paths)
    params = {k: v for k, v in config.items() if k != STUDY_KEY}
    return paths, meta, space, space.experiment(params)


def kd_trial(config: dict[str, Any]) -> None:
    """Train one student configuration; teachers come from the study's cache (trained on first need)."""
    from ray import tune

    start, started_at = time.perf_counter(), time.time()
    paths, meta, space, exp = _trial_setup(config)
    context = tune.get_context()
    log = TrialLog(paths.root / f"t_{context.get_trial_id()}")
    try:
        _run_trial(config, paths, meta, space, exp, context, log, start, started_at)
    except BaseException as exc:  # logged, then raised on for Tune (retries, ERROR rows)
        log.failure(exc)
        raise
    finally:
        log.close()


def _run_trial(config: dict[str, Any], paths: StudyPaths, meta: StudyMeta, space: Any, exp: ExperimentConfig,
               context: Any, log: TrialLog, start: float, started_at: float) -> None:
    from ray import tune

    resources = context.get_trial_resources().required_resources
    torch.set_num_threads(max(1, int(resources.get("CPU", 1))))
    use_gpu = resources.get("GPU", 0) > 0 and torch.cuda.is_available()
    device = "cuda" if use_gpu else "cpu"
    prep, fingerprint = _prepared(meta.data, exp, device)
    # A configuration without a KD term (the CE-only baseline search) never consults the teachers.
    teachers = TeacherCache(paths.teachers).get_or_train(prep, exp, fingerprint) if exp.kd.uses_teachers else None

    import ray

    where = {
        "node": ray.get_runtime_context().get_node_id()[:12],
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "device": torch.cuda.get_device_name() if use_gpu else "cpu",
        "teacher_cache_hit": teachers.hit if teachers else None,
        "teacher_key": teachers.key[:16] if teachers else None,
        STARTED_KEY: started_at,
    }
    log.line(f"start: study {meta.name}, trial {context.get_trial_id()} on {where['hostname']} (node "
             f"{where['node']}, pid {where['pid']}, niceness {os.nice(0)}, {where['device']}, "
             f"{torch.get_num_threads()} threads); "
             f"teachers {'from the cache' if teachers and teachers.hit else 'trained here' if teachers else 'none'}; "
             f"seeds {list(exp.seeds)}; params "
             + ", ".join(f"{k}={v}" for k, v in config.items() if k != STUDY_KEY))
    reporter = _Reporter(tune.report, asha_rungs(meta.grace_period, meta.reduction_factor, meta.max_t), meta.max_t,
                         where, exp.seeds, (space.objective.metric, space.objective.mode), log,
                         before=asha_offset(meta, exp))
    try:
        variants = None
        if teachers and exp.kd.targets == "variants" and exp.student.augments:  # shared by the study's trials
            variants = VariantCache(paths.teachers).get_or_compute(teachers.key, teachers.models, prep.fit,
                                                                   exp.student.augment)
        result = train_student(prep, exp, teachers.models if teachers else None, reporter.evaluation, variants)
    except TrainingError as exc:
        # Deterministic divergence: end now as an error with its reason (a retry would diverge again).
        reporter.fail(f"TrainingError: {exc}", time.perf_counter() - start)
        log.line(f"ended as ERROR: TrainingError: {exc}")
        return
    summary = result.summary()
    reporter.finish({
        "inner_acc": summary["inner_acc_mean"],
        "inner_loss": summary["inner_loss_mean"],
        "holdout_acc": summary["holdout_acc_mean"],
        "holdout_loss": summary["holdout_loss_mean"],
        "inner_acc_std": summary["inner_acc_std"],
        "holdout_acc_std": summary["holdout_acc_std"],
        "best_epoch": summary["best_epoch_mean"],
        "epochs_run": result.epochs_run,
        "per_seed": summary["per_seed"],
        "student_params": summary["params"],
        "params_detail": summary["params_detail"],
        "head": summary["head"],
        "trial_seconds": time.perf_counter() - start,
    })
    log.line(f"ended COMPLETE after {result.epochs_run} epochs, {time.perf_counter() - start:.1f} s: inner acc "
             f"{summary['inner_acc_mean']:.4f}, holdout acc {summary['holdout_acc_mean']:.4f} (seed means, "
             "selected epochs)")
