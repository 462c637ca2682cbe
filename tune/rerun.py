"""The experiment a study's trial stands for, so that ``kdtune train --from DIR/NAME`` re-trains it exactly.

The trial's params come from the Optuna study (full precision, not the rounded figures of a report), and
the study's own space (as written in ``study.json``) turns them into the experiment, so the space's fixed
settings apply exactly as they did in the trial. Imports optuna only when called, and never Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdcore import ExperimentConfig
from tune.errors import KDTuneError
from tune.study import StudyMeta, StudyPaths, load_optuna_study

RETRAINABLE = ("COMPLETE", "PRUNED")


def _by_number(study: Any, root: Path, number: int) -> Any:
    """Trial ``number``, which must have ended COMPLETE or PRUNED with params."""
    trials = study.get_trials(deepcopy=False)
    found = next((t for t in trials if t.number == number), None)
    if found is None:
        numbers = f"numbered 0 to {len(trials) - 1}" if trials else "none yet"
        raise KDTuneError(f"study {root} has no trial {number}; its trials are {numbers}")
    state = found.state.name
    if state not in RETRAINABLE:
        raise KDTuneError(f"trial {number} of study {root} is {state}; only a COMPLETE or PRUNED trial names "
                          "a configuration to re-train")
    if not found.params:
        raise KDTuneError(f"trial {number} of study {root} is {state} but holds no params to re-train")
    return found


def _by_rank(study: Any, root: Path, rank: int) -> Any:
    """The ``rank``-th best COMPLETE trial (1 = best) in the study's direction, ties to the lower number."""
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.value is not None]
    if not complete:
        raise KDTuneError(f"study {root} has no COMPLETE trial yet, so it has no best configuration; name a "
                          "PRUNED one with --trial N, or run more with `kdtune resume`")
    if rank > len(complete):
        raise KDTuneError(f"--rank must be at most the number of COMPLETE trials of study {root} "
                          f"({len(complete)}), but got {rank}")
    sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
    return sorted(complete, key=lambda t: (sign * t.value, t.number))[rank - 1]


def study_trial_config(study_dir: str | Path, trial: int | None = None, rank: int | None = None,
                       seeds: Sequence[int] | None = None) -> tuple[ExperimentConfig, str, dict[str, Any]]:
    """The experiment, data spec and a description of one trial of the study at ``study_dir``.

    ``trial`` is an Optuna trial number (COMPLETE or PRUNED); ``rank`` ranks the COMPLETE trials by their
    value (1 = best); neither means rank 1. ``seeds`` replaces the study's seeds. The description holds
    ``study``, ``trial``, ``params``, ``state``, ``value`` (of the objective ``metric``) and the data's
    ``fingerprint`` at study time.
    """
    if trial is not None and rank is not None:
        raise KDTuneError(f"--trial and --rank each choose the trial; give one of them, but got "
                          f"--trial {trial} and --rank {rank}")
    if rank is not None and rank < 1:
        raise KDTuneError(f"--rank must be >= 1 (1 = the best trial), but got {rank}")
    paths = StudyPaths(Path(study_dir).expanduser().resolve())
    meta = StudyMeta.read(paths)
    study = load_optuna_study(paths, meta)
    if trial is not None:
        chosen = _by_number(study, paths.root, trial)
    else:
        chosen = _by_rank(study, paths.root, 1 if rank is None else rank)
    params = dict(chosen.params)
    space = meta.space(paths)
    config = space.experiment(params)
    if seeds is not None:
        config = config.with_overrides({"seeds": list(seeds)})
    description = {"study": str(paths.root), "trial": chosen.number, "params": params,
                   "state": chosen.state.name, "value": chosen.value, "metric": space.objective.metric,
                   "fingerprint": meta.fingerprint}
    return config, meta.data, description


def check_data(description: dict[str, Any], fingerprint: str, source: str) -> None:
    """Refuse data that is no longer what the study trained on: the re-run would not be the trial's."""
    expected = description["fingerprint"]
    if fingerprint != expected:
        raise KDTuneError(f"the study's data {source} has changed since the study ran (sha256 "
                          f"{expected[:12]} expected, but it is now {fingerprint[:12]}), so its trials "
                          "cannot be re-trained exactly")
