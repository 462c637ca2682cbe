"""Is the driver ever the bottleneck? A cluster simulated on this machine: a real study whose trials train nothing.

A local Ray with many logical CPUs (``--cpus``, default 64 on however many cores there are) runs a real
``kdtune search`` study (``tune.runner.run_study``: the real TPE searcher, ASHA, results recorder, Optuna
journal, Parquet tables and progress callback; the references off) whose trainable, ``paced_trial``, trains
nothing: it replays a learning curve (``curve``: shaped like the default space's, rising to a plateau that
depends on the knobs, so TPE has something to find and ASHA prunes) through the same ``_Reporter`` that
``kd_trial`` reports through, so the driver receives exactly the result keys and blocks a real trial sends,
spread over ``--seconds`` per trial.

Measured in the driver process: CPU seconds (``time.process_time``, every thread of the driver) sampled as each
trial ends, so the cost per trial over the first and the last ``--window`` trials can be compared; and the
share of each part, timed around the parts' own methods (CPU time of the driver's main thread, each part
counted exclusive of the parts it calls): the sampler (Optuna's TPE), the journal (Optuna's journal storage:
its writes, fsyncs and replay), the searcher's own glue (Ray's OptunaSearch and Optuna's ask/tell around the
two), ASHA, the tables (the results recorder, Parquet and trial-log writes), the progress callback, and Ray's
bookkeeping (the rest: Tune's controller loop, result processing, actor calls, experiment-state snapshots).

Not simulated: the network (results and actor calls cross loopback, not a switch), a shared filesystem's
latency (the journal and the tables are on this machine's disk), and Ray's raylets and GCS on other nodes
(here all in one machine, sharing its cores with the driver). README "The driver at scale" estimates these on
paper.

    python bench/driver_scale.py [--trials 10000] [--cpus 64] [--seconds 2.0] [--window 1000] [--smoke-test]

Prints, last, ``trials/s X, driver ratio R``: X sustained (trials ended per second from the first trial's end
to the last's), R the driver's CPU seconds per trial over the last window over that over the first.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import io
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

# The parts of the driver, in the order they are printed; "ray" is what is left of the process's CPU time.
PARTS = ("sampler", "journal", "searcher", "scheduler", "tables", "progress")


class PartTimer:
    """Exclusive CPU time (main thread) per part: a part's call pauses the part that called it."""

    def __init__(self) -> None:
        self.totals = dict.fromkeys(PARTS, 0.0)
        self._stack: list[list[Any]] = []  # [part, started] of the calls in progress, innermost last
        self._main = threading.main_thread().ident

    def wrap(self, owner: Any, name: str, part: str) -> None:
        """Time ``owner.name`` (a class's method) as ``part``."""
        inner = getattr(owner, name)

        @functools.wraps(inner)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != self._main:
                return inner(*args, **kwargs)
            now = time.thread_time()
            if self._stack:
                outer = self._stack[-1]
                self.totals[outer[0]] += now - outer[1]
            frame = [part, now]
            self._stack.append(frame)
            try:
                return inner(*args, **kwargs)
            finally:
                now = time.thread_time()
                self.totals[part] += now - frame[1]
                self._stack.pop()
                if self._stack:
                    self._stack[-1][1] = now

        setattr(owner, name, timed)

    def snapshot(self) -> dict[str, float]:
        return dict(self.totals)


def instrument(timer: PartTimer) -> None:
    """Wrap the driver's parts (in this process only: Ray's workers import their own, unwrapped)."""
    import optuna
    from optuna.storages import JournalStorage
    from ray.tune.search.optuna import OptunaSearch

    import tune.runner
    from tune.recorder import ResultsRecorder
    from tune.scheduler import RungASHA
    from tune.searcher import PruneAwareOptunaSearch

    for sampler in (optuna.samplers.TPESampler, optuna.samplers.RandomSampler):
        for name in ("infer_relative_search_space", "sample_relative", "sample_independent", "before_trial",
                     "after_trial"):
            if name in vars(sampler):
                timer.wrap(sampler, name, "sampler")
    for name in ("_write_log", "_sync_with_backend"):
        timer.wrap(JournalStorage, name, "journal")
    for name in ("suggest", "on_trial_result", "on_trial_complete"):
        timer.wrap(PruneAwareOptunaSearch, name, "searcher")
    timer.wrap(OptunaSearch, "suggest", "searcher")
    for name in ("on_trial_add", "on_trial_result", "on_trial_complete", "on_trial_remove", "choose_trial_to_run"):
        if hasattr(RungASHA, name):
            timer.wrap(RungASHA, name, "scheduler")
    for name in ("on_trial_result", "on_trial_complete", "on_trial_error"):
        timer.wrap(ResultsRecorder, name, "tables")
    made = tune.runner.study_progress

    def study_progress(*args: Any, **kwargs: Any) -> Any:
        progress = made(*args, **kwargs)
        for name in ("on_trial_result", "on_trial_complete", "on_trial_error", "on_experiment_end"):
            timer.wrap(type(progress), name, "progress")
        return progress

    tune.runner.study_progress = study_progress


