"""Parameter importance of a study: which knobs separate its best COMPLETE trials from the rest.

PED-ANOVA (Optuna's own evaluator) on an in-memory Optuna study rebuilt from the trials rows, a bootstrap
over the trials for its uncertainty, and a second, simpler evaluator (variance explained) whose agreement
with it the report states; a ranking on too few trials is not shown at all.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from results.cells import knob_value, plain
from results.stats import spearman
from results.study_data import StudyData
from results.summaries import ranked_complete

# PED-ANOVA asks which knob values are over-represented among the best ("top quantile") trials. Optuna's
# documentation wants at least 5 trials in that top set; 5 trials stay a "top" set (a quarter or less of the
# study) only from 20 COMPLETE trials on. Below that the good set is the best two or three trials and the
# ranking moves with every new trial, so no ranking is shown at all.
MIN_IMPORTANCE_TRIALS = 20
IMPORTANCE_TOP_TRIALS = 5  # trials in PED-ANOVA's top set: target quantile = max(0.1, 5 / n)
BOOTSTRAP_RESAMPLES = 100
# A resample costs about 5 microseconds per (trial, knob) on one core (20 ms for 300 trials of the default
# space's 14 knobs); B is lowered (never below MIN_BOOTSTRAP_RESAMPLES) so that B * trials * knobs stays
# within this budget, about 1.5 s: 71 resamples for 300 trials of 14 knobs, 100 up to 214 trials.
BOOTSTRAP_WORK = 300_000
MIN_BOOTSTRAP_RESAMPLES = 30
INTERVAL = (0.05, 0.95)  # the bootstrap percentile interval reported (90 %)
AGREEMENT_RHO = 0.5  # Spearman rho below this (or another top knob) counts as the evaluators disagreeing
VARIANCE_BINS = 5  # quantile bins of a numeric knob for the variance-explained evaluator
_MIN_PER_BIN = 4
PED_ANOVA = "PED-ANOVA"
VARIANCE = "variance explained"


@dataclass(frozen=True)
class KnobImportance:
    """One knob's importance: PED-ANOVA on all COMPLETE trials, its bootstrap spread, the second evaluator.

    ``importance`` and ``variance`` are shares (each evaluator's sum over the knobs is 1); ``low``/``high``
    are the 5th/95th bootstrap percentiles; ``same_rank``/``top3`` the fraction of resamples in which the
    knob kept its rank / ranked among the top three (None without a bootstrap). A conditional knob names
    the knob its first condition is on (``parent``) and the condition in words.
    """

    path: str
    importance: float
    n_active: int
    variance: float
    mean: float | None = None
    low: float | None = None
    high: float | None = None
    same_rank: float | None = None
    top3: float | None = None
    parent: str | None = None
    condition: str | None = None
    depth: int = 0

    def label(self) -> str:
        """``kd.alpha``, or ``└ kd.alpha (kd.method=hinton)`` indented by depth for a conditional knob."""
        if not self.depth:
            return self.path
        return "  " * (self.depth - 1) + f"└ {self.path} ({self.condition})"

    def to_dict(self) -> dict[str, Any]:
        out = {k: _round(getattr(self, k)) for k in ("importance", "mean", "low", "high", "same_rank",
                                                      "top3", "variance")}
        return {"knob": self.path, **out, "n_active": self.n_active, "parent": self.parent,
                "condition": self.condition, "depth": self.depth}


@dataclass(frozen=True)
class Agreement:
    """How PED-ANOVA's ranking compares with the second evaluator's, with the sentence the report prints."""

    evaluators: tuple[str, str]
    tops: tuple[str | None, str | None]  # each evaluator's most important knob (None: all importances 0)
    spearman: float | None  # rank correlation over the knobs both scored (None: a ranking is constant)
    n_knobs: int
    agree: bool
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return {"evaluators": list(self.evaluators), "top": list(self.tops),
                "spearman": _round(self.spearman), "n_knobs": self.n_knobs, "agree": self.agree,
                "sentence": self.sentence}


@dataclass(frozen=True)
class Importance:
    """Parameter importance, or ``values`` None with the reason in ``note``.

    ``values`` are PED-ANOVA shares (sum 1) in the report's order: knobs without a condition by importance,
    each followed by its conditional children (by importance); ``knobs`` holds the same rows with the
    bootstrap spread, the active-trial counts and the second evaluator's shares.
    """

    values: dict[str, float] | None
    evaluator: str
    n_trials: int
    note: str | None = None
    knobs: tuple[KnobImportance, ...] = ()
    min_trials: int = MIN_IMPORTANCE_TRIALS
    target_quantile: float | None = None
    resamples: int = 0  # bootstrap resamples drawn (0: no bootstrap)
    random_state: int | None = None  # the bootstrap's seed (None when a Generator was passed in)
    second_evaluator: str | None = None
    agreement: Agreement | None = None
    separated: bool | None = None  # the top knob's 90 % interval lies above the runner-up's

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``values`` and ``method`` (the summary's ``importance`` / ``importance_method``)."""
        values = None if self.values is None else {k: _round(v) for k, v in self.values.items()}
        method = {
            "evaluator": self.evaluator, "n_trials": self.n_trials, "note": self.note,
            "min_trials": self.min_trials, "target_quantile": _round(self.target_quantile),
            "bootstrap": {"resamples": self.resamples, "random_state": self.random_state,
                          "interval": list(INTERVAL)} if self.resamples else None,
            "second_evaluator": self.second_evaluator,
            "second_values": ({k.path: _round(k.variance) for k in self.knobs} if self.knobs else None),
            "agreement": self.agreement.to_dict() if self.agreement else None,
            "separated": self.separated,
        }
        return {"values": values, "method": method, "knobs": [k.to_dict() for k in self.knobs]}


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def param_importance(study: StudyData, ranked: pd.DataFrame | None = None, *,
                     min_trials: int = MIN_IMPORTANCE_TRIALS, n_bootstrap: int = BOOTSTRAP_RESAMPLES,
                     random_state: int | np.random.Generator = 0) -> Importance:
    """PED-ANOVA importance (Optuna's own) of the COMPLETE trials, its bootstrap spread, a second opinion.

    An in-memory Optuna study is rebuilt from the trials rows, with distributions from the stored search
    space, so a conditional knob counts only where it was active (Optuna's conditional PED-ANOVA). The
    target quantile is Optuna's 10 %, raised so that at least 5 trials define "good". The bootstrap
    resamples the COMPLETE trials with replacement ``n_bootstrap`` times (fewer for a large study, see
    ``BOOTSTRAP_WORK``) with ``random_state``; the second evaluator is ``variance_explained``.
    """
    if isinstance(min_trials, bool) or not isinstance(min_trials, int) or min_trials < 2:
        raise ValueError(f"`min_trials >= 2` must hold, but got min_trials={min_trials!r}")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 0:
        raise ValueError(f"`n_bootstrap >= 0` must hold, but got n_bootstrap={n_bootstrap!r}")
    rng, seed = _generator(random_state)
    ranked = ranked_complete(study) if ranked is None else ranked
    n = len(ranked)
    name = f"{PED_ANOVA} (optuna.importance.PedAnovaImportanceEvaluator)"
    if study.space is None:
        return Importance(None, name, n, "no readable search space in the metadata", min_trials=min_trials)
    if n < min_trials:
        return Importance(None, name, n, f"{n} COMPLETE trial{'s' if n != 1 else ''} with an objective "
                          f"value; importance needs at least {min_trials}", min_trials=min_trials)
    import optuna

    knobs = {k.path: k for k in study.space.knobs}
    frozen, skipped = _frozen_trials(study, ranked, knobs, optuna)
    if len(frozen) < min_trials:
        return Importance(None, name, len(frozen), f"only {len(frozen)} COMPLETE trials fit the stored "
                          f"space; importance needs at least {min_trials}", min_trials=min_trials)
    n = len(frozen)
    quantile = min(0.5, max(0.1, IMPORTANCE_TOP_TRIALS / n))
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)
    name += f", target quantile {quantile:.2f}"
    with _Quiet(optuna):
        rebuilt = optuna.create_study(direction="maximize" if study.maximize else "minimize")
        rebuilt.add_trials(frozen)
        raw = optuna.importance.get_param_importances(rebuilt, evaluator=evaluator, normalize=False)
    paths = [p for p in knobs if p in raw]
    point = _shares([raw[p] for p in paths])
    active = {p: sum(p in t.params for t in frozen) for p in paths}
    variance = _shares([variance_explained([t.params[p] for t in frozen if p in t.params],
                                           [t.value for t in frozen if p in t.params],
                                           numeric=knobs[p].kind != "categorical") * active[p] / n
                        for p in paths])

    note = (f"importance of reaching the top {100 * quantile:.0f} % of {n} COMPLETE trials by "
            f"{study.objective_column}")
    if quantile != 0.1:
        note += (" (Optuna's get_param_importances on the same trials uses its default top 10 % and can "
                 "rank differently)")
    if skipped:
        note += f"; {skipped} trial(s) left out: values outside the stored space"
    resamples = min(n_bootstrap, max(MIN_BOOTSTRAP_RESAMPLES, BOOTSTRAP_WORK // max(1, n * len(paths))))
    spread: dict[str, _Spread] = {}
    if resamples and point.sum() > 0:
        try:
            spread = _bootstrap(frozen, paths, point, evaluator, study.maximize, rng, resamples, optuna)
        except _ViewMismatch as exc:
            note += f"; no bootstrap: {exc}"
        if spread and resamples < n_bootstrap:
            note += (f"; {resamples} bootstrap resamples instead of {n_bootstrap}, to keep {n} trials x "
                     f"{len(paths)} knobs fast")
    resamples = resamples if spread else 0

    rows = {p: _knob_row(knobs[p], float(point[i]), float(variance[i]), active[p], spread.get(p), set(paths))
            for i, p in enumerate(paths)}
    ordered = _tree_order(rows, knobs)
    values = {r.path: r.importance for r in ordered}
    if not point.sum() > 0:
        note += "; no knob separates the best trials from the rest (all importances 0)"
    by_point = sorted(paths, key=lambda p: -rows[p].importance)
    separated = None
    if spread and len(by_point) >= 2 and rows[by_point[0]].importance > 0:
        first, second = rows[by_point[0]], rows[by_point[1]]
        separated = bool(first.low is not None and second.high is not None and first.low > second.high)
    agreement = compare_rankings({p: rows[p].importance for p in paths}, {p: rows[p].variance for p in paths},
                                 names=(PED_ANOVA, VARIANCE), n_trials=n)
    return Importance(values, name, n, note, knobs=tuple(ordered), min_trials=min_trials,
                      target_quantile=quantile, resamples=resamples, random_state=seed,
                      second_evaluator=_VARIANCE_TEXT, agreement=agreement, separated=separated)


_VARIANCE_TEXT = (f"{VARIANCE}: per knob, the share of the objective's variance that its values explain "
                  f"(epsilon squared, numeric knobs in up to {VARIANCE_BINS} quantile bins) over the trials "
                  "where it was active, times the fraction of trials where it was; kdtune's own, in closed "
                  "form with no fitted model, because Optuna's fANOVA and mean-decrease-impurity evaluators "
                  "score only knobs active in every trial, so conditional knobs would drop out of the "
                  "agreement check")


def _generator(random_state: int | np.random.Generator) -> tuple[np.random.Generator, int | None]:
    if isinstance(random_state, np.random.Generator):
        return random_state, None
    if isinstance(random_state, bool) or not isinstance(random_state, int) or random_state < 0:
        raise ValueError("random_state must be an integer >= 0 or a numpy Generator, but got "
                         f"{random_state!r}")
    return np.random.default_rng(random_state), random_state


class _Quiet:
    """Optuna's INFO logging and its warnings about small regimes silenced (they repeat per resample)."""

    def __init__(self, optuna: Any) -> None:
        self._optuna = optuna
        self._warnings = warnings.catch_warnings()

    def __enter__(self) -> None:
        self._verbosity = self._optuna.logging.get_verbosity()
        self._optuna.logging.set_verbosity(self._optuna.logging.WARNING)
        self._warnings.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc: object) -> None:
        self._warnings.__exit__(None, None, None)  # restores the filters; never swallows an exception
        self._optuna.logging.set_verbosity(self._verbosity)


def _frozen_trials(study: StudyData, ranked: pd.DataFrame, knobs: dict[str, Any],
                   optuna: Any) -> tuple[list[Any], int]:
    """One FrozenTrial per COMPLETE row (its active knobs only), numbered in rank order, sharing the
    distribution objects; and how many rows did not fit the stored space."""
    distributions = {path: _distribution(k, optuna) for path, k in knobs.items()}
    columns = study.param_columns()
    out: list[Any] = []
    skipped = 0
    for row in ranked.to_dict("records"):
        params = {}
        for column, path in columns.items():
            value = plain(row.get(column))
            if value is not None and path in distributions:
                params[path] = knob_value(value, knobs[path])
        try:
            trial = optuna.trial.create_trial(params=params, value=float(row["_objective"]),
                                              distributions={p: distributions[p] for p in params})
        except ValueError:
            skipped += 1  # a value outside the stored space (the space was edited after the trial ran)
            continue
        number = len(out)
        out.append(optuna.trial.FrozenTrial(
            number=number, trial_id=number, state=trial.state, value=trial.value,
            datetime_start=trial.datetime_start, datetime_complete=trial.datetime_complete,
            params=trial.params, distributions=trial.distributions, user_attrs={}, system_attrs={},
            intermediate_values={}))
    return out, skipped


def _distribution(knob: Any, optuna: Any) -> Any:
    dist = optuna.distributions
    if knob.kind == "float":
        return dist.FloatDistribution(knob.low, knob.high, log=knob.log, step=knob.step)
    if knob.kind == "int":
        return dist.IntDistribution(knob.low, knob.high, log=knob.log, step=knob.step)
    return dist.CategoricalDistribution(list(knob.choices))


def _shares(raw: Any) -> np.ndarray:
    """Non-negative importances scaled to sum 1 (all zeros stay zeros)."""
    v = np.clip(np.nan_to_num(np.asarray(raw, dtype=float)), 0.0, None)
    total = v.sum()
    return v / total if total > 0 else v


class _ViewMismatch(RuntimeError):
    pass


class _CompleteTrials:
    """The part of an ``optuna.Study`` that PED-ANOVA reads: its COMPLETE trials and its direction.

    A bootstrap resample is a list of the same FrozenTrial objects, so no study is rebuilt (which would
    deep-copy every trial: 60 ms of the 80 ms a resample of 300 trials costs). A trial drawn twice keeps
    its id; PED-ANOVA picks its top set by value, so both copies land on the same side of the cut.
    """

    def __init__(self, trials: list[Any], direction: Any) -> None:
        self._trials = trials
        self.directions = [direction]

    def get_trials(self, deepcopy: bool = False, states: Any = None) -> list[Any]:
        return list(self._trials)

    def _is_multi_objective(self) -> bool:
        return False


def _bootstrap(frozen: list[Any], paths: list[str], point: np.ndarray, evaluator: Any, maximize: bool,
               rng: np.random.Generator, resamples: int,
               optuna: Any) -> dict[str, _Spread]:
    """Per knob: bootstrap mean, 5th and 95th percentile, P(same rank), P(top 3) of the PED-ANOVA share."""
    direction = optuna.study.StudyDirection.MAXIMIZE if maximize else optuna.study.StudyDirection.MINIMIZE

    def shares(trials: list[Any]) -> np.ndarray:
        raw = optuna.importance.get_param_importances(_CompleteTrials(trials, direction), evaluator=evaluator,
                                                      normalize=False)
        return _shares([raw.get(p, 0.0) for p in paths])

    draws = rng.integers(0, len(frozen), size=(resamples, len(frozen)))  # (B, n) trial indices
    with _Quiet(optuna):
        try:
            check = shares(frozen)
        except Exception as exc:  # noqa: BLE001 - an Optuna that reads more of a study than we provide
            raise _ViewMismatch(f"this Optuna reads more of a study than kdtune provides ({exc})") from None
        if not np.allclose(check, point, rtol=1e-9, atol=1e-12):
            raise _ViewMismatch("this Optuna scores a list of trials differently from a study")
        boot = np.stack([shares([frozen[i] for i in row]) for row in draws])  # (B, knobs)
    ranks = _ranks(boot)
    point_rank = _ranks(point[None, :])[0]
    low, high = np.quantile(boot, INTERVAL, axis=0)
    mean = boot.mean(axis=0)
    same = (ranks == point_rank).mean(axis=0)
    top3 = (ranks < 3).mean(axis=0)
    return {p: _Spread(float(mean[i]), float(low[i]), float(high[i]), float(same[i]), float(top3[i]))
            for i, p in enumerate(paths)}


def _ranks(values: np.ndarray) -> np.ndarray:
    """Rank 0 = largest, per row; tied knobs share the better rank (rows of zeros: all rank 0)."""
    return (values[:, None, :] > values[:, :, None]).sum(axis=2)


@dataclass(frozen=True)
class _Spread:
    """A knob's bootstrap summary (see ``KnobImportance``)."""

    mean: float
    low: float
    high: float
    same_rank: float
    top3: float


def _knob_row(knob: Any, importance: float, variance: float, n_active: int, spread: _Spread | None,
              scored: set[str]) -> KnobImportance:
    """The row of one knob; its parent is the first knob its conditions name that was scored."""
    condition = ", ".join(f"{c.path}={'|'.join(map(_choice_text, c.values))}" for c in knob.when) or None
    parent = next((c.path for c in knob.when if c.path in scored), None)
    return KnobImportance(
        path=knob.path, importance=importance, n_active=n_active, variance=variance,
        mean=spread.mean if spread else None, low=spread.low if spread else None,
        high=spread.high if spread else None, same_rank=spread.same_rank if spread else None,
        top3=spread.top3 if spread else None, parent=parent, condition=condition)


def _choice_text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _tree_order(rows: dict[str, KnobImportance], knobs: dict[str, Any]) -> list[KnobImportance]:
    """Knobs without a (scored) parent by importance, each followed by its children, depth-first.

    Ties keep the search space's order. A child whose parent was not scored is shown as a root.
    """
    from dataclasses import replace

    space_order = {p: i for i, p in enumerate(knobs)}
    children: dict[str | None, list[str]] = {}
    for path, row in rows.items():
        children.setdefault(row.parent, []).append(path)
    out: list[KnobImportance] = []
    seen: set[str] = set()

    def visit(parent: str | None, depth: int) -> None:
        for path in sorted(children.get(parent, []), key=lambda p: (-rows[p].importance, space_order[p])):
            if path in seen:
                continue
            seen.add(path)
            row = rows[path]
            out.append(row if row.depth == depth else replace(row, depth=depth))
            visit(path, depth + 1)

    visit(None, 0)
    # a cycle of conditions (the space parser rejects them) would leave knobs unvisited
    return out + [row for path, row in rows.items() if path not in seen]


def variance_explained(values: Any, objective: Any, *, numeric: bool, bins: int = VARIANCE_BINS) -> float:
    """The share of ``objective``'s variance explained by one knob's ``values``, corrected for chance.

    Epsilon squared of a one-way ANOVA: (SS_between - (k - 1) MS_within) / SS_total, clipped to 0..1, with
    one group per categorical value or, for a numeric knob, up to ``bins`` quantile bins of at least 4
    trials each. Pass only the trials where the knob was active. Without the correction a knob of pure
    noise would explain about (k - 1) / (n - 1) of the variance.
    """
    y = np.asarray(objective, dtype=float)
    if y.ndim != 1 or len(values) != y.size:
        raise ValueError(f"values and objective must be 1-D of one length, but got {len(values)} values and "
                         f"objective of shape {y.shape}")
    n = y.size
    if numeric:
        q = min(bins, n // _MIN_PER_BIN)
        if q < 2:
            return 0.0
        groups = pd.qcut(pd.Series(values, dtype=float), q=q, labels=False, duplicates="drop").to_numpy()
    else:
        groups = pd.factorize(pd.Series([repr(v) for v in values], dtype=object))[0]
    k = int(np.unique(groups).size)
    total = float(((y - y.mean()) ** 2).sum())
    if k < 2 or n <= k or not total > 0:
        return 0.0
    between = sum(float((groups == g).sum()) * (float(y[groups == g].mean()) - float(y.mean())) ** 2
                  for g in np.unique(groups))
    within = (total - between) / (n - k)
    return float(min(1.0, max(0.0, (between - (k - 1) * within) / total)))


def compare_rankings(first: Mapping[str, float], second: Mapping[str, float], *, names: tuple[str, str],
                     n_trials: int) -> Agreement:
    """Whether two evaluators rank the knobs alike: the same top knob and Spearman rho >= AGREEMENT_RHO."""
    knobs = [k for k in first if k in second]
    a = np.array([first[k] for k in knobs], dtype=float)
    b = np.array([second[k] for k in knobs], dtype=float)
    tops = (_top(knobs, a), _top(knobs, b))
    rho = spearman(a, b) if knobs else None
    rho_text = f"Spearman ρ = {rho:.2f} over {len(knobs)} knobs" if rho is not None else \
        f"{len(knobs)} knobs"
    if tops[0] is None and tops[1] is None:
        return Agreement(names, tops, rho, len(knobs), True,
                         f"Neither {names[0]} nor {names[1]} finds a knob that matters at {n_trials} "
                         "COMPLETE trials.")
    agree = tops[0] == tops[1] and (rho is None or rho >= AGREEMENT_RHO)
    if agree:
        return Agreement(names, tops, rho, len(knobs), True,
                         f"{names[0]} and {names[1]} agree: both rank `{tops[0]}` first ({rho_text}).")
    said = [f"{name} ranks `{top}` first" if top else f"{name} finds no knob that matters"
            for name, top in zip(names, tops)]
    return Agreement(names, tops, rho, len(knobs), False,
                     f"The evaluators disagree: {said[0]}, {said[1]} ({rho_text}); do not trust this ranking "
                     f"at {n_trials} COMPLETE trials.")


def _top(knobs: list[str], values: np.ndarray) -> str | None:
    if not values.size or not values.max() > 0:
        return None
    return knobs[int(np.argmax(values))]  # ties: the first in the search space's order
