"""``kdtune resume``: continue an interrupted study, or extend a finished one, from its folder alone.

One source of truth: the Optuna study (``optuna.journal``). Ray Tune's own experiment state is not
restored: after a SIGKILL it lags Optuna by seconds, and ``Tuner.restore`` then fails with
``UpdateFinishedTrialError`` and leaves stale RUNNING trials behind. Instead, under the study's driver lock:

1. every Optuna trial still RUNNING (or its driver died) is ended FAIL with ``interrupted=True`` and its
   parameters are enqueued, so the same configuration runs again; interrupted trials use no budget;
2. the Parquet tables are made to agree with Optuna: rows of trials Optuna does not hold as ended are
   dropped, and ended trials without rows (the driver died between telling Optuna and writing) get rows
   rebuilt from what the searcher stored on the Optuna trial;
3. a fresh Tune experiment in the same folder runs what is left of the budget, with TPE seeing every
   earlier trial (the sampler is re-seeded from the number of trials so far, so it does not replay).

The study's tuned baseline (``--tune-baseline``) is not continued here: the command does that after
(``tune.baseline.with_tuned_baseline``), and the tuned baseline's own CE-only study resumes through here.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from tune.errors import KDTuneError
from tune.faults import writable_folder
from tune.outcome import SearchOutcome, end_stale_trials, is_interrupted, read_outcome, trial_counts
from tune.plan import RunOptions, check_gpus
from tune.recorder import rows_from_optuna
from tune.reference import record_missing_ablation
from tune.runner import run_study
from tune.study import (
    STUDY_FILE,
    StudyMeta,
    StudyPaths,
    driver_lock,
    ensure_optuna_study,
    is_unborn,
    load_optuna_study,
)
from tune.tables import study_tables


def reconcile_tables(paths: StudyPaths, meta: StudyMeta, study: Any) -> dict[str, int]:
    """Make the Parquet tables hold exactly the trials the Optuna study holds as ended."""
    space = meta.space(paths)
    tables = study_tables(paths, meta, space)
    ended = {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}
    truth = {t.user_attrs.get("ray_trial_id", f"optuna-{t.number}"): t
             for t in study.get_trials(deepcopy=False) if t.state in ended and not is_interrupted(t)}
    present = tables.trial_ids()
    stray = present - set(truth)
    tables.drop_trials(stray)
    knobs = [k.path for k in space.knobs]
    missing = [t for tid, t in truth.items() if tid not in present]
    for t in missing:
        tables.record_trial(*rows_from_optuna(meta.name, t, knobs))
    tables.compact()  # the parts of the run that stopped become one file per table
    return {"dropped": len(stray), "rebuilt": len(missing)}


def resume(study_dir: str | Path, *, more: int = 0, options: RunOptions | None = None) -> SearchOutcome:
    """Continue the study at ``study_dir`` up to its budget, plus ``more`` trials (its tuned baseline aside)."""
    options = options or RunOptions()
    if more < 0:
        raise KDTuneError(f"--more must be >= 0, but got {more}")
    root = Path(study_dir).expanduser()
    if not root.exists():
        raise KDTuneError(f"no study at {root}")
    paths = StudyPaths(root.resolve())
    if is_unborn(paths):
        # Only an older kdtune left such a folder (a study is now born whole): nothing in it to resume.
        raise KDTuneError(f"{paths.root} holds no {STUDY_FILE}: a search stopped before it was set up; "
                          f"`kdtune search --name {paths.name}` starts it afresh there")
    meta = StudyMeta.read(paths)
    check_gpus(meta.gpus_per_trial, options.cluster.address, "the study's gpus_per_trial")
    unwritable = writable_folder(paths.root)
    if unwritable is not None:  # refused before Ray starts; nothing is touched
        raise KDTuneError(f"cannot resume {paths.root}: {unwritable}; make it writable or copy the study folder "
                          "to one that is, then resume the copy")
    with driver_lock(paths):
        # A driver killed while appending to the journal leaves its lock behind; Optuna would wait 30 s on it.
        # We hold the study's driver lock, so no one else is writing.
        stale_lock = paths.root / f"{paths.journal.name}.lock"
        if os.path.lexists(stale_lock):
            os.unlink(stale_lock)
        # Made with the folder; only a study an older kdtune stopped that early has none yet. (Its user
        # attributes are brought up to date by run_study, once Ray is up: a resume that cannot start
        # changes nothing.)
        study = (load_optuna_study(paths, meta) if paths.journal.is_file()
                 else ensure_optuna_study(paths, meta, meta.space().objective.direction))
        end_stale_trials(study, paths)
        if more:  # written by run_study once Ray is up: a resume --more that cannot start changes nothing
            meta = dataclasses.replace(meta, num_samples=meta.num_samples + more)
        reconcile_tables(paths, meta, study)
        trials = study.get_trials(deepcopy=False)
        left = meta.num_samples - trial_counts(trials)["total"]
        if left <= 0:
            if more:
                meta.write(paths)
            note = record_missing_ablation(paths, meta, options)
            outcome = read_outcome(paths, meta)
            outcome.extra["note"] = note or (f"the study already holds its {meta.num_samples} trials; "
                                             "add more with --more N")
        else:
            outcome = run_study(paths, meta, budget=left, sampler_seed=meta.seed + len(trials), options=options,
                                write_meta=bool(more))
    return outcome
