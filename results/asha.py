"""kdtune's ASHA rungs, and what a study's trials did at them.

``asha_rungs`` is pure and imports nothing heavy: ``tune.scheduler`` and ``tune.trainable`` lay out the
scheduler's rungs with it in every Ray worker. The two functions that read a study import pandas when called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from results.study_data import StudyData


def asha_rungs(grace_period: int, reduction_factor: int, max_t: int) -> list[int]:
    """The rungs of kdtune's ASHA (``tune.scheduler.RungASHA``): the first at ``grace`` (if below ``max_t``),
    then ``grace * rf**k`` only while a trial promoted there still has ``rf`` times as far to go
    (``grace * rf**(k + 1) <= max_t``).

    Ray's own layout puts rungs up to ``max_t``: with a 200-evaluation trial and a first rung at 66 it
    compares again at 198, where stopping saves 1 % of the trial and throws its result away.
    """
    if grace_period >= max_t:
        return []
    out, milestone = [grace_period], grace_period * reduction_factor
    while milestone * reduction_factor <= max_t:
        out.append(milestone)
        milestone *= reduction_factor
    return out


@dataclass(frozen=True)
class AshaSettings:
    """The ASHA scheduler of a study: a trial is compared with its peers at ``grace_period * rf**k``."""

    grace_period: int
    reduction_factor: int
    max_t: int
    counts: str | None = None  # what the rungs count (study.json ``asha_counts``); None: every evaluation

    @property
    def measured_phase(self) -> bool:
        """True when the rungs count only the evaluations of the student's last phase (the measured one)."""
        return self.counts is not None

    def rungs(self) -> list[int]:
        """Milestones (evaluations reported) at which ASHA compares trials (``asha_rungs``)."""
        return asha_rungs(self.grace_period, self.reduction_factor, self.max_t)


def iterations_reached(study: StudyData) -> pd.DataFrame:
    """Per recorded trial: its status and how many evaluations it reported (epochs table, else trials)."""
    import pandas as pd

    trials = study.trials[["trial_id", "status", "iterations"]].dropna(subset=["trial_id"])
    if trials.empty:
        return pd.DataFrame({"trial_id": [], "status": [], "iterations": []})
    reached = study.epochs.dropna(subset=["trial_id"]).groupby("trial_id")["iteration"].max()
    out = trials.drop_duplicates("trial_id", keep="last").set_index("trial_id")
    from_epochs = reached.reindex(out.index)
    out["iterations"] = from_epochs.fillna(pd.to_numeric(out["iterations"], errors="coerce")).fillna(0)
    if study.asha is not None and study.asha.measured_phase:  # the rungs count the last phase only
        out["iterations"] = (out["iterations"] - _earlier_phases(study, out)).clip(lower=0)
    out["iterations"] = out["iterations"].astype("int64")
    return out.reset_index()


def _earlier_phases(study: StudyData, trials: pd.DataFrame) -> list[int]:
    """Per trial (rows of ``trials``, indexed by trial id), the evaluations its method ran before its last
    phase (annealing KD's phase 1): what ASHA did not count. The method says (``kdcore.METHODS``)."""
    from kdcore import evaluations_before_measured_phase
    from results.cells import knob_value, plain

    if study.space is None:
        return [0] * len(trials)
    rows = study.trials.drop_duplicates("trial_id", keep="last").set_index("trial_id")
    knobs = {k.path: k for k in study.space.knobs}
    out = []
    for trial_id in trials.index:
        row = rows.loc[trial_id]
        params = {path: knob_value(plain(row.get(column)), knobs.get(path))
                  for column, path in study.param_columns().items() if plain(row.get(column)) is not None}
        try:
            config = study.space.experiment(params)
        except Exception:  # noqa: BLE001 - a row the space no longer builds: count it as one phase
            out.append(0)
            continue
        out.append(evaluations_before_measured_phase(config.kd, config.student.epochs, config.eval_every))
    return out


def rung_outcomes(study: StudyData) -> list[dict[str, int]] | None:
    """Per ASHA rung, what became of the trials that reached it (reported ``milestone`` evaluations):
    ``stopped`` there (PRUNED before the next rung), ``failed`` there (ERROR before the next rung),
    ``promoted`` (went on past the rung) and ``ended`` (finished at the rung on their own: COMPLETE with
    exactly that many evaluations). ``before`` on the first entry counts the trials that ended before the
    first rung. None when the study's ASHA settings are unknown (no readable ``study.json``).
    """
    if study.asha is None:
        return None
    reached = iterations_reached(study)
    iters = reached["iterations"].to_numpy()
    status = reached["status"].to_numpy()
    rungs = [m for m in study.asha.rungs() if m >= 1]
    out = []
    for i, milestone in enumerate(rungs):
        nxt = rungs[i + 1] if i + 1 < len(rungs) else None
        here = (iters >= milestone) & ((iters < nxt) if nxt is not None else True)
        stopped, failed = here & (status == "PRUNED"), here & (status == "ERROR")
        promoted = (iters > milestone) & ~stopped & ~failed
        reach = iters >= milestone
        out.append({"milestone": milestone, "reached": int(reach.sum()), "stopped": int(stopped.sum()),
                    "failed": int(failed.sum()), "promoted": int(promoted.sum()),
                    "ended": int((reach & ~stopped & ~failed & ~promoted).sum()),
                    "before": int((iters < milestone).sum()) if i == 0 else 0})
    return out


def rung_survivors(study: StudyData) -> list[dict[str, int]] | None:
    """Per ASHA milestone: trials that reached it, and how many of those went on to COMPLETE.

    None when the study's ASHA settings are unknown (no readable ``study.json``).
    """
    if study.asha is None:
        return None
    reached = iterations_reached(study)
    iters = reached["iterations"].to_numpy()
    complete = (reached["status"] == "COMPLETE").to_numpy(dtype=bool)
    milestones = [1, *[m for m in study.asha.rungs() if m > 1]]
    return [{"milestone": r, "reached": int((iters >= r).sum()),
             "complete": int(((iters >= r) & complete).sum())} for r in milestones]
