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
from results.asha import iterations_reached, rung_survivors
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


def _legend(fig: Any, ax: Any) -> None:
    """The legend below the axes, where it never hides a point."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(handles)), fontsize=8,
                   frameon=False)


def _percent(values: Any) -> np.ndarray:
    return 100.0 * np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)


def plot_history(trials: pd.DataFrame, column: str, *, maximize: bool, path: Path, label: str,
                 baseline: float | None = None) -> Path:
    """Objective per trial number: COMPLETE dots, PRUNED crosses (last evaluation), best-so-far line."""
    scale = 100.0 if column.endswith("_acc_mean") else 1.0
    frame = trials[["number", "status", column]].copy()
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
               label=f"COMPLETE ({len(done)})")
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
    for tid, label in curves:
        rows = by_trial.get(tid)
        if rows is None or rows.empty:
            continue
        rows = rows.sort_values("iteration")
        x = pd.to_numeric(rows["epoch"], errors="coerce")
        if x.isna().any():  # rows rebuilt from the Optuna journal (kdtune resume) know no epochs
            x, label, by_evaluation = rows["iteration"], f"{label}, by evaluation", by_evaluation + 1
        ax.plot(x, _percent(rows["inner_acc_mean"]), lw=1.5, label=label)
    if baseline is not None:
        ax.axhline(100 * baseline, color=_BASE, ls="--", lw=1, label="mixed baseline (selected epoch)")
    xlabel = "epoch" + (" (evaluation number where the epoch was not recorded)" if by_evaluation else "")
    ax.set(xlabel=xlabel, ylabel="inner accuracy, seed mean (%)",
           title=f"Learning curves of the top {len(curves)} trials")
    ax.grid(alpha=0.3)
    _legend(fig, ax)
    return _save(fig, path)


def plot_accuracy_vs(complete: pd.DataFrame, column: str, *, path: Path, knob: str, log_x: bool = False,
                     baseline_holdout: float | None = None) -> Path:
    """COMPLETE trials' inner and holdout accuracy (seed means) against one knob."""
    rows = complete[complete[column].notna()]
    x = pd.to_numeric(rows[column], errors="coerce")
    fig = _figure()
    ax = fig.add_subplot()
    ax.scatter(x, _percent(rows["inner_acc_mean"]), marker="o", color=_COMPLETE, s=28, label="inner")
    ax.scatter(x, _percent(rows["holdout_acc_mean"]), marker="^", color=_PRUNED, s=28, label="holdout")
    if baseline_holdout is not None:
        ax.axhline(100 * baseline_holdout, color=_BASE, ls="--", lw=1, label="mixed baseline, holdout")
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel=knob + (" (log scale)" if log_x else ""), ylabel="accuracy, seed mean (%)",
           title=f"Accuracy against {knob} ({len(rows)} COMPLETE trials)")
    ax.grid(alpha=0.3, which="both")
    _legend(fig, ax)
    return _save(fig, path)


def plot_rungs(survivors: Sequence[dict[str, int]], *, complete: int, path: Path, subtitle: str) -> Path:
    """Trials that reached each ASHA milestone, split by whether they went on to COMPLETE, then COMPLETE.

    A trial that ends on its own (early stopping, or fewer epochs than a milestone) before a rung counts
    as not reaching it but still shows in the last bar.
    """
    labels = [f"rung {i}\n\u2265 {s['milestone']} evals" if s["milestone"] > 1 else "started"
              for i, s in enumerate(survivors)] + ["COMPLETE"]
    done = np.array([s["complete"] for s in survivors] + [complete])
    reached = np.array([s["reached"] for s in survivors] + [complete])
    fig = _figure()
    ax = fig.add_subplot()
    ax.bar(labels, done, color=_COMPLETE, label="went on to COMPLETE")
    bars = ax.bar(labels, reached - done, bottom=done, color=_PRUNED, label="stopped later (PRUNED / ERROR)")
    ax.bar_label(bars, labels=[str(int(n)) for n in reached], fontsize=9, padding=2)
    ax.set(xlabel="ASHA milestone (evaluations reported)", ylabel="trials reaching it",
           title=f"Trials surviving each ASHA rung\n({subtitle})")
    ax.set_ylim(0, max(1, int(reached.max(initial=0))) * 1.18)
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
    """COMPLETE trials' holdout accuracy (seed mean) against their trainable parameters, one marker per
    ``kd.method``, and the references (``method``, ``params``, ``holdout_acc_mean``, ``own_classes``) as
    labelled stars.

    ``points`` hold ``method``, ``trainable.total`` and ``holdout_acc_mean``. The x axis is logarithmic when
    the sizes span more than a factor of 10.
    """
    fig = _figure()
    ax = fig.add_subplot()
    order = list(methods) + sorted({str(p.method) for p in points} - set(methods))
    for i, method in enumerate(order):
        mine = [p for p in points if str(p.method) == method and p.holdout_acc_mean is not None]
        if not mine:
            continue
        x = [p.trainable.total for p in mine]
        ax.scatter(x, _percent([p.holdout_acc_mean for p in mine]), marker=_METHOD_MARKERS[i % 9], s=32,
                   alpha=0.8, zorder=3, label=f"{method} ({len(mine)} COMPLETE)")
    for ref in references:
        own = " (own classes)" if ref.own_classes else ""
        y = 100 * float(ref.holdout_acc_mean)
        ax.scatter([ref.params], [y], marker="*", s=110, color=_BASE, edgecolors="black", linewidths=0.5,
                   zorder=4)
        ax.annotate(f"{ref.method}{own}", (ref.params, y), textcoords="offset points", xytext=(5, 4),
                    fontsize=7, color="#333333")
    if references:
        ax.scatter([], [], marker="*", s=110, color=_BASE, edgecolors="black", linewidths=0.5,
                   label="references (seed mean)")
    sizes = [float(p.trainable.total or 0) for p in points] + [float(r.params) for r in references]
    if sizes and min(sizes) > 0 and max(sizes) / min(sizes) > 10:
        ax.set_xscale("log")
    ax.margins(x=0.1)  # room for the references' labels at the edges
    n = sum(1 for p in points if p.holdout_acc_mean is not None)
    ax.set(xlabel="trainable parameters (one network; SimKD: student + projector)",
           ylabel="holdout accuracy, seed mean (%)",
           title=f"Holdout accuracy against trainable parameters ({n} COMPLETE trials)")
    ax.grid(alpha=0.3, which="both")
    if n or references:
        _legend(fig, ax)
    else:
        ax.text(0.5, 0.5, "no sized COMPLETE trial yet", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


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
    for key, knob, log_x in _KNOB_PLOTS:
        if key in path:
            drawn[key] = plot_accuracy_vs(ranked, param_column(knob), path=path[key], knob=knob, log_x=log_x,
                                          baseline_holdout=base_holdout)
    if "rungs" in path:
        survivors = rung_survivors(study)
        if survivors is not None and study.asha is not None:
            a = study.asha
            complete = int((study.trials["status"] == "COMPLETE").sum())
            drawn["rungs"] = plot_rungs(survivors, complete=complete, path=path["rungs"], subtitle=(
                f"grace {a.grace_period}, reduction factor {a.reduction_factor}, max_t {a.max_t}"))
        else:
            drawn["rungs"] = plot_iterations_histogram(iterations_reached(study), path=path["rungs"])
    if "params" in path:
        sizes = summary.accuracy_vs_params
        methods = [m.method for m in summary.methods.methods] if summary.methods else []
        drawn["params"] = plot_accuracy_vs_params(sizes.trials, sizes.references, methods=methods,
                                                  path=path["params"])
    return drawn
