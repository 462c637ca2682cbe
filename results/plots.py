"""The figures of a study's analysis, as PNG files (matplotlib, imported only when a figure is drawn).

``plan`` says which figures a study's data supports and ``draw`` draws them from the typed summary; each
``plot_*`` function draws one figure from plain data and writes it atomically. Figures are built on an explicit
Agg canvas rather than through ``pyplot``, so drawing one neither needs a display nor changes the
process-wide matplotlib backend of a caller (a notebook, say). Accuracies are drawn in percent.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kdcore import replacing
from results.asha import iterations_reached, rung_outcomes
from results.schema import param_column
from results.summaries import ranked_complete

if TYPE_CHECKING:
    from results.sizes import SizedReference, SizedTrial
    from results.study_data import StudyData
    from results.summary import Summary

PLOT_FILES = {
    "history": "history.png",
    "importance": "importance.png",
    "curves": "curves.png",
    "alpha": "acc_vs_alpha.png",
    "temperature": "acc_vs_temperature.png",
    "rungs": "asha_rungs.png",
    "params": "acc_vs_params.png",
}
_KNOB_PLOTS = (("alpha", "kd.alpha", False), ("temperature", "kd.temperature", True))  # key, knob, log x

_COMPLETE, _PRUNED, _BEST, _BASE = "#1f77b4", "#ff7f0e", "#2ca02c", "#7f7f7f"


def _figure(width: float = 7.0, height: float = 4.2) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    """Written atomically with the umask's permissions, like every other file of a study."""
    with replacing(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _legend(fig: Any, ax: Any, ncols: int = 3) -> None:
    """The legend below the axes, where it never hides a point."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(ncols, len(handles)), fontsize=8,
                   frameon=False)


def _percent(values: Any) -> np.ndarray:
    return 100.0 * np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)


def plot_history(trials: pd.DataFrame, column: str, *, maximize: bool, path: Path, label: str,
                 baseline: float | None = None) -> Path:
    """Objective per trial number: COMPLETE dots, PRUNED crosses (last evaluation), best-so-far line."""
    scale = 100.0 if column.endswith("_acc_mean") else 1.0
    spread = column.removesuffix("_mean") + "_std"
    frame = trials[["number", "status", column, *([spread] if spread in trials.columns else [])]].copy()
    frame["x"] = pd.to_numeric(frame["number"], errors="coerce")
    frame["x"] = frame["x"].fillna(pd.Series(np.arange(len(frame), dtype=float), index=frame.index))
    frame["y"] = pd.to_numeric(frame[column], errors="coerce") * scale
    frame = frame.sort_values("x", kind="mergesort")
    fig = _figure()
    ax = fig.add_subplot()
    done = frame[(frame["status"] == "COMPLETE") & frame["y"].notna()]
    pruned = frame[(frame["status"] == "PRUNED") & frame["y"].notna()]
    failed = int((frame["status"] == "ERROR").sum())
    ax.scatter(pruned["x"], pruned["y"], marker="x", color=_PRUNED, alpha=0.7, s=28,
               label=f"PRUNED ({len(pruned)}), at its last evaluation")
    ax.scatter(done["x"], done["y"], marker="o", color=_COMPLETE, s=30, zorder=3,
               label=f"COMPLETE ({len(done)})" + (", bar: seed sd" if spread in done.columns else ""))
    if spread in done.columns:  # a null sd (one seed) draws no bar
        _error_bars(ax, done["x"], done["y"].to_numpy(dtype=float), _percent(done[spread]) * scale / 100, _COMPLETE)
    if len(done):
        best = (done["y"].cummax() if maximize else done["y"].cummin()).to_list()
        xs = [*done["x"], max(frame["x"].max(), done["x"].max()) + 0.5]  # carried on to the last trial
        ax.step(xs, [*best, best[-1]], where="post", color=_BEST, lw=1.8, label="best so far (COMPLETE)")
    if baseline is not None:
        ax.axhline(baseline * scale, color=_BASE, ls="--", lw=1, label="mixed baseline")
    if failed:
        ax.plot([], [], " ", label=f"ERROR: {failed} (no value)")
    unit = " (%)" if scale == 100.0 else ""
    ax.set(xlabel="trial number", ylabel=f"{label}{unit}", title=f"Optimisation history ({label}, "
           f"{'higher' if maximize else 'lower'} is better)")
    ax.grid(alpha=0.3)
    if len(frame):
        _legend(fig, ax)
    else:
        ax.text(0.5, 0.5, "no trials recorded yet", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def plot_importance(values: dict[str, float], *, path: Path, title: str, labels: dict[str, str] | None = None,
                    intervals: dict[str, tuple[float, float]] | None = None) -> Path:
    """Horizontal bars in the order of ``values``, the first on top; ``labels`` replace the knob names
    (a conditional knob as ``└ child (parent=value)``), ``intervals`` draw as error bars."""
    names = list(values)[::-1]
    shown = [(labels or {}).get(n, n) for n in names]
    width = [values[n] for n in names]
    y = np.arange(len(names))
    fig = _figure(7.5, max(2.2, 0.4 * len(names) + 1.2))
    ax = fig.add_subplot()
    ax.barh(y, width, color=_COMPLETE)
    ends = np.array(width, dtype=float)
    if intervals:
        spans = np.array([intervals.get(n, (values[n], values[n])) for n in names], dtype=float)  # (knobs, 2)
        lower = np.clip(ends - spans[:, 0], 0.0, None)
        upper = np.clip(spans[:, 1] - ends, 0.0, None)
        ax.errorbar(width, y, xerr=[lower, upper], fmt="none", ecolor="black", elinewidth=1, capsize=3,
                    label="90 % bootstrap interval")
        ends = np.maximum(ends, spans[:, 1])
        ax.legend(fontsize=8, loc="lower right")
    for yi, end, value in zip(y, ends, width):
        ax.text(end, yi, f" {value:.2f}", va="center", fontsize=8)
    ax.set_yticks(y, shown, fontsize=8)
    ax.set(xlabel="importance (sums to 1)")
    fig.suptitle(title, fontsize=10)  # centred on the figure: long knob labels push the axes right
    ax.set_xlim(0, max(1e-9, float(ends.max(initial=0.0))) * 1.18)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_curves(epochs: pd.DataFrame, curves: Sequence[tuple[str, str]], *, path: Path,
                baseline: float | None = None) -> Path:
    """Seed-mean inner accuracy against epoch for each ``(trial_id, label)`` in ``curves``."""
    fig = _figure()
    ax = fig.add_subplot()
    wanted = epochs[epochs["trial_id"].isin([tid for tid, _ in curves])]
    by_trial = {tid: rows for tid, rows in wanted.groupby("trial_id", sort=False)}
    by_evaluation = 0
    shown: list[np.ndarray] = []
    lowest = np.inf
    for tid, label in curves:
        rows = by_trial.get(tid)
        if rows is None or rows.empty:
            continue
        rows = rows.sort_values("iteration")
        x = pd.to_numeric(rows["epoch"], errors="coerce")
        if x.isna().any():  # rows rebuilt from the Optuna journal (kdtune resume) know no epochs
            x, label, by_evaluation = rows["iteration"], f"{label}, by evaluation", by_evaluation + 1
        y = _percent(rows["inner_acc_mean"])
        shown.append(y[len(y) // 2:])  # the second half of each curve: where the trials settle and differ
        lowest = min(lowest, float(np.nanmin(y, initial=np.inf)))
        ax.plot(x, y, lw=1.5, label=label)
    if baseline is not None:
        ax.axhline(100 * baseline, color=_BASE, ls="--", lw=1, label="mixed baseline (selected epoch)")
    xlabel = "epoch" + (" (evaluation number where the epoch was not recorded)" if by_evaluation else "")
    limits = zoom_limits(np.concatenate(shown) if shown else np.array([]),
                         extra=() if baseline is None else (100 * baseline,))
    title = f"Learning curves of the top {len(curves)} trials"
    if limits is not None:
        ax.set_ylim(*limits)
        if lowest < limits[0]:
            title += "\n(zoomed on the second half of the curves; the early climb runs below the axis)"
    ax.set(xlabel=xlabel, ylabel="inner accuracy, seed mean (%)", title=title)
    ax.grid(alpha=0.3)
    _legend(fig, ax)
    return _save(fig, path)


def zoom_limits(values: np.ndarray, *, extra: Sequence[float] = (), low_percentile: float = 0.0,
                margin: float = 0.15) -> tuple[float, float] | None:
    """y limits that hold where the trials are: from the ``low_percentile`` of ``values`` to their maximum
    (and any ``extra`` line), widened by ``margin`` of that span (at least 0.25 points)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return None
    lo, hi = float(np.percentile(v, low_percentile)), float(v.max())
    lo, hi = min([lo, *extra]), max([hi, *extra])
    pad = max(margin * (hi - lo), 0.25)
    return lo - pad, min(100.0, hi + pad)


def _error_bars(ax: Any, x: Any, y: np.ndarray, sd: np.ndarray, color: str) -> None:
    """Seed sd as error bars where a point is a mean of two or more seeds (no bar for one seed: no spread)."""
    ok = np.isfinite(sd) & np.isfinite(y)
    if ok.any():
        ax.errorbar(np.asarray(x, dtype=float)[ok], y[ok], yerr=sd[ok], fmt="none", ecolor=color, elinewidth=1,
                    capsize=2, alpha=0.6)


def _spread(frame: pd.DataFrame, column: str, n_seeds: pd.Series | None) -> np.ndarray:
    """A ``_std`` column in percent, NaN where it is missing or the point has one seed."""
    sd = _percent(frame[column]) if column in frame.columns else np.full(len(frame), np.nan)
    if n_seeds is not None:
        sd = np.where(n_seeds.reindex(frame["trial_id"]).to_numpy(dtype=float) >= 2, sd, np.nan)
    return sd


def plot_accuracy_vs(complete: pd.DataFrame, column: str, *, path: Path, knob: str, log_x: bool = False,
                     baseline_holdout: float | None = None, n_seeds: pd.Series | None = None) -> Path:
    """COMPLETE trials' inner and holdout accuracy (seed means, seed sd as error bars) against one knob;
    ``n_seeds`` (by trial_id) leaves out the bar of a one-seed point."""
    rows = complete[complete[column].notna()]
    x = pd.to_numeric(rows[column], errors="coerce")
    fig = _figure()
    ax = fig.add_subplot()
    inner, holdout = _percent(rows["inner_acc_mean"]), _percent(rows["holdout_acc_mean"])
    ax.scatter(x, inner, marker="o", color=_COMPLETE, s=28, label="inner (bar: seed sd)")
    ax.scatter(x, holdout, marker="^", color=_PRUNED, s=28, label="holdout (bar: seed sd)")
    _error_bars(ax, x, inner, _spread(rows, "inner_acc_std", n_seeds), _COMPLETE)
    _error_bars(ax, x, holdout, _spread(rows, "holdout_acc_std", n_seeds), _PRUNED)
    if baseline_holdout is not None:
        ax.axhline(100 * baseline_holdout, color=_BASE, ls="--", lw=1, label="mixed baseline, holdout")
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel=knob + (" (log scale)" if log_x else ""), ylabel="accuracy, seed mean (%)",
           title=f"Accuracy against {knob} ({len(rows)} COMPLETE trials)")
    ax.grid(alpha=0.3, which="both")
    _legend(fig, ax)
    return _save(fig, path)


