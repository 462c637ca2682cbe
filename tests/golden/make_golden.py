"""Writes the golden figures that ``tests/test_golden.py`` holds the code to: run it once, before a change
that must not change any result, and commit what it writes.

    python tests/golden/make_golden.py          # -> tests/golden/train.json, analyse.json, study/

What it records: ``kdtune train --json`` on five recipes (every KD method, both inner protocols, three
tasks), and a small fixed study (smoke space, 4 trials one at a time, a tuned baseline of 2) whose
tables (trials, seeds, reference) and ``kdtune analyse --json`` are kept. Times and paths are not compared
(see ``tests/golden/compare.py``).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from tests.golden.cases import STUDY_ARGS, TRAIN_CASES, analyse_json, study_tables, train_json
from tests.study_runs import run_kdtune


def main() -> None:
    train = {name: train_json(args, Path(tempfile.mkdtemp())) for name, args in TRAIN_CASES.items()}
    (HERE / "train.json").write_text(json.dumps(train, indent=1, sort_keys=True) + "\n")
    storage = Path(tempfile.mkdtemp(prefix="kdg-", dir="/tmp"))
    proc = run_kdtune("search", *STUDY_ARGS, "--name", "g", "--storage", str(storage), "--quiet", timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"the golden study failed:\n{proc.stderr[-3000:]}")
    study = HERE / "study"
    shutil.rmtree(study, ignore_errors=True)
    # What ``kdtune analyse`` reads: the record, the Optuna journal and the tables (also the CE baseline's).
    ignore = shutil.ignore_patterns("teachers", "t_*", "experiment_state*", "analysis", "basic-variant*",
                                    "search_gen_state*", "searcher-state*", ".validate_storage_marker", "tuner.pkl", "trainable.pkl", ".*lock*")
    shutil.copytree(storage / "g", study, ignore=ignore, symlinks=True)
    (HERE / "tables.json").write_text(json.dumps(study_tables(study), indent=1, sort_keys=True) + "\n")
    (HERE / "analyse.json").write_text(json.dumps(analyse_json(study), indent=1, sort_keys=True) + "\n")
    shutil.rmtree(storage, ignore_errors=True)


if __name__ == "__main__":
    main()
