"""How good is a study's answer? Defaults, searches and references, scored on fresh points of the law.

For each distance: the built-in data set (2,400 training points) is what everything trains on; a large fresh
holdout drawn from the same generator scores every result, against the law's Bayes accuracy with the domain
unknown (the ceiling). Rows:

- ``train defaults``: ``kdtune train`` with no flags (student and mixed baseline);
- ``search TPE`` / ``search random``: the best trial of an N-trial ``kdtune search`` of the default space
  (``--sampler tpe`` with ``--tune-baseline N``, and ``--sampler random``), re-trained exactly from the study
  (``tune.rerun``) and scored on the fresh points; beside it the study's own references: its mixed
  baseline, the ablation of its best trial (no KD term) and the tuned baseline (the best of an N-trial
  CE-only search), each re-trained and scored the same way;
- the learning curve: the TPE search's best configuration (and the space's baseline) trained on 2x, 4x and
  8x as many fresh training points: if the gap to the ceiling closes, it was the sample size's.

    python bench/search_quality.py [--distances 0.25,0.5] [--trials 24] [--fresh 100000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import kdcore
from kdcore import ExperimentConfig, TeacherCache, prepare, run_experiment, train_baseline, train_student
from tune.baseline import CE_BASELINE
from tune.rerun import study_trial_config

ROOT = Path(__file__).resolve().parents[1]


def score(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-seed accuracy (%) of a batched model on shared points."""
    model.eval()
    with torch.no_grad():
        return 100 * (model(x).argmax(-1) == y).float().mean(-1).numpy()


def search(storage: Path, name: str, distance: float, trials: int, extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "tune.cli", "search", "--data", f"builtin:d{distance}", "--space", "default",
           "--name", name, "--storage", str(storage), "--num-samples", str(trials), "--json", "--quiet", *extra]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def study_results(study: Path, data: kdcore.ClassificationData, x: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    """The study's best trial re-trained exactly, its ablation, and the space's baseline, scored on fresh points."""
    config, _, _ = study_trial_config(study)
    prep = prepare(data, config)
    teachers = TeacherCache(study / "teachers").get_or_train(prep, config, data.fingerprint())
    out = {"best": score(train_student(prep, config, teachers.models).model, x, y)}
    ablation = dataclasses.replace(config, kd=config.kd.without_kd())
    out["ablation"] = score(train_student(prep, ablation, None).model, x, y)
    out["baseline"] = score(train_baseline(prep, config).model, x, y)
    if (study / CE_BASELINE / "study.json").is_file():
        ce_config, _, _ = study_trial_config(study / CE_BASELINE)
        out["tuned baseline"] = score(train_student(prepare(data, ce_config), ce_config, None).model, x, y)
    return out


def row(label: str, acc: np.ndarray, ceiling: float) -> str:
    return f"  {label:<34} {acc.mean():>7.2f} ± {acc.std(ddof=1):<5.2f} {ceiling - acc.mean():>+7.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distances", default="0.25,0.5")
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--fresh", type=int, default=100_000, help="fresh holdout points per distance")
    parser.add_argument("--curve", default="2,4,8", help="training-set multiples for the learning curve ('' skips)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for distance in (float(d) for d in args.distances.split(",")):
        start = time.perf_counter()
        data = kdcore.builtin(f"d{distance}")
        fresh = kdcore.generate(distance, train_per_domain=2, valid_per_domain=args.fresh // 3, seed=90210)
        x, y = torch.tensor(fresh.x_valid), torch.tensor(fresh.y_valid)
        ceiling = 100 * kdcore.bayes_accuracy(distance)
        print(f"\nd = {distance}: fresh holdout of {3 * (args.fresh // 3)} points, Bayes ceiling (domain unknown) "
              f"{ceiling:.2f} %; accuracy % mean ± sd over 5 seeds, gap to the ceiling in points", flush=True)
        print(f"  {'':<34} {'fresh acc %':>15} {'gap':>7}")
        default = run_experiment(data, ExperimentConfig(), methods=("baseline", "student"))
        print(row("train defaults: student", score(default.methods["student"].model, x, y), ceiling))
        print(row("train defaults: mixed baseline", score(default.methods["baseline"].model, x, y), ceiling),
              flush=True)
        with tempfile.TemporaryDirectory(prefix="kdt-quality-") as tmp:
            os.environ.setdefault("TMPDIR", tmp)
            storage = Path(tmp)
            for sampler, extra in (("tpe", ["--tune-baseline", str(args.trials)]), ("random", [])):
                t0 = time.perf_counter()
                outcome = search(storage, sampler, distance, args.trials, ["--sampler", sampler, *extra])
                found = study_results(storage / sampler, data, x, y)
                counts = {k: v for k, v in outcome["trials"].items() if k != "total"}
                print(f"  search {sampler}, {args.trials} trials ({counts}, {time.perf_counter() - t0:.0f} s):")
                for label, acc in found.items():
                    print(row(f"  {label}", acc, ceiling), flush=True)
                if sampler == "tpe":
                    best_config, _, _ = study_trial_config(storage / sampler)
            for k in (int(m) for m in args.curve.split(",") if m):
                bigger = kdcore.generate(distance, train_per_domain=800 * k, valid_per_domain=100, seed=31337 + k)
                result = run_experiment(bigger, best_config, methods=("baseline", "student"))
                print(row(f"TPE best, {k}x training points", score(result.methods["student"].model, x, y), ceiling))
                print(row(f"baseline, {k}x training points", score(result.methods["baseline"].model, x, y), ceiling),
                      flush=True)
        print(f"  ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
