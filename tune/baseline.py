"""The tuned baseline (``--tune-baseline N``): a study's CE-only search, run as a study of its own in
``DIR/NAME/ce-baseline`` once the study's trials are all done, whose best trial's seeds become the
``tuned_baseline`` rows of the study's reference table.

It is a client of the runner and of resume (its own study is created by ``run_study`` and continued by
``resume``), so ``kdtune search`` and ``kdtune resume`` call it after them, never the other way round.
"""

from __future__ import annotations

import dataclasses

from optuna.trial import TrialState

from tune.outcome import SearchOutcome
from tune.plan import RunOptions, max_evaluations
from tune.resume import resume
from tune.runner import run_study
from tune.study import StudyMeta, StudyPaths, driver_lock, load_optuna_study
from tune.tables import TUNED_BASELINE, reference_rows, study_tables, tuned_summary

CE_BASELINE = "ce-baseline"  # the folder (and Optuna study) of a study's CE-only baseline search


def tuned_baseline(paths: StudyPaths, meta: StudyMeta, options: RunOptions) -> SearchOutcome:
    """The CE-only search of ``meta.tune_baseline`` trials: the study's space without its KD knobs, the same
    sampler seed, ASHA and resources, run as a study of its own in ``DIR/NAME/ce-baseline`` (resumed if it
    exists); its best trial's seeds become the ``tuned_baseline`` rows of the study's reference table."""
    space = meta.space(paths)
    nested = StudyPaths(paths.root / CE_BASELINE)
    if nested.meta.is_file():
        outcome = resume(nested.root, options=options)
    else:
        ce = space.without_kd()
        max_t = max_evaluations(ce)
        nested_meta = dataclasses.replace(
            meta, name=CE_BASELINE, space_name=ce.name, space_text=ce.source_text, num_samples=meta.tune_baseline,
            max_t=max_t, grace_period=min(meta.grace_period, max_t), references=False, tune_baseline=0)
        options.say(f"tuned baseline: a CE-only search of {meta.tune_baseline} trials in {nested.root}")
        outcome = run_study(nested, nested_meta, budget=meta.tune_baseline, sampler_seed=meta.seed,
                            options=options, new=True)
    study = load_optuna_study(nested)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if complete and study.best_trial.user_attrs.get("per_seed"):
        best = study.best_trial
        tables = study_tables(paths, meta, space)
        summary = tuned_summary(best.user_attrs, meta.task)
        tables.replace_method(reference_rows(meta.name, TUNED_BASELINE, summary, best.number), TUNED_BASELINE)
    return outcome


def with_tuned_baseline(outcome: SearchOutcome, paths: StudyPaths, meta: StudyMeta,
                        options: RunOptions) -> SearchOutcome:
    """Run (or finish) the study's CE-only baseline search once its own trials are all done."""
    if meta.tune_baseline <= 0 or outcome.interrupted:
        return outcome
    try:
        with driver_lock(paths):  # it writes this study's reference table
            base = tuned_baseline(paths, meta, options)
    except KeyboardInterrupt:
        outcome.interrupted = True
        return outcome
    outcome.interrupted = base.interrupted
    outcome.extra["tuned_baseline"] = base.to_dict()
    outcome.seconds += base.seconds
    return outcome
