"""What Ray Tune costs and buys: the same N trials by `kdtune search` and by a plain loop in one process.

1. `kdtune search` on the default space with ASHA effectively off (grace period = max_t), so every trial
   trains to its own end, on all local CPUs (one CPU per trial);
2. the same N configurations (read back from the study's Optuna journal) trained one after another in
   this process, teachers trained once, exactly what a hand-written loop would do;
3. `kdtune search` again as a user runs it (ASHA on), for trials per minute on this machine.

    python bench/search_overhead.py [--trials 8] [--data builtin:d0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch

import kdcore
from kdcore import TeacherCache, prepare, train_student
from search_spaces import load_space


def run_search(storage: Path, name: str, trials: int, data: str, extra: list[str]) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "tune.cli", "search", "--data", data, "--space", "default", "--name", name,
           "--storage", str(storage), "--num-samples", str(trials), "--json", "--quiet", *extra]
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--data", default="builtin:d0.5")
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="kdt-bench-") as tmp:
        storage = Path(tmp)
        wall_tune, noprune = run_search(storage, "noprune", args.trials, args.data, ["--grace-period", "100000"])
        journal = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(storage / "noprune" / "optuna.journal")))
        study = optuna.load_study(study_name="noprune", storage=journal)
        params = [t.params for t in sorted(study.trials, key=lambda t: t.number)]
        in_trial = sum(t.user_attrs.get("trial_seconds", 0.0) for t in study.trials)

        torch.set_num_threads(1)
        space = load_space("default")
        dataset = kdcore.load_data(args.data)
        start = time.perf_counter()
        base = space.base
        prep = prepare(dataset, base)
        teachers = TeacherCache(storage / "loop-teachers").get_or_train(prep, base, dataset.fingerprint())
        for p in params:
            train_student(prep, space.experiment(p), teachers.models)
        wall_loop = time.perf_counter() - start

        wall_asha, asha = run_search(storage, "asha", args.trials, args.data, [])

    print(f"{args.trials} trials of the default space on {args.data}, {cpus} CPUs, one CPU per trial")
    print(f"  kdtune search, no pruning       {wall_tune:7.1f} s wall (Ray start, reference training, "
          f"{args.trials} trials; {in_trial:.1f} s inside trials)")
    print(f"    of which before Ray was up    {wall_tune - noprune['seconds']:7.1f} s (interpreter, imports, "
          "data, Ray start)")
    print(f"  plain sequential loop           {wall_loop:7.1f} s wall (teachers once + {args.trials} students)")
    print(f"  ratio search / loop             {wall_tune / wall_loop:7.2f}  (< 1: parallel trials outweigh Ray's cost)")
    print(f"  Ray's cost per trial            {(wall_tune * min(cpus, args.trials) - in_trial) / args.trials:7.2f} "
          "CPU-seconds (wall x parallel slots - time inside trials, per trial)")
    counts = asha["trials"]
    print(f"  kdtune search with ASHA         {wall_asha:7.1f} s wall, {counts}: "
          f"{60 * args.trials / wall_asha:.1f} trials per minute")
    print(f"  best (ASHA run): inner acc {100 * asha['best']['inner_acc_mean']:.2f} %, "
          f"holdout {100 * asha['best']['holdout_acc_mean']:.2f} %" if asha.get("best") else "  no trial completed")


if __name__ == "__main__":
    main()
