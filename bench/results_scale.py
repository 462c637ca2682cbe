"""Recording a trial costs the same at trial 10,000 as at trial 1: synthetic trials through StudyTables.

Writes N synthetic trials (a trials row with four knob columns, ``--epochs`` epoch rows, ``--seeds`` seed
rows, shaped as ``tune.recorder.trial_rows`` makes them) through ``StudyTables.record_trial``, timing each
call; then compacts. Prints the mean cost per trial over the first and the last 100 trials, the compaction
time, and last ``ratio R`` (last 100 / first 100; near 1 when the cost does not grow with the study).

    python bench/results_scale.py [--trials 10000] [--epochs 150] [--seeds 5] [--dir DIR] [--smoke-test]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from results.reader import read_table
from results.writer import StudyTables

PARAMS = [("kd.alpha", pa.float64()), ("kd.temperature", pa.float64()), ("student.optimizer", pa.string()),
          ("student.width", pa.int64())]
WINDOW = 100


def trial_rows(study: str, number: int, epochs: int, seeds: int, rng: np.random.Generator
               ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """One COMPLETE trial's trials row, epoch rows and seed rows, with random metrics."""
    ids = {"study": study, "trial_id": f"bench_{number:05d}", "number": number}
    acc = rng.uniform(0.5, 0.99, size=(epochs, 2))
    trial = {**ids, "status": "COMPLETE", "error": None, "param_kd__alpha": float(rng.uniform()),
             "param_kd__temperature": float(rng.uniform(1, 20)), "param_student__optimizer": "adamw",
             "param_student__width": int(rng.integers(16, 256)), "inner_acc_mean": float(acc[-1, 0]),
             "inner_acc_std": 0.01, "holdout_acc_mean": float(acc[-1, 1]), "holdout_acc_std": 0.01,
             "inner_loss_mean": 0.3, "holdout_loss_mean": 0.3, "best_epoch": float(epochs),
             "epochs_run": epochs, "iterations": epochs, "wall_seconds": 1.0, "teacher_cache_hit": True,
             "node": "0" * 12, "hostname": "bench", "device": "cpu"}
    epoch_rows = [{**ids, "iteration": i + 1, "epoch": i + 1, "inner_acc_mean": float(acc[i, 0]),
                   "inner_loss_mean": 0.5, "holdout_acc_mean": float(acc[i, 1]), "holdout_loss_mean": 0.5}
                  for i in range(epochs)]
    seed_rows = [{**ids, "seed": s, "inner_acc": float(acc[-1, 0]), "holdout_acc": float(acc[-1, 1]),
                  "inner_loss": 0.3, "holdout_loss": 0.3, "best_epoch": epochs} for s in range(seeds)]
    return trial, epoch_rows, seed_rows


def run(root: Path, trials: int, epochs: int, seeds: int) -> None:
    tables = StudyTables(root / "results", PARAMS, {"study": "bench"})
    tables.write_metadata()
    rng = np.random.default_rng(0)
    costs = np.empty(trials)
    start = time.perf_counter()
    for n in range(trials):
        rows = trial_rows("bench", n, epochs, seeds, rng)
        t0 = time.perf_counter()
        tables.record_trial(*rows)
        costs[n] = time.perf_counter() - t0
        if (n + 1) % 1000 == 0:
            print(f"{n + 1} trials, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    window = min(WINDOW, trials)
    first, last = costs[:window].mean() * 1e3, costs[-window:].mean() * 1e3
    print(f"trials {trials}, epochs {epochs}, seeds {seeds}: {costs.sum():.1f} s recording")
    print(f"first {window}: {first:.2f} ms per trial")
    print(f"last {window}: {last:.2f} ms per trial")
    t0 = time.perf_counter()
    tables.compact()
    print(f"compaction: {time.perf_counter() - t0:.2f} s")
    t0 = time.perf_counter()
    read = {t: len(read_table(root, t)) for t in ("trials", "epochs", "seeds")}
    print(f"read after compaction: {time.perf_counter() - t0:.2f} s, rows {read}")
    print(f"ratio {last / first:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None,
                        help="study folder to write (default: a temporary one)")
    parser.add_argument("--smoke-test", action="store_true", help="200 trials, to check the script runs")
    args = parser.parse_args()
    if args.smoke_test:
        args.trials = 200
    for name in ("trials", "epochs", "seeds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, but got {getattr(args, name)}")
    if args.dir is not None:
        if args.dir.exists() and any(args.dir.iterdir()):
            parser.error(f"--dir {args.dir} must be empty or absent, so the bench starts from no trials")
        run(args.dir, args.trials, args.epochs, args.seeds)
        return
    with tempfile.TemporaryDirectory(prefix="kdt-results-scale-") as tmp:
        run(Path(tmp), args.trials, args.epochs, args.seeds)


if __name__ == "__main__":
    main()