def plot_rungs(outcomes: Sequence[dict[str, int]], *, path: Path, subtitle: str) -> Path:
    """Per ASHA rung, the trials that reached it as stacked bars: promoted (went on past it), stopped there
    (PRUNED), failed there (ERROR) and ended there on their own (``results.asha.rung_outcomes``)."""
    labels = [f"rung {i + 1}\n{o['milestone']} evals" for i, o in enumerate(outcomes)]
    parts = (("promoted", "promoted (went on)", _COMPLETE), ("stopped", "stopped here (PRUNED)", _PRUNED),
             ("failed", "failed here (ERROR)", "#d62728"), ("ended", "ended here (COMPLETE)", _BASE))
    fig = _figure()
    ax = fig.add_subplot()
    bottom = np.zeros(len(outcomes))
    for key, label, color in parts:
        counts = np.array([o[key] for o in outcomes], dtype=float)
        if not counts.any() and key in ("failed", "ended"):
            continue
        bars = ax.bar(labels, counts, bottom=bottom, color=color, label=label)
        ax.bar_label(bars, labels=[str(int(n)) if n else "" for n in counts], label_type="center", fontsize=9,
                     color="white")
        bottom += counts
    ax.bar_label(ax.containers[-1], labels=[f"{o['reached']} reached" for o in outcomes], fontsize=8, padding=2)
    before = outcomes[0]["before"] if outcomes else 0
    note = f"; {before} ended before rung 1" if before else ""
    ax.set(xlabel="ASHA rung (evaluations reported)", ylabel="trials",
           title=f"Trials stopped and promoted at each ASHA rung\n({subtitle}{note})")
    ax.set_ylim(0, max(1.0, float(bottom.max(initial=0.0))) * 1.25)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return _save(fig, path)


