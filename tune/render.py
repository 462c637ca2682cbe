"""What the ``kdtune`` commands print: the method table of ``train``, the origin line of ``train --from``,
the outcome of ``search`` and ``resume``, and the headline and extra lines of ``analyse``.

Each works from a result's dict (``ExperimentResult.to_dict``, ``SearchOutcome.to_dict``, the summary of
``results.report.analyse``) and writes to stdout, or returns the text for the command to print.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def format_method_table(result: dict[str, Any]) -> str:
    """``kdtune train``'s table: each method's holdout (or validation) and inner accuracy, mean ± std over
    the seeds, and its mean best epoch."""
    label = "validation" if result["protocol"] == "seed" else "holdout"
    rows = [f"{'method':<11} {label + ' acc %':>17} {'inner acc %':>13} {'best epoch':>11}"]
    for name, m in result["methods"].items():
        rows.append(
            f"{name:<11} {_table_pm(m['holdout_acc_mean'], m['holdout_acc_std'])} "
            f"{100 * m['inner_acc_mean']:>13.2f} {m['best_epoch_mean']:>11.0f}"
        )
    return "\n".join(rows)


def loaded_teacher_lines(result: dict[str, Any]) -> list[str]:
    """A line for each teacher of ``kdtune train``'s result that was loaded from a file, not trained: the file
    beside its accuracy on its own classes and the chance level there, so that a file that is not what its
    name claims (another data set's teacher, other inputs, a truncated run) shows at once."""
    label = "validation" if result["protocol"] == "seed" else "holdout"
    lines = []
    for name, m in result["methods"].items():
        if m.get("loaded_from") is None:
            continue
        n = len(m.get("classes") or [])
        chance = f", chance {100 / n:.2f} %" if n else ""
        lines.append(f"{name} was loaded from {m['loaded_from']}, not trained here: {label} "
                     f"{_pm(m['holdout_acc_mean'], m['holdout_acc_std'])} on its own {n} classes{chance}")
    return lines


def format_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in params.items())


def describe_origin(origin: dict[str, Any]) -> str:
    """The first line of ``train --from``: which trial of which study, its objective value and params."""
    value, metric = origin["value"], origin["metric"]
    score = ""
    if isinstance(value, float):
        shown = f"{100 * value:.2f} %" if metric.endswith("_acc") else f"{value:.4g}"
        score = f", {metric.replace('_', ' ')} {shown}"
    return (f"re-training trial {origin['trial']} ({origin['state']}{score}) of study {origin['study']}: "
            f"{format_params(origin['params'])}")


def print_analysis(summary: dict[str, Any]) -> None:
    """``kdtune analyse``'s text: the trials, the best trial, the baseline, each comparison and the extra lines."""
    counts = ", ".join(f"{v} {k.lower()}" for k, v in summary["trials"].items() if k != "total") or "no trials"
    print(f"study {summary['study']}: {summary['trials'].get('total', 0)} trials ({counts})")
    best, base = summary.get("best"), summary.get("baseline")
    if best:
        print(f"best: trial {best['number']}, holdout {_pm(best['holdout_acc_mean'], best['holdout_acc_std'])}, "
              f"inner {100 * best['inner_acc_mean']:.2f} %")
    if base:
        print(f"mixed baseline: holdout {_pm(base['holdout_acc_mean'], base['holdout_acc_std'])}")
    reported = summary.get("comparison")
    for method, vs in (summary.get("comparisons") or {}).items():
        interval = vs.get("ci95")
        ci = f", 95 % CI [{100 * interval[0]:+.2f}, {100 * interval[1]:+.2f}]" if interval else ""
        tag = " (the comparison reported)" if method == reported else ""
        differs = f"; differs: {vs['differs']}" if vs.get("differs") else ""
        print(f"best - {method}{tag}: {100 * vs['diff_mean']:+.2f} points{ci}, p = {vs['p_value']:.3g}; "
              f"{method} holdout {100 * vs['holdout_acc_mean']:.2f} %{differs}")
    for line in analysis_lines(summary):
        print(line)
    print(f"report: {summary['report']}")


def _pm(mean: float | None, std: float | None) -> str:
    """``92.00 ± 1.58 %``; without a spread (one seed) ``92.00 % (one seed: no spread)``, never ``± 0.00``."""
    from results.stats import ONE_SEED  # numpy and scipy: only once there is a figure to show

    if mean is None:
        return "-"
    return f"{100 * mean:.2f} % ({ONE_SEED})" if std is None else f"{100 * mean:.2f} ± {100 * std:.2f} %"


def _table_pm(mean: float, std: float | None) -> str:
    """``_pm`` in the train table's fixed-width column."""
    return f"{100 * mean:>8.2f} ± {100 * std:<6.2f}" if std is not None else f"{100 * mean:>8.2f} (1 seed)"


