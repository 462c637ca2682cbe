"""The report's sections on distillation methods and on size: each ``kd.method``'s best trial against the same
recipe without KD, and holdout accuracy against trainable parameters (rendered from ``results.summary``).
"""

from __future__ import annotations

from typing import Any

from results.methods import METHOD_KNOB, NO_KD
from results.summary import Summary
from results.wording import count, diff_ci, escape, pct, pm

MAX_SIZE_ROWS = 40  # beyond this many COMPLETE trials the accuracy-vs-size table groups them by method and size


def _trainable_text(sizes: Any) -> str:
    """``10,000 + 2,345 = 12,345`` (student + projector = total), or the total alone without a projector."""
    if sizes.total is None:
        return "not recorded"
    if sizes.projector is None:
        return count(sizes.total)
    return f"{count(sizes.student)} + {count(sizes.projector)} = {count(sizes.total)}"


def _status_text(counts: dict[str, int]) -> str:
    return f"{counts['COMPLETE']} / {counts['PRUNED']} / {counts['ERROR']}"


def methods_section(summary: Summary) -> list[str]:
    comparison = summary.methods
    if comparison is None:
        return []
    objective = summary.objective
    lines = [f"## Distillation methods compared (`{METHOD_KNOB}`)", "", comparison.note, ""]
    lines += [(f"Each method's best COMPLETE trial by {objective.column} ({objective.mode}); accuracies are seed "
               "means ± sample sd. Δ is that trial minus the same recipe without KD: its own ablation (the trial "
               f"retrained without its KD term), else the best `{NO_KD}` trial when every non-`kd.*` knob is the "
               "same; without either there is no Δ and *what differs* says why. Δ is on per-seed holdout "
               "accuracy, in percentage points, with its 95 % t interval and the sign-flip permutation p; "
               "*what differs* lists the trial's value, then the other side's (a→b). Trainable parameters are "
               "one network's: student + projector = total."), ""]
    head = ["kd.method", "trials (COMPLETE / PRUNED / ERROR)", "best trial", "inner acc", "holdout acc",
            "trainable parameters", "head", "compared with", "Δ holdout [95 % CI]", "p", "seeds", "what differs"]
    lines += ["| " + " | ".join(head) + " |", "|---|---|---|---|---|---:|---|---|---|---:|---:|---|"]
    test_text = None
    for entry in comparison.methods:
        best, vs = entry.best, entry.vs
        if best is None:
            cells = [f"`{entry.method}`", _status_text(entry.trials), "no COMPLETE trial", *["–"] * 9]
        else:
            other = {"ablation": f"ablation of #{entry.compared_trial}",
                     NO_KD: f"`{NO_KD}` #{entry.compared_trial}"}.get(entry.compared_with or "", "–")
            if entry.method == NO_KD:
                other = "(the comparator)"
            cells = [f"`{entry.method}`", _status_text(entry.trials), f"#{best.number} `{best.trial_id}`",
                     pm(best.inner_acc_mean, best.inner_acc_std, best.n_seeds),
                     pm(best.holdout_acc_mean, best.holdout_acc_std, best.n_seeds), _trainable_text(best.trainable),
                     escape(best.head or "not recorded"), other, diff_ci(vs.test) if vs else "–",
                     f"{vs.test.p_value:.3g}" if vs else "–", str(best.n_seeds), escape(entry.differs or "–")]
            test_text = test_text or (vs.test.test if vs else None)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if test_text:
        lines += [f"Test: {test_text}.", ""]
    if any(e.best and e.best.head not in (None, "student") for e in comparison.methods):
        lines += [("A SimKD student predicts through the teacher's classifier, reused and frozen: its parameters "
                   "are not counted as trainable."), ""]
    return lines


def sizes_section(summary: Summary) -> list[str]:
    sizes = summary.accuracy_vs_params
    if not summary.shows_sizes:
        return []
    points = sizes.trials
    lines = ["## Holdout accuracy against trainable parameters", ""]
    lines += [("Parameters are those one network trains (SimKD: the student's encoder plus its projector); "
               "accuracies are seed means ± sample sd. References (their own recipe) follow the trials; a "
               "teacher marked *own classes* (or *own domain*) is measured on the samples of its own classes (or "
               "domain) only, not on the students' holdout."), ""]
    if len(points) <= MAX_SIZE_ROWS:
        lines += ["| trial | kd.method | student | projector | total | head | holdout acc | inner acc |",
                  "|---|---|---:|---:|---:|---|---|---|"]
        for p in points:
            t = p.trainable
            lines.append(f"| #{p.number} `{p.trial_id}` | `{p.method}` | {count(t.student)} | "
                         f"{'–' if t.projector is None else count(t.projector)} | {count(t.total)} | "
                         f"{escape(p.head or 'not recorded')} | "
                         f"{pm(p.holdout_acc_mean, p.holdout_acc_std, p.n_seeds)} | {pct(p.inner_acc_mean)} |")
    else:
        lines += [(f"{len(points)} COMPLETE trials, grouped by method and size (every trial is in the plot and in "
                   "the JSON); *best* is the group's best trial by the objective."), "",
                  "| kd.method | total | trials | best trial | best's holdout acc | holdout range |",
                  "|---|---:|---:|---|---|---|"]
        groups: dict[tuple[Any, Any], list[Any]] = {}
        for p in points:
            groups.setdefault((p.method, p.trainable.total), []).append(p)
        for (method, total), group in groups.items():
            best = group[0]  # points are sorted by size, stably, from the objective's ranking
            accs = [p.holdout_acc_mean for p in group if p.holdout_acc_mean is not None]
            spread = f"{pct(min(accs))} to {pct(max(accs))}" if accs else "–"
            lines.append(f"| `{method}` | {count(total)} | {len(group)} | #{best.number} | "
                         f"{pm(best.holdout_acc_mean, best.holdout_acc_std, best.n_seeds)} | {spread} |")
    if sizes.references:
        lines += ["", "| reference | parameters | seeds | holdout acc |", "|---|---:|---:|---|"]
        for r in sizes.references:
            own = f" ({r.measured_on})" if r.measured_on else ""
            lines.append(f"| {r.method}{own} | {count(r.params)} | {r.n_seeds} | "
                         f"{pm(r.holdout_acc_mean, r.holdout_acc_std, r.n_seeds)} |")
    if sizes.unsized:
        lines += ["", f"{sizes.unsized} COMPLETE trial(s) did not record their size and are left out."]
    return lines + [""]