def plot_iterations_histogram(reached: pd.DataFrame, *, path: Path) -> Path:
    """How many evaluations each trial reported, by status (when the ASHA settings are unknown)."""
    fig = _figure()
    ax = fig.add_subplot()
    top = int(reached["iterations"].max()) if len(reached) else 1
    bins = np.arange(0.5, top + 1.5, max(1, (top + 29) // 30))
    groups = [(s, reached.loc[reached["status"] == s, "iterations"]) for s in ("COMPLETE", "PRUNED", "ERROR")]
    groups = [(s, v) for s, v in groups if len(v)]
    if groups:
        ax.hist([v for _, v in groups], bins=bins, stacked=True, label=[s for s, _ in groups],
                color=[{"COMPLETE": _COMPLETE, "PRUNED": _PRUNED, "ERROR": "#d62728"}[s] for s, _ in groups])
        ax.legend(fontsize=8)
    ax.set(xlabel="evaluations reported", ylabel="trials",
           title="Evaluations reached per trial (ASHA settings unknown)")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


_METHOD_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")


def plot_accuracy_vs_params(points: Sequence[SizedTrial], references: Sequence[SizedReference], *,
                            methods: Sequence[str], path: Path) -> Path:
    """COMPLETE trials' holdout accuracy (seed mean, seed sd as error bars) against their trainable
    parameters, one marker per ``kd.method``, and the references as numbered stars, the legend naming each
    number (labels beside the points would overlap). Teachers measured on their own classes or domain
    (``measured_on``) are hollow diamonds, and the legend says they are not on the students' holdout.

    ``points`` hold ``method``, ``trainable.total``, ``holdout_acc_mean`` and ``_std``, ``n_seeds``. The x
    axis is logarithmic when the sizes span more than a factor of 10.
    """
    fig = _figure(7.5, 4.8)
    ax = fig.add_subplot()
    order = list(methods) + sorted({str(p.method) for p in points} - set(methods))
    for i, method in enumerate(order):
        mine = [p for p in points if str(p.method) == method and p.holdout_acc_mean is not None]
        if not mine:
            continue
        x = np.array([p.trainable.total for p in mine], dtype=float)
        y = _percent([p.holdout_acc_mean for p in mine])
        sd = np.array([100 * p.holdout_acc_std if p.holdout_acc_std is not None and p.n_seeds >= 2 else np.nan
                       for p in mine], dtype=float)
        dots = ax.scatter(x, y, marker=_METHOD_MARKERS[i % 9], s=32, alpha=0.8, zorder=3,
                          label=f"{method} ({len(mine)} COMPLETE)")
        _error_bars(ax, x, y, sd, dots.get_facecolor()[0])
    for i, ref in enumerate(references, start=1):
        acc = 100 * float(ref.holdout_acc_mean)
        apart = ref.measured_on is not None
        ax.scatter([ref.params], [acc], marker="D" if apart else "*", s=60 if apart else 110,
                   facecolors="none" if apart else _BASE, edgecolors="#555555" if apart else "black",
                   linewidths=1.0 if apart else 0.5, zorder=4)
        if ref.holdout_acc_std is not None and ref.n_seeds >= 2:
            _error_bars(ax, [ref.params], np.array([acc]), np.array([100 * ref.holdout_acc_std]), "#555555")
    comparable = [r for r in references if r.measured_on is None]
    if comparable:
        ax.scatter([], [], marker="*", s=110, color=_BASE, edgecolors="black", linewidths=0.5,
                   label="references, every holdout sample (numbered)")
    if len(comparable) < len(references):
        ax.scatter([], [], marker="D", s=60, facecolors="none", edgecolors="#555555",
                   label="teachers: own classes/domain only, not the students' holdout")
    for i, ref in enumerate(references, start=1):
        ax.plot([], [], " ", label=f"{i}: {ref.method}" + (f" ({ref.measured_on})" if ref.measured_on else ""))
    sizes = [float(p.trainable.total or 0) for p in points] + [float(r.params) for r in references]
    log_x = bool(sizes) and min(sizes) > 0 and max(sizes) / min(sizes) > 10
    if log_x:
        ax.set_xscale("log")
    ax.margins(x=0.1)
    accs = [100 * float(p.holdout_acc_mean) for p in points if p.holdout_acc_mean is not None]
    _number_references(ax, references, sizes, accs + [100 * float(r.holdout_acc_mean) for r in references], log_x)
    n = sum(1 for p in points if p.holdout_acc_mean is not None)
    ax.set(xlabel="trainable parameters (one network; SimKD: student + projector)",
           ylabel="holdout accuracy, seed mean (%)",
           title=f"Holdout accuracy against trainable parameters ({n} COMPLETE trials; bars: seed sd)")
    ax.grid(alpha=0.3, which="both")
    if n or references:
        _legend(fig, ax, ncols=2)
    else:
        ax.text(0.5, 0.5, "no sized COMPLETE trial yet", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def _number_references(ax: Any, references: Sequence[SizedReference], xs: Sequence[float], ys: Sequence[float],
                       log_x: bool) -> None:
    """Each reference's number beside it; references drawn within a few percent of the axes of each other
    share one label ("3,4,5"), so that no two labels overlap."""
    def at(x: float) -> float:
        return float(np.log10(x)) if log_x and x > 0 else x

    tx = [at(x) for x in xs] or [0.0]
    span_x, span_y = (max(tx) - min(tx)) or 1.0, (max(ys) - min(ys)) if ys else 1.0
    spots: list[tuple[float, float, list[str]]] = []
    for i, ref in enumerate(references, start=1):
        x, y = float(ref.params), 100 * float(ref.holdout_acc_mean)
        near = next((s for s in spots if abs(at(s[0]) - at(x)) <= 0.04 * span_x
                     and abs(s[1] - y) <= 0.06 * (span_y or 1.0)), None)
        if near is None:
            spots.append((x, y, [str(i)]))
        else:
            near[2].append(str(i))
    for x, y, numbers in spots:
        ax.annotate(",".join(numbers), (x, y), textcoords="offset points", xytext=(7, 4), fontsize=8,
                    color="#333333")


# ------------------------------------------------------------------------------------- which and all

def plan(study: StudyData, summary: Summary, out: Path) -> dict[str, Path]:
    """The figures the study's data supports, by key of ``PLOT_FILES``, at their paths in ``out``."""
    keys = []
    if len(study.trials):
        keys.append("history")
    importance = summary.importance
    if importance.values and any(v > 0 for v in importance.values.values()):
        keys.append("importance")
    curves = [t.trial_id for t in summary.top if t.trial_id is not None]
    if curves and study.epochs["trial_id"].isin(curves).any():
        keys.append("curves")
    ranked = ranked_complete(study)
    for key, knob, _ in _KNOB_PLOTS:
        column = param_column(knob)
        if column in ranked.columns and ranked[column].notna().any():
            keys.append(key)
    if len(study.trials):
        keys.append("rungs")
    if summary.shows_sizes:
        keys.append("params")
    return {key: out / PLOT_FILES[key] for key in keys}


def draw(study: StudyData, summary: Summary, out: Path) -> dict[str, Path]:
    """Draw every figure of ``plan`` into ``out``; returns them as ``plan`` does."""
    path = plan(study, summary, out)
    column = study.objective_column
    base = summary.baseline
    base_inner = base.inner_acc_mean if base else None
    base_holdout = base.holdout_acc_mean if base else None
    drawn: dict[str, Path] = {}
    if "history" in path:
        drawn["history"] = plot_history(
            study.trials, column, maximize=study.maximize, path=path["history"],
            label=column.removesuffix("_mean").replace("_", " "),
            baseline=base_inner if column == "inner_acc_mean" else None)
    if "importance" in path:
        importance = summary.importance
        resamples = importance.resamples
        spread = f"\n90 % bootstrap intervals over {resamples} resamples" if resamples else ""
        drawn["importance"] = plot_importance(
            importance.values or {}, path=path["importance"], labels={k.path: k.label() for k in importance.knobs},
            intervals={k.path: (k.low, k.high) for k in importance.knobs
                       if k.low is not None and k.high is not None},
            title=f"Parameter importance (PED-ANOVA, {importance.n_trials} COMPLETE trials){spread}")
    if "curves" in path:
        curves = [(t.trial_id, f"#{t.number} (rank {t.rank})") for t in summary.top if t.trial_id is not None]
        drawn["curves"] = plot_curves(study.epochs, curves, path=path["curves"], baseline=base_inner)
    ranked = ranked_complete(study)
    n_seeds = study.seeds.dropna(subset=["trial_id"]).groupby("trial_id")["seed"].nunique()
    for key, knob, log_x in _KNOB_PLOTS:
        if key in path:
            drawn[key] = plot_accuracy_vs(ranked, param_column(knob), path=path[key], knob=knob, log_x=log_x,
                                          baseline_holdout=base_holdout, n_seeds=n_seeds)
    if "rungs" in path:
        outcomes = rung_outcomes(study)
        if outcomes and study.asha is not None:
            a = study.asha
            drawn["rungs"] = plot_rungs(outcomes, path=path["rungs"], subtitle=(
                f"grace {a.grace_period}, reduction factor {a.reduction_factor}, max_t {a.max_t}"))
        else:
            drawn["rungs"] = plot_iterations_histogram(iterations_reached(study), path=path["rungs"])
    if "params" in path:
        sizes = summary.accuracy_vs_params
        methods = [m.method for m in summary.methods.methods] if summary.methods else []
        drawn["params"] = plot_accuracy_vs_params(sizes.trials, sizes.references, methods=methods,
                                                  path=path["params"])
    return drawn
