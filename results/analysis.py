"""The numbers behind ``kdtune analyse``, computed from a study's Parquet tables alone (no Ray, no journal).

Works on a running, interrupted or finished study: every function accepts tables that are partial, hold only
PRUNED trials, or hold no rows at all, and says so through ``None`` results and notes rather than raising.
Accuracies stay fractions in 0..1 here; the report and the plots turn them into percentages.

The comparison with the mixed baseline pairs seed s of a trial with seed s of the baseline (the same data
split and initialisation seed) and tests the per-seed holdout differences with an exact sign-flip
permutation test: with a handful of seeds it assumes nothing about their distribution, and its p-value can
be checked by hand (5 seeds, all differences of one sign: p = 2 / 2**5 = 0.0625, the smallest possible).
A study that searches ``kd.method`` compares each method's best trial with the best ``none`` trial the same
way (``method_comparison``): every trial of a study runs the same seeds and folds.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from results.errors import ResultsError
from results.reader import metadata_path, read_metadata, read_table, results_dir
from results.schema import STATUSES, TABLES, param_column
from results.writer import table_path

STUDY_FILE = "study.json"  # the study's own record beside results/ (written by tune.study; read here as JSON)
DEFAULT_OBJECTIVE = {"metric": "inner_acc", "mode": "max"}
MAX_EXACT_SEEDS = 16  # 2**16 sign assignments; beyond that the permutation test samples them

# Columns a study of an older kdtune may lack (student_params, projector_params, head, holdout_class_acc,
# params, classes) read as all-null here, and the sections built on them say "not recorded".
_TRIAL_COLUMNS = ("trial_id", "number", "status", "inner_acc_mean", "inner_acc_std", "holdout_acc_mean",
                  "holdout_acc_std", "inner_loss_mean", "holdout_loss_mean", "best_epoch", "epochs_run",
                  "iterations", "student_params", "projector_params", "head")
_EPOCH_COLUMNS = ("trial_id", "number", "iteration", "epoch", "inner_acc_mean", "holdout_acc_mean")
_SEED_COLUMNS = ("trial_id", "seed", "inner_acc", "holdout_acc", "holdout_class_acc")
_REFERENCE_COLUMNS = ("method", "seed", "trial_number", "inner_acc", "holdout_acc", "params", "classes",
                      "holdout_class_acc")
TEACHER_PREFIX = "teacher_"  # reference method teacher_K: teacher K of the task (kdcore.task.Teacher.name)
# The references a best student is compared with, the fairest first: a baseline tuned with the student's
# budget, the best configuration without its KD term, the fixed-recipe mixed baseline.
COMPARISONS = {
    "tuned_baseline": "the best of a CE-only search with the same sampler (--tune-baseline)",
    "ablation": "the best configuration retrained without its KD term, same recipe and seeds",
    "baseline": "the mixed baseline with the space's fixed settings",
}


@dataclass(frozen=True)
class AshaSettings:
    """The ASHA scheduler of a study: a trial is compared with its peers at ``grace_period * rf**k``."""

    grace_period: int
    reduction_factor: int
    max_t: int

    def rungs(self) -> list[int]:
        """Milestones (evaluations reported) at which ASHA compares trials (``asha_rungs``)."""
        return asha_rungs(self.grace_period, self.reduction_factor, self.max_t)


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
class StudyData:
    """A study's tables and metadata as read from ``DIR/NAME/results`` (tables may be empty)."""

    root: Path
    name: str
    metadata: dict[str, Any]
    trials: pd.DataFrame
    epochs: pd.DataFrame
    seeds: pd.DataFrame
    reference: pd.DataFrame
    tables: dict[str, Path]
    asha: AshaSettings | None = None
    planned: int | None = None
    space: Any = None  # search_spaces.SearchSpace, or None when the stored space text no longer parses
    notes: list[str] = field(default_factory=list)

    @property
    def objective(self) -> dict[str, str]:
        objective = self.metadata.get("objective") or {}
        return {"metric": str(objective.get("metric", DEFAULT_OBJECTIVE["metric"])),
                "mode": str(objective.get("mode", DEFAULT_OBJECTIVE["mode"]))}

    @property
    def objective_column(self) -> str:
        return f"{self.objective['metric']}_mean"

    @property
    def maximize(self) -> bool:
        return self.objective["mode"] != "min"

    def param_columns(self) -> dict[str, str]:
        """``{column: knob path}`` for every parameter column of the trials table, in knob order."""
        present = [c for c in self.trials.columns if str(c).startswith("param_")]
        known = {param_column(k.path): k.path for k in self.space.knobs} if self.space is not None else {}
        ordered = [c for c in known if c in present] + [c for c in present if c not in known]
        return {c: known.get(c, c.removeprefix("param_").replace("__", ".")) for c in ordered}