def analysis_lines(summary: dict[str, Any]) -> list[str]:
    """The teachers, the best trial's per-class accuracy, the parameter counts and the kd.method comparison,
    a line each (what ``kdtune analyse`` adds to its headline; the report has the tables)."""
    lines = []
    for t in summary.get("teachers") or []:
        loaded = f", loaded from {t['checkpoint']}" if t.get("checkpoint") else ""
        lines.append(f"{t['method']}: {t['knows']}{loaded}; holdout on its own classes "
                     f"{_pm(t['holdout_acc_mean'], t['holdout_acc_std'])} ({t['n_seeds']} seeds)")
    per_class = summary.get("class_accuracy")
    if per_class:
        shared = set(per_class.get("shared_classes") or [])
        accs = per_class["accuracy"]["student"]
        cells = " ".join(f"{c}{'*' if c in shared else ''} {'-' if a is None else f'{100 * a:.1f}'}"
                         for c, a in zip(per_class["classes"], accs))
        lines.append(f"best per class (holdout %{', * shared' if shared else ''}): {cells}")
    counts = summary.get("parameter_counts") or {}
    parts = []
    if counts.get("student") is not None:
        projector = f" (projector {counts['projector']:,})" if counts.get("projector") is not None else ""
        parts.append(f"student {counts['student']:,}{projector}")
    if counts.get("baseline") is not None:
        parts.append(f"baseline {counts['baseline']:,}")
    parts += [f"{name} {n:,}" for name, n in (counts.get("teachers") or {}).items() if n is not None]
    if parts:
        lines.append("trainable parameters: " + ", ".join(parts))
    methods = summary.get("methods")
    against = (methods or {}).get("against")
    for entry in (methods or {}).get("methods", []):
        best, vs = entry["best"], entry["vs"]
        if best is None:
            lines.append(f"kd.method {entry['method']}: no COMPLETE trial ({entry['trials']['total']} recorded)")
            continue
        total = best["trainable"]["total"]
        line = (f"kd.method {entry['method']}: best trial {best['number']}, holdout "
                f"{_pm(best['holdout_acc_mean'], best['holdout_acc_std'])}, "
                f"{'-' if total is None else f'{total:,}'} params, head {best['head'] or '-'}")
        if vs is not None and (entry.get("compared_with") or against) is not None:
            ci = vs.get("ci95")
            interval = f" [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" if ci else ""
            other = entry.get("compared_with") or against["method"]
            trial = f" #{entry['compared_trial']}" if entry.get("compared_trial") is not None else ""
            line += f"; vs {other}{trial} {100 * vs['diff_mean']:+.2f} points{interval}, p = {vs['p_value']:.3g}"
            if entry.get("differs"):
                line += f" (differs: {entry['differs']})"
        elif entry.get("differs"):
            line += f"; {entry['differs']}"
        lines.append(line)
    return lines


# Trial states that use no budget: a trial a stop cut off (ended FAIL, marked interrupted) and its rerun,
# queued in Optuna as WAITING until a run takes it.
_OFF_BUDGET = ("INTERRUPTED", "WAITING")


def outcome_line(outcome: dict[str, Any]) -> str:
    """``study DIR/NAME: 3 of 4 trials done (2 complete, 1 pruned), 1 interrupted and will rerun, in 12 s``:
    the trials that used the budget, counted against it, and apart those a stop cut off."""
    trials = outcome["trials"]
    done, budget = trials.get("total", 0), outcome.get("budget")
    counts = ", ".join(f"{v} {k.lower()}" for k, v in trials.items() if k not in ("total", *_OFF_BUDGET))
    head = f"{done} of {budget} trials done" if budget else f"{done} trials done"
    line = f"study {outcome['study']}: {head}" + (f" ({counts})" if counts else "")
    rerun = trials.get("WAITING", 0) or (trials.get("INTERRUPTED", 0) if outcome.get("interrupted") else 0)
    if rerun:
        line += f", {rerun} interrupted and will rerun"
    return line + f", in {outcome['seconds']:.0f} s"


def print_outcome(outcome: dict[str, Any], as_json: bool) -> None:
    """The outcome of ``search`` or ``resume``: one JSON object, or the counts, the best trial and how to
    re-train it."""
    if as_json:
        json.dump(outcome, sys.stdout)
        sys.stdout.write("\n")
        return
    print(outcome_line(outcome))
    if outcome.get("interrupted"):
        print(f"stopped before all trials ran; continue with: kdtune resume {outcome['study']}")
    best = outcome.get("best")
    if not best:
        print("no trial completed, so there is no best configuration yet")
        return
    hold = best.get("holdout_acc_mean")
    hold_text = f", holdout {_pm(hold, best.get('holdout_acc_std'))}" if hold else ""
    print(f"best: trial {best['number']}, inner acc {100 * best['inner_acc_mean']:.2f} %{hold_text}")
    for key, value in best["params"].items():
        print(f"  {key} = {value:.4g}" if isinstance(value, float) else f"  {key} = {value}")
    print(f"re-run it: kdtune train --from {outcome['study']} --trial {best['number']}")