def meter_callback(timer: PartTimer) -> Any:
    """A Tune callback that samples the driver's CPU time, the wall clock and the parts as each trial ends."""
    from ray import tune

    class Meter(tune.Callback):
        def __init__(self) -> None:
            self.cpu: list[float] = []
            self.wall: list[float] = []
            self.parts: list[dict[str, float]] = []

        def _ended(self) -> None:
            self.cpu.append(time.process_time())
            self.wall.append(time.monotonic())
            self.parts.append(timer.snapshot())

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self._ended()

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self._ended()

    return Meter()


def curve(params: dict[str, Any], evaluations: int, seeds: int) -> np.ndarray:
    """(E, S) inner accuracies of one configuration: a rise to a plateau set by the knobs, with seed noise.

    The plateau peaks near the default space's good region (alpha ~0.3, temperature ~4, lr ~3e-3), so TPE has a
    signal to follow; each configuration's curve is the same every time it is asked for.
    """
    digest = hashlib.sha256(repr(sorted(params.items())).encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    lr = float(params.get("student.lr", params.get("student.max_lr", 3e-3)))
    alpha, temperature = float(params.get("kd.alpha", 0.3)), float(params.get("kd.temperature", 4.0))
    miss = (alpha - 0.3) ** 2 + (np.log(temperature / 4.0) / 3) ** 2 + (np.log10(lr / 3e-3) / 2) ** 2
    plateau = 0.93 - 0.2 * min(miss, 1.0)
    pace = rng.uniform(5, 60)  # evaluations to rise most of the way
    e = np.arange(1, evaluations + 1)[:, None]
    acc = plateau - (plateau - 0.5) * np.exp(-e / pace) + rng.normal(0, 0.01, size=(evaluations, seeds))
    return np.clip(acc, 0.0, 1.0)


_STUDIES: dict[str, tuple[Any, Any, Any]] = {}  # per worker process (pickled empty with the trainable)


def _study(root: str) -> tuple[Any, Any, Any]:
    from tune.study import StudyMeta, StudyPaths

    if root not in _STUDIES:
        paths = StudyPaths(Path(root))
        meta = StudyMeta.read(paths)
        _STUDIES[root] = (paths, meta, meta.space(paths))
    return _STUDIES[root]


def paced_trial(config: dict[str, Any]) -> None:
    """A trial that trains nothing: it replays ``curve`` through kd_trial's ``_Reporter`` in ``PACE_S`` seconds,
    and reports at its end what ``kd_trial`` reports (the same keys, per-seed rows included)."""
    import ray
    from ray import tune

    from kdcore import EpochReport, round_acc
    from tune.plan import measured_phase_start
    from tune.trainable import STUDY_KEY, _Reporter, asha_offset, asha_rungs

    start, started_at = time.perf_counter(), time.time()
    _, meta, space = _study(config[STUDY_KEY])
    params = {k: v for k, v in config.items() if k != STUDY_KEY}
    exp = space.experiment(params)
    before = measured_phase_start(exp.kd, exp.student.epochs, exp.eval_every)
    evaluations = before + -(-exp.student.epochs // exp.eval_every)
    seeds = tuple(exp.seeds)
    acc = curve(params, evaluations, len(seeds))
    holdout = np.clip(acc - 0.01, 0.0, 1.0)
    where = {"node": ray.get_runtime_context().get_node_id()[:12], "hostname": "bench", "pid": os.getpid(),
             "device": "cpu", "teacher_cache_hit": True, "teacher_key": "0" * 16, "started_at": started_at}
    reporter = _Reporter(tune.report, asha_rungs(meta.grace_period, meta.reduction_factor, meta.max_t), meta.max_t,
                         where, seeds, (space.objective.metric, space.objective.mode), None,
                         before=asha_offset(meta, exp))
    pause = PACE_S / evaluations
    due = time.monotonic()
    for i in range(evaluations):
        due += pause
        time.sleep(max(0.0, due - time.monotonic()))
        reporter.evaluation(EpochReport("student", i + 1, acc[i], 1 - acc[i], holdout[i], 1 - holdout[i]))
    best = np.argmax(acc[before:], axis=0) + before
    inner, out = acc[best, range(len(seeds))], holdout[best, range(len(seeds))]
    reporter.finish({
        "inner_acc": round_acc(inner.mean()), "inner_loss": float((1 - inner).mean()),
        "holdout_acc": round_acc(out.mean()), "holdout_loss": float((1 - out).mean()),
        "inner_acc_std": round_acc(inner.std(ddof=1)), "holdout_acc_std": round_acc(out.std(ddof=1)),
        "best_epoch": float(best.mean() + 1), "epochs_run": evaluations,
        "per_seed": [{"seed": s, "holdout_acc": round_acc(out[j]), "inner_acc": round_acc(inner[j]),
                      "inner_loss": float(1 - inner[j]), "holdout_loss": float(1 - out[j]),
                      "best_epoch": int(best[j] + 1), "holdout_class_acc": [round_acc(out[j])] * 2}
                     for j, s in enumerate(seeds)],
        "student_params": 302, "params_detail": {"student": 302}, "head": None,
        "trial_seconds": time.perf_counter() - start,
    })


PACE_S = 2.0  # set by main() before Ray pickles the trainable (a module global of __main__ travels with it)


def _window(values: list[float], lo: int, hi: int) -> float:
    return (values[hi] - values[lo]) / (hi - lo)


@contextlib.contextmanager
def _short_tmpdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kdt-ds-", dir="/tmp") as tmp:
        old = os.environ.get("TMPDIR")
        os.environ["TMPDIR"] = tmp
        tempfile.tempdir = None
        try:
            yield Path(tmp)
        finally:
            if old is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = old
            tempfile.tempdir = None


def run(args: argparse.Namespace, storage: Path) -> None:
    from tune.cluster import ClusterSpec
    from tune.plan import RunOptions, SearchSettings, plan_study
    from tune.runner import run_study

    settings = SearchSettings(data=args.data, space=args.space, name="scale", storage=storage,
                              num_samples=args.trials, seed=0, num_cpus=args.cpus)
    paths, meta = plan_study(settings)
    meta = dataclasses.replace(meta, references=False)  # no baseline, teachers or ablation: trials only
    timer = PartTimer()
    instrument(timer)
    meter = meter_callback(timer)
    options = RunOptions(ClusterSpec(num_cpus=args.cpus), max_failures=0, stream=io.StringIO())
    cpu0, wall0 = time.process_time(), time.monotonic()
    outcome = run_study(paths, meta, budget=args.trials, sampler_seed=meta.seed, options=options, new=True,
                        trainable=paced_trial, callbacks=[meter])
    cpu_all, wall_all = time.process_time() - cpu0, time.monotonic() - wall0
    n = len(meter.cpu)
    if n < 2:
        raise SystemExit(f"only {n} trials ended; nothing to measure")
    w = min(args.window, (n - 1) // 2) if n < 2 * args.window + 1 else args.window
    first, last = _window(meter.cpu, 0, w), _window(meter.cpu, n - 1 - w, n - 1)
    rate = (n - 1) / (meter.wall[-1] - meter.wall[0])
    ideal = args.cpus / PACE_S
    print(f"{n} trials ({outcome.trials}) on {args.cpus} logical CPUs of {os.cpu_count()} cores, "
          f"{PACE_S:g} s per trial (ideal {ideal:.0f} trials/s); {wall_all:.0f} s wall, {cpu_all:.0f} s driver CPU")
    print(f"  trials/s over the first {w}: {w / (meter.wall[w] - meter.wall[0]):.1f}, over the last {w}: "
          f"{w / (meter.wall[n - 1] - meter.wall[n - 1 - w]):.1f}")
    print(f"  driver CPU per trial: first {w} {1e3 * first:.1f} ms, last {w} {1e3 * last:.1f} ms")
    for label, lo, hi in (("first", 0, w), ("last", n - 1 - w, n - 1)):
        cpu = meter.cpu[hi] - meter.cpu[lo]
        parts = {p: meter.parts[hi][p] - meter.parts[lo][p] for p in PARTS}
        parts["ray"] = cpu - sum(parts.values())
        print(f"  shares of the driver's CPU, {label} {w}: "
              + ", ".join(f"{p} {100 * v / cpu:.0f} % ({1e3 * v / (hi - lo):.1f} ms)" for p, v in parts.items()))
    print(f"trials/s {rate:.1f}, driver ratio {last / first:.2f}")


def main() -> None:
    global PACE_S
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--cpus", type=int, default=64, help="logical CPUs of the local Ray: trial slots")
    parser.add_argument("--seconds", type=float, default=2.0, help="each trial's length")
    parser.add_argument("--window", type=int, default=1000, help="trials in the first and last windows")
    parser.add_argument("--space", default="default")
    parser.add_argument("--data", default="builtin:d0.5")
    parser.add_argument("--smoke-test", action="store_true", help="200 trials in windows of 50")
    args = parser.parse_args()
    if args.smoke_test:
        args.trials, args.window = 200, 50
    if args.trials < 3 or args.cpus < 1 or args.seconds <= 0 or args.window < 1:
        parser.error("--trials >= 3, --cpus >= 1, --seconds > 0 and --window >= 1 must hold")
    PACE_S = args.seconds
    from tune import cluster

    cluster.prepare_environment(local=True)  # as the CLI's main does: before anything imports ray
    with _short_tmpdir() as tmp:
        run(args, tmp / "studies")


if __name__ == "__main__":
    main()