def load_study(study_dir: str | os.PathLike[str]) -> StudyData:
    """Read every table of the study at ``study_dir``; ResultsError if it is not a study with tables."""
    root = Path(study_dir).expanduser()
    if not root.is_dir():
        raise ResultsError(f"no study at {root} (not a folder); give the study folder DIR/NAME")
    if root.name == "results" and not results_dir(root).is_dir() and metadata_path(root.parent).is_file():
        raise ResultsError(f"{root} is the tables folder of a study; give the study folder {root.parent}")
    if not results_dir(root).is_dir():
        raise ResultsError(f"{root} is not a kdtune study with results (no results/ folder in it); "
                           "give the study folder DIR/NAME that `kdtune search` created")
    metadata = read_metadata(root)
    root = root.resolve()
    paths = {t: table_path(results_dir(root), t) for t in TABLES}
    tables = {t: p for t, p in paths.items() if p.exists()}  # a folder, or an older kdtune's file
    if not tables:
        raise ResultsError(f"{root} has no tables yet (no table in {results_dir(root)}); "
                           "the study has recorded nothing so far")
    frames = {t: read_table(root, t) for t in TABLES}
    notes: list[str] = []
    space = _parse_space(metadata.get("space"), notes)
    asha, planned = _study_record(root)
    study = StudyData(
        root=root, name=str(metadata.get("study") or root.name), metadata=metadata,
        trials=_with_columns(frames["trials"], _TRIAL_COLUMNS),
        epochs=_with_columns(frames["epochs"], _EPOCH_COLUMNS),
        seeds=_with_columns(frames["seeds"], _SEED_COLUMNS),
        reference=_with_columns(frames["reference"], _REFERENCE_COLUMNS),
        tables=tables, asha=asha, planned=planned, space=space, notes=notes,
    )
    if study.objective_column not in study.trials.columns:
        study.trials[study.objective_column] = np.nan
    return study


def _with_columns(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """The frame with every column the analysis reads (all-null where a missing table had none)."""
    frame = frame.copy()
    for column in columns:
        if column not in frame.columns:
            frame[column] = pd.Series(np.nan, index=frame.index, dtype="float64")
    return frame


def _parse_space(text: Any, notes: list[str]) -> Any:
    if not isinstance(text, str) or not text.strip():
        notes.append("the metadata holds no search space: knob names are read from the column names")
        return None
    from search_spaces import SpaceError, parse_space

    try:
        return parse_space(text, source="metadata:space")
    except SpaceError as exc:
        notes.append(f"the stored search space no longer parses ({exc}); knob names are read from the "
                     "column names and importance is not computed")
        return None


def _study_record(root: Path) -> tuple[AshaSettings | None, int | None]:
    """ASHA settings and the planned number of trials, from ``DIR/NAME/study.json`` when it is readable."""
    path = root / STUDY_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, None
    planned = record.get("num_samples")
    planned = int(planned) if isinstance(planned, int) and planned > 0 else None
    try:
        asha = AshaSettings(int(record["grace_period"]), int(record["reduction_factor"]),
                            int(record["max_t"]))
    except (KeyError, TypeError, ValueError):
        return None, planned
    valid = asha.grace_period >= 1 and asha.reduction_factor >= 2 and asha.max_t >= asha.grace_period
    return (asha if valid else None), planned


# --------------------------------------------------------------------------------------------- statistics

def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (via the regularized incomplete beta)."""
    if df <= 0:
        raise ValueError(f"`df > 0` must hold, but got df={df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on ``t_cdf``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"`0 < p < 1` must hold, but got p={p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) by its continued fraction (Numerical Recipes, betacf)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _betacf(a: float, b: float, x: float) -> float:
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        even = m * (b - m) * x / ((qam + m2) * (a + m2))
        odd = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        for aa in (even, odd):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def sign_flip_p_value(diffs: Any, *, max_exact: int = MAX_EXACT_SEEDS, n_resamples: int = 65536,
                      random_state: int = 0) -> float:
    """Two-sided p-value of "the paired differences are symmetric about 0" (sign-flip permutation test).

    Exact over all ``2**n`` sign assignments for ``n <= max_exact``; otherwise ``n_resamples`` random
    assignments drawn with ``random_state``, counted with the observed one, so p is never 0.
    """
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 1 or d.size == 0 or not np.isfinite(d).all():
        raise ValueError(f"diffs must be a non-empty 1-D array of finite numbers, but got {diffs!r}")
    n = d.size
    observed = abs(d.mean())
    tolerance = 1e-12 * max(1.0, float(np.abs(d).max()))
    if n <= max_exact:
        # (2**n, n) matrix of +-1: row i flips the signs given by the bits of i
        signs = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        means = np.abs(signs @ d) / n
        return float(np.mean(means >= observed - tolerance))
    rng = np.random.default_rng(random_state)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n_resamples, n))
    hits = int(np.sum(np.abs(signs @ d) / n >= observed - tolerance))
    return (hits + 1) / (n_resamples + 1)


@dataclass(frozen=True)
class PairedTest:
    """Trial minus baseline on per-seed holdout accuracy: mean difference, 95 % t interval, p-value."""

    n: int
    diff_mean: float
    ci95: tuple[float, float] | None
    p_value: float
    test: str

    def to_dict(self) -> dict[str, Any]:
        return {"diff_mean": self.diff_mean, "ci95": list(self.ci95) if self.ci95 else None,
                "p_value": self.p_value, "test": self.test, "n_seeds": self.n}


def paired_test(trial: Mapping[int, float], baseline: Mapping[int, float]) -> PairedTest | None:
    """Compare ``{seed: accuracy}`` of a trial with the baseline's on the seeds both have (None if none)."""
    seeds = sorted(s for s in trial if s in baseline
                   and _finite(trial[s]) and _finite(baseline[s]))
    if not seeds:
        return None
    d = np.array([float(trial[s]) - float(baseline[s]) for s in seeds])
    n = d.size
    mean = float(d.mean())
    ci = None
    if n >= 2:
        half = t_quantile(0.975, n - 1) * float(d.std(ddof=1)) / math.sqrt(n)
        ci = (mean - half, mean + half)
    exact = n <= MAX_EXACT_SEEDS
    how = f"exact over 2^{n} sign assignments" if exact else "65536 random sign assignments"
    test = (f"paired sign-flip permutation test, two-sided, {how}, {n} seed{'s' if n != 1 else ''}; "
            f"95% CI: Student t (df={n - 1})" if n >= 2 else
            "paired sign-flip permutation test, two-sided, 1 seed (uninformative: p = 1); no CI")
    return PairedTest(n=n, diff_mean=mean, ci95=ci, p_value=sign_flip_p_value(d), test=test)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


# -------------------------------------------------------------------------------------------- summaries

def status_counts(trials: pd.DataFrame) -> dict[str, int]:
    """Trials by status (every known status, zeros included, then any other) and ``total``."""
    counts = trials["status"].value_counts(dropna=False) if len(trials) else pd.Series(dtype="int64")
    out = {s: int(counts.get(s, 0)) for s in STATUSES}
    for status, count in counts.items():
        key = "UNKNOWN" if pd.isna(status) else str(status)
        if key not in out:
            out[key] = out.get(key, 0) + int(count)
    out["total"] = len(trials)
    return out


def ranked_complete(study: StudyData) -> pd.DataFrame:
    """COMPLETE trials with a finite objective, best first (ties: lower trial number first)."""
    trials, column = study.trials, study.objective_column
    objective = pd.to_numeric(trials[column], errors="coerce")
    done = trials[(trials["status"] == "COMPLETE") & np.isfinite(objective.to_numpy(dtype=float))].copy()
    done["_objective"] = objective[done.index].astype(float)
    done["_number"] = pd.to_numeric(done["number"], errors="coerce").fillna(np.inf)
    return done.sort_values(["_objective", "_number"], ascending=[not study.maximize, True], kind="mergesort")


def trial_params(row: Mapping[str, Any], study: StudyData) -> dict[str, Any]:
    """``{knob path: value}`` of the knobs active in a trials row (inactive knobs are null there)."""
    knobs = {k.path: k for k in study.space.knobs} if study.space is not None else {}
    out: dict[str, Any] = {}
    for column, path in study.param_columns().items():
        value = _python(row.get(column))
        if value is None:
            continue
        out[path] = _as_knob_value(value, knobs.get(path))
    return out


def _python(value: Any) -> Any:
    """A plain Python scalar, or None for null / NaN."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _as_knob_value(value: Any, knob: Any) -> Any:
    """Undo what a nullable column did to a value: integer knobs read back as floats."""
    kind = getattr(knob, "kind", None)
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind == "categorical":
        for choice in knob.choices:
            if isinstance(choice, bool) == isinstance(value, bool) and choice == value:
                return choice
    return value


def _mean_std(values: pd.Series) -> tuple[float | None, float | None]:
    v = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
    if v.size == 0:
        return None, None
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None)


def reference_summary(reference: pd.DataFrame) -> list[dict[str, Any]]:
    """Per reference method (baseline first, then the others by name): seeds, inner and holdout mean and
    std, and the parameters of one network (None where not recorded)."""
    if reference.empty:
        return []
    out = []
    methods = sorted(reference["method"].dropna().unique(), key=lambda m: (m != "baseline", str(m)))
    for method in methods:
        rows = reference[reference["method"] == method]
        inner_mean, inner_std = _mean_std(rows["inner_acc"])
        holdout_mean, holdout_std = _mean_std(rows["holdout_acc"])
        params = _first_int(rows["params"]) if "params" in rows.columns else None
        out.append({"method": str(method), "n_seeds": int(rows["seed"].nunique()),
                    "inner_acc_mean": inner_mean, "inner_acc_std": inner_std,
                    "holdout_acc_mean": holdout_mean, "holdout_acc_std": holdout_std, "params": params})
    return out


def baseline_summary(reference: pd.DataFrame) -> dict[str, Any] | None:
    """The mixed baseline's holdout and inner accuracy over seeds, or None if it is not recorded."""
    for entry in reference_summary(reference):
        if entry["method"] == "baseline":
            return {k: v for k, v in entry.items() if k != "method"}
    return None


def _seed_accuracies(rows: pd.DataFrame, column: str = "holdout_acc") -> dict[int, float]:
    rows = rows[["seed", column]].dropna()
    return {int(s): float(a) for s, a in zip(rows["seed"], rows[column])}


def top_configurations(study: StudyData, top_k: int,
                       ranked: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """The ``top_k`` best COMPLETE trials with their spread and the paired comparison with the baseline."""
    ranked = ranked_complete(study) if ranked is None else ranked
    top = ranked.head(top_k)
    baseline = study.reference[study.reference["method"] == "baseline"]
    baseline_acc = _seed_accuracies(baseline)
    seeds = study.seeds[study.seeds["trial_id"].isin(top["trial_id"])]
    by_trial = {tid: rows for tid, rows in seeds.groupby("trial_id", sort=False)}
    out = []
    for rank, row in enumerate(top.to_dict("records"), start=1):
        rows = by_trial.get(row["trial_id"], seeds.iloc[:0])
        test = paired_test(_seed_accuracies(rows), baseline_acc) if baseline_acc else None
        number = _python(row.get("number"))
        sizes = trainable_params(row)
        entry = {
            "rank": rank, "number": int(number) if number is not None else None,
            "trial_id": _python(row.get("trial_id")), "params": trial_params(row, study),
            "student_params": sizes["total"], "projector_params": sizes["projector"], "head": _text(row.get("head")),
            "objective": float(row["_objective"]),
            **{k: _python(row.get(k)) for k in ("inner_acc_mean", "inner_acc_std", "holdout_acc_mean",
                                                "holdout_acc_std", "inner_loss_mean", "holdout_loss_mean",
                                                "best_epoch", "epochs_run", "wall_seconds")},
            "n_seeds": int(rows["seed"].nunique()),
            "vs_baseline": test.to_dict() if test else None,
        }
        if entry["epochs_run"] is not None:
            entry["epochs_run"] = int(entry["epochs_run"])
        out.append(entry)
    return out


def reference_comparisons(study: StudyData, best: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The best trial minus each reference of ``COMPARISONS`` that the study recorded, paired by seed.

    The ablation counts only if it is of this very trial (it is retrained whenever the best trial changes).
    """
    if not best:
        return {}
    mine = _seed_accuracies(study.seeds[study.seeds["trial_id"] == best["trial_id"]])
    out: dict[str, dict[str, Any]] = {}
    for method, meaning in COMPARISONS.items():
        rows = study.reference[study.reference["method"] == method]
        if method == "ablation":
            rows = rows[pd.to_numeric(rows["trial_number"], errors="coerce") == best.get("number")]
        theirs = _seed_accuracies(rows)
        test = paired_test(mine, theirs) if theirs and mine else None
        if test is None:
            continue
        number = _python(rows["trial_number"].iloc[0]) if len(rows) else None
        holdout, holdout_sd = _mean_std(rows["holdout_acc"])
        out[method] = {"meaning": meaning, "trial_number": None if number is None else int(number),
                       "holdout_acc_mean": holdout, "holdout_acc_std": holdout_sd, **test.to_dict()}
    return out


# ------------------------------------------------------------------------------- task, classes, sizes

def study_task(study: StudyData) -> dict[str, Any] | None:
    """The task the study's metadata records (``kdcore.task.Task.describe()``), or None (an older kdtune)."""
    task = study.metadata.get("task")
    return task if isinstance(task, dict) else None


def shared_classes(study: StudyData) -> list[int] | None:
    """The classes more than one teacher knows (metadata ``task.shared_classes``); None if not recorded."""
    task = study_task(study)
    shared = task.get("shared_classes") if task else None
    return [int(c) for c in shared] if isinstance(shared, list) else None


def _cell(value: Any) -> list[Any] | None:
    """A list cell as a Python list (None elements for nulls and NaN); None for a null or absent cell."""
    if value is None or isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        return None
    return [_python(v) for v in value]


def _first_cell(values: pd.Series) -> list[Any] | None:
    return next((c for c in map(_cell, values) if c is not None), None)


def _first_int(values: pd.Series) -> int | None:
    v = pd.to_numeric(values, errors="coerce").dropna()
    return int(v.iloc[0]) if len(v) else None


def per_class_means(rows: pd.DataFrame, n_classes: int | None = None) -> tuple[list[float | None], int] | None:
    """Seed mean of ``holdout_class_acc`` per global class, and the number of seeds that measured it.

    Each row's list is in the order of its ``classes`` (0..C-1 where that cell is null, as for a student);
    a class is None where no seed measured it. None when no row holds a per-class list.
    """
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    seeds, size = 0, 0
    classes_of = rows["classes"] if "classes" in rows.columns else pd.Series(None, index=rows.index)
    for values, classes in zip(rows["holdout_class_acc"], classes_of):
        accs, order = _cell(values), _cell(classes)
        if accs is None:
            continue
        order = list(range(len(accs))) if order is None else [int(c) for c in order]
        seeds, size = seeds + 1, max([size, *(c + 1 for c in order)])
        for c, acc in zip(order, accs):
            if acc is not None:
                sums[c] = sums.get(c, 0.0) + float(acc)
                counts[c] = counts.get(c, 0) + 1
    if not seeds:
        return None
    size = n_classes if n_classes is not None else size
    return [sums[c] / counts[c] if c in counts else None for c in range(size)], seeds


def teacher_summary(study: StudyData) -> list[dict[str, Any]]:
    """Each teacher's accuracy on the samples of its own classes (and group), with what it knows.

    One entry per teacher of the metadata's task (and any other ``teacher_K`` of the reference table), in
    index order: its classes and group (the reference rows' ``classes``, else the metadata's; None where
    neither records them), its parameters, seeds, seed mean and sd of inner and holdout accuracy (None
    before the references were trained), and its holdout accuracy per class (seed mean), in the order of
    ``classes``.
    """
    task = study_task(study)
    described = {str(t.get("name")): t for t in (task or {}).get("teachers") or [] if isinstance(t, dict)}
    fixed_params = _fixed_params(study, "teacher")  # one per teacher
    ref = study.reference
    recorded = [str(m) for m in ref["method"].dropna().unique() if str(m).startswith(TEACHER_PREFIX)]
    names = list(described) + [m for m in recorded if m not in described]
    out = []
    for name in sorted(names, key=_teacher_index):
        rows = ref[ref["method"] == name]
        info = described.get(name, {})
        index = _teacher_index(name)
        classes = _first_cell(rows["classes"])
        if classes is None and isinstance(info.get("classes"), list):
            classes = [int(c) for c in info["classes"]]
        group = info.get("group")
        params = _first_int(rows["params"])
        if params is None and isinstance(fixed_params, list) and 0 <= index < len(fixed_params):
            params = int(fixed_params[index])
        inner_mean, inner_std = _mean_std(rows["inner_acc"])
        holdout_mean, holdout_std = _mean_std(rows["holdout_acc"])
        per_class = per_class_means(rows) if classes is not None else None
        out.append({
            "method": name, "index": index, "classes": classes,
            "group": None if group is None else int(group), "checkpoint": info.get("checkpoint"),
            "knows": knows_text(classes, group), "params": params, "n_seeds": int(rows["seed"].nunique()),
            "inner_acc_mean": inner_mean, "inner_acc_std": inner_std,
            "holdout_acc_mean": holdout_mean, "holdout_acc_std": holdout_std,
            "holdout_class_acc_mean": None if per_class is None or classes is None else
            [per_class[0][c] for c in classes],
        })
    return out


def _fixed_params(study: StudyData, name: str) -> Any:
    """``params`` of the metadata's ``models[name]``; None when the metadata does not record it."""
    models = study.metadata.get("models")
    entry = models.get(name) if isinstance(models, dict) else None
    return entry.get("params") if isinstance(entry, dict) else None


def knows_text(classes: list[int] | None, group: Any) -> str:
    """``domain 1, classes 0,1`` or ``classes 0,6,8,9``: what a teacher knows, in words."""
    known = "classes not recorded" if classes is None else "classes " + ",".join(str(c) for c in classes)
    return known if group is None else f"domain {int(group)}, {known}"


def _teacher_index(name: str) -> int:
    tail = name.removeprefix(TEACHER_PREFIX)
    return int(tail) if tail.isdigit() else 1 << 30


CLASS_METHODS = ("baseline", "ablation", "tuned_baseline")  # shown per class beside the best student


def class_accuracy(study: StudyData, best: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The best trial's holdout accuracy per class (seed mean), beside the baseline's, the ablation's (of this
    very trial) and the tuned baseline's where recorded, with the task's shared classes.

    None without a best trial or when its seed rows hold no per-class accuracy (an older kdtune).
    """
    if not best:
        return None
    task = study_task(study)
    n_classes = int(task["n_classes"]) if task and isinstance(task.get("n_classes"), int) else None
    student = per_class_means(study.seeds[study.seeds["trial_id"] == best["trial_id"]], n_classes)
    if student is None:
        return None
    n_classes = len(student[0])
    methods: dict[str, list[float | None]] = {"student": student[0]}
    seeds = {"student": student[1]}
    for method in CLASS_METHODS:
        rows = study.reference[study.reference["method"] == method]
        if method == "ablation":
            rows = rows[pd.to_numeric(rows["trial_number"], errors="coerce") == best.get("number")]
        means = per_class_means(rows, n_classes)
        if means is not None:
            methods[method], seeds[method] = means
    return {"trial_number": best.get("number"), "trial_id": best.get("trial_id"),
            "classes": list(range(n_classes)), "shared_classes": shared_classes(study),
            "accuracy": methods, "n_seeds": seeds}


def parameter_counts(study: StudyData, best: Mapping[str, Any] | None) -> dict[str, Any]:
    """Trainable parameters of one network: the best trial's student (trials ``student_params``: all it
    trains, SimKD's projector included, that part in ``projector``, and the ``head`` it predicts through), the
    baseline (its reference rows, else the metadata's ``models``) and each teacher; None where not recorded.
    ``fixed_student`` is the student of the space's fixed settings (metadata), for a searched architecture."""
    def fixed(name: str) -> int | None:
        value = _fixed_params(study, name)
        return int(value) if isinstance(value, int) else None

    baseline = _first_int(study.reference.loc[study.reference["method"] == "baseline", "params"])
    return {"student": best.get("student_params") if best else None,
            "projector": best.get("projector_params") if best else None,
            "head": best.get("head") if best else None,
            "baseline": baseline if baseline is not None else fixed("baseline"),
            "fixed_student": fixed("student"),
            "teachers": {t["method"]: t["params"] for t in teacher_summary(study)}}


# ------------------------------------------------------------------------------------ methods and sizes

METHOD_KNOB = "kd.method"
NO_KD = "none"  # the kd.method that trains on hard labels only: what the other methods are measured against


def _text(value: Any) -> str | None:
    value = _python(value)
    return None if value is None else str(value)


def trainable_params(row: Mapping[str, Any]) -> dict[str, int | None]:
    """A trials row's trainable parameters: ``total`` (``student_params``), of which ``projector`` (SimKD's,
    else None) and ``student`` (the rest: the network itself); None where not recorded."""
    total, projector = _python(row.get("student_params")), _python(row.get("projector_params"))
    total = None if total is None else int(total)
    projector = None if projector is None else int(projector)
    return {"student": None if total is None else total - (projector or 0), "projector": projector,
            "total": total}


def _fixed_method(study: StudyData) -> str | None:
    """The space's fixed ``kd.method`` (what a trial ran where the knob is absent or inactive)."""
    if study.space is None:
        return None
    try:
        return str(study.space.base.kd.method)
    except Exception:  # noqa: BLE001 - a stored space whose fixed settings this kdcore rejects
        return None


def trial_methods(study: StudyData, trials: pd.DataFrame | None = None) -> pd.Series:
    """The ``kd.method`` of each row of ``trials`` (the study's trials by default): its knob value, else the
    space's fixed method; None where neither is known."""
    trials = study.trials if trials is None else trials
    column = param_column(METHOD_KNOB)
    fixed = _fixed_method(study)
    values = trials[column] if column in trials.columns else [None] * len(trials)
    return pd.Series([_text(v) or fixed for v in values], index=trials.index, dtype=object)


def kd_methods(study: StudyData) -> list[str] | None:
    """The ``kd.method`` values a study compares: the choices of a categorical ``kd.method`` knob (then any
    other its trials ran), or the methods its trials ran when there are several; None when it compares none."""
    knob = next((k for k in study.space.knobs if k.path == METHOD_KNOB), None) if study.space is not None else None
    seen = list(dict.fromkeys(m for m in trial_methods(study) if m is not None))
    if knob is not None and knob.kind == "categorical":
        choices = [str(c) for c in knob.choices]
        return choices + [m for m in seen if m not in choices]
    return seen if len(seen) > 1 else None


def method_comparison(study: StudyData, ranked: pd.DataFrame | None = None) -> dict[str, Any] | None:
    """Each ``kd.method``'s best COMPLETE trial (by the objective) against the best ``none`` trial, or, when
    ``none`` was not searched (or has no COMPLETE trial), against the ablation of the study's best trial:
    per-seed holdout differences, paired by seed, with ``paired_test``. None when the study compares no
    methods (``kd_methods``).

    ``methods`` holds one entry per method: its trial counts by status, its best trial (accuracies, the
    trainable parameters, the head it predicts through) or None, and ``vs`` (the paired test with the
    per-seed differences; None for the comparator itself or without common seeds). ``against`` names the
    comparator; ``shared_seeds`` says whether every best trial (and the comparator) ran the same seeds.
    """
    methods = kd_methods(study)
    if methods is None:
        return None
    ranked = ranked_complete(study) if ranked is None else ranked
    of_ranked, of_all = trial_methods(study, ranked), trial_methods(study)
    entries: list[dict[str, Any]] = []
    accuracies: dict[str, dict[int, float]] = {}
    for method in methods:
        rows = ranked[of_ranked == method]
        best = None
        if len(rows):
            row = rows.iloc[0].to_dict()
            accuracies[method] = _seed_accuracies(study.seeds[study.seeds["trial_id"] == row["trial_id"]])
            number = _python(row.get("number"))
            best = {"number": None if number is None else int(number), "trial_id": _python(row.get("trial_id")),
                    "objective": float(row["_objective"]), "params": trial_params(row, study),
                    **{k: _python(row.get(k)) for k in ("inner_acc_mean", "inner_acc_std", "holdout_acc_mean",
                                                        "holdout_acc_std")},
                    "n_seeds": len(accuracies[method]), "seeds": sorted(accuracies[method]),
                    "trainable": trainable_params(row), "head": _text(row.get("head"))}
        counts = status_counts(study.trials[of_all == method])
        entries.append({"method": method, "trials": counts, "best": best})

    against: dict[str, Any] | None = None
    if accuracies.get(NO_KD):
        none_best = next(e["best"] for e in entries if e["method"] == NO_KD)
        against = {"kind": NO_KD, "method": NO_KD, "trial_number": none_best["number"],
                   "meaning": f"the best `{NO_KD}` trial (hard labels only, searched like the others)"}
        theirs = accuracies[NO_KD]
    else:
        rows = study.reference[study.reference["method"] == "ablation"]
        theirs = _seed_accuracies(rows)
        if theirs:
            number = _first_int(rows["trial_number"])
            why = "not searched" if NO_KD not in methods else "without a COMPLETE trial"
            against = {"kind": "ablation", "method": "ablation", "trial_number": number,
                       "meaning": (f"the ablation (`{NO_KD}` {why}): the study's best trial"
                                   f"{'' if number is None else f' (#{number})'} retrained without its KD term, "
                                   "same recipe and seeds")}
    for entry in entries:
        mine = accuracies.get(entry["method"], {})
        test = None
        if against is not None and mine and not (against["kind"] == NO_KD and entry["method"] == NO_KD):
            test = paired_test(mine, theirs)
        entry["vs"] = None if test is None else {
            **test.to_dict(), "seed_diffs": [{"seed": s, "diff": mine[s] - theirs[s]} for s in sorted(mine)
                                             if s in theirs and _finite(mine[s]) and _finite(theirs[s])]}
    seed_sets = {tuple(sorted(a)) for a in accuracies.values()}
    if against is not None and theirs:
        seed_sets.add(tuple(sorted(theirs)))
    shared = len(seed_sets) <= 1
    seeds = sorted(next(iter(seed_sets))) if shared and seed_sets else \
        [int(s) for s in study.metadata.get("seeds") or []]
    return {"knob": METHOD_KNOB, "methods": entries, "against": against, "shared_seeds": shared,
            "seeds": seeds, "note": _seeds_note(shared, seeds)}


def _seeds_note(shared: bool, seeds: list[int]) -> str:
    if shared:
        listed = ", ".join(map(str, seeds)) if seeds else "none recorded yet"
        return (f"Every method's trials share the study's seeds ({listed}) and, seed by seed, the same folds "
                "(data split and initialisation), so each difference pairs seed s of one method with seed s of "
                "the other.")
    return ("The methods' best trials do not all hold the same seeds: each difference uses the seeds both "
            "have (see n).")


def accuracy_vs_params(study: StudyData, ranked: pd.DataFrame | None = None) -> dict[str, Any]:
    """Holdout accuracy (seed mean) against trainable parameters: one point per COMPLETE trial (its method,
    parameters ``student`` + ``projector`` = ``total``, head), smallest first, and each reference method whose
    parameters are recorded (``own_classes``: a teacher measured on its own classes only, not every class).
    ``unsized`` counts the COMPLETE trials whose size was not recorded."""
    ranked = ranked_complete(study) if ranked is None else ranked
    methods = trial_methods(study, ranked)
    points = []
    for row, method in zip(ranked.to_dict("records"), methods):
        number = _python(row.get("number"))
        points.append({"number": None if number is None else int(number), "trial_id": _python(row.get("trial_id")),
                       "method": method, "trainable": trainable_params(row), "head": _text(row.get("head")),
                       "objective": float(row["_objective"]),
                       **{k: _python(row.get(k)) for k in ("holdout_acc_mean", "holdout_acc_std", "inner_acc_mean")}})
    sized = sorted((p for p in points if p["trainable"]["total"] is not None), key=lambda p: p["trainable"]["total"])
    task = study_task(study)
    n_classes = task.get("n_classes") if task else None
    classes = {t["method"]: t["classes"] for t in teacher_summary(study)}
    references = []
    for ref in reference_summary(study.reference):
        if ref["params"] is None or ref["holdout_acc_mean"] is None:
            continue
        known = classes.get(ref["method"])
        own = ref["method"].startswith(TEACHER_PREFIX) and not (
            known is not None and isinstance(n_classes, int) and sorted(known) == list(range(n_classes)))
        references.append({"method": ref["method"], "params": ref["params"], "n_seeds": ref["n_seeds"],
                           "holdout_acc_mean": ref["holdout_acc_mean"], "holdout_acc_std": ref["holdout_acc_std"],
                           "own_classes": own})
    return {"trials": sized, "unsized": len(points) - len(sized), "references": references}


# ------------------------------------------------------------------------------------------- importance

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
                  "where it was active, times the fraction of trials where it was; kdtune's own, because "
                  "Optuna's fANOVA and mean-decrease-impurity evaluators need scikit-learn and score only "
                  "knobs active in every trial")


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
            value = _python(row.get(column))
            if value is not None and path in distributions:
                params[path] = _as_knob_value(value, knobs[path])
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


def spearman(a: Any, b: Any) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None when either ranking is constant."""
    x = pd.Series(np.asarray(a, dtype=float)).rank().to_numpy()
    y = pd.Series(np.asarray(b, dtype=float)).rank().to_numpy()
    if x.size != y.size:
        raise ValueError(f"a and b must have one length, but got {x.size} and {y.size}")
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


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


# ------------------------------------------------------------------------------------------------- ASHA

def iterations_reached(study: StudyData) -> pd.DataFrame:
    """Per recorded trial: its status and how many evaluations it reported (epochs table, else trials)."""
    trials = study.trials[["trial_id", "status", "iterations"]].dropna(subset=["trial_id"])
    if trials.empty:
        return pd.DataFrame({"trial_id": [], "status": [], "iterations": []})
    reached = study.epochs.dropna(subset=["trial_id"]).groupby("trial_id")["iteration"].max()
    out = trials.drop_duplicates("trial_id", keep="last").set_index("trial_id")
    from_epochs = reached.reindex(out.index)
    out["iterations"] = from_epochs.fillna(pd.to_numeric(out["iterations"], errors="coerce")).fillna(0)
    out["iterations"] = out["iterations"].astype("int64")
    return out.reset_index()


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
