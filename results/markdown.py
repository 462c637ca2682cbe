"""The Markdown report of an analysis (``report.md``), rendered from the typed ``results.summary.Summary``.

Accuracies are fractions in the summary and percentages here; a spread over one seed is not a spread, so a
figure over one seed says ``one seed: no spread`` rather than ``± 0.00``.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from results.classes import ClassAccuracy
from results.methods import METHOD_KNOB, NO_KD
from results.stats import MAX_EXACT_SEEDS, ONE_SEED, PairedTest
from results.study_data import StudyData
from results.summary import Summary, counts_in_words

SIGNATURE = "by `kdtune analyse` from its Parquet tables alone"
PLOT_TITLES = {
    "history": "Optimisation history",
    "importance": "Parameter importance",
    "curves": "Learning curves of the top trials",
    "alpha": "Accuracy against kd.alpha",
    "temperature": "Accuracy against kd.temperature",
    "rungs": "Trials surviving each ASHA rung",
    "params": "Holdout accuracy against trainable parameters",
}
MAX_SIZE_ROWS = 40  # beyond this many COMPLETE trials the accuracy-vs-size table groups them by method and size


def render_report(study: StudyData, summary: Summary, plots: dict[str, Path]) -> str:
    """The Markdown report of an analysis, linking the ``plots`` drawn beside it."""
    lines = [f"# Study `{study.name}`: analysis", ""]
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines += [f"Study folder `{study.root}`, analysed {now} {SIGNATURE}.", ""]
    lines += ["## Headline", "", *_headline(summary), ""]
    if summary.protocol_note:
        lines += [f"**Protocol:** {summary.protocol_note}.", ""]
    if summary.notes:
        lines += ["**Notes:**", "", *[f"- {n}" for n in summary.notes], ""]
    lines += ["## Trials", "", "| status | trials |", "|---|---:|"]
    lines += [f"| {s} | {n} |" for s, n in summary.trials.items() if s != "total"]
    lines += [f"| **total** | **{summary.trials['total']}** |", ""]
    if summary.planned_trials is not None and summary.trials["total"] >= summary.planned_trials:
        lines += [f"{summary.trials['total']} of {summary.planned_trials} planned trials recorded.", ""]
    lines += _top_section(summary)
    lines += _methods_section(summary)
    lines += _sizes_section(summary)
    lines += _reference_section(summary)
    lines += _teacher_section(summary)
    lines += _class_section(summary)
    lines += _importance_section(summary)
    if plots:
        lines += ["## Plots", ""]
        for key, path in plots.items():
            lines += [f"### {PLOT_TITLES[key]}", "", f"![{PLOT_TITLES[key]}]({path.name})", ""]
    lines += _provenance_section(study, summary)
    return "\n".join(lines).rstrip() + "\n"


def _headline(summary: Summary) -> list[str]:
    best, base = summary.best, summary.baseline
    if best is None:
        trials = summary.trials
        if trials["total"] == 0:
            return ["No trials recorded yet: there is no best configuration to report."]
        return [(f"No COMPLETE trial yet ({trials['total']} recorded: {counts_in_words(trials)}): "
                 "there is no best configuration to report.")]
    objective = summary.objective
    value = _objective_text(best.objective, objective.column)
    out = [(f"Best configuration: trial #{best.number} (`{best.trial_id}`), selected by "
            f"{objective.column} ({objective.mode}) = {value}."), ""]
    out += [f"- parameters: {_params_text(best.params)}"]
    if best.n_seeds == 1:
        holdout = f"- holdout accuracy {_pm(best.holdout_acc_mean, best.holdout_acc_std, 1)}"
    else:
        holdout = (f"- holdout accuracy {_pm(best.holdout_acc_mean, best.holdout_acc_std)} "
                   f"(mean ± sd over {best.n_seeds} seeds)")
    if base is not None:
        holdout += f", mixed baseline {_pm(base.holdout_acc_mean, base.holdout_acc_std, base.n_seeds)}"
    out.append(holdout)
    counts = summary.parameter_counts
    if counts.student is not None or counts.baseline is not None:
        student = _count(counts.student)
        if counts.projector is not None:
            student += (f" (of which projector {_count(counts.projector)}; it predicts through the "
                        f"{counts.head or 'head not recorded'})")
        out.append(f"- trainable parameters (one network): student {student}, mixed baseline "
                   f"{_count(counts.baseline)}")
    comparisons = summary.comparisons
    test = best.vs_baseline
    if test is not None:
        if not comparisons:  # otherwise the baseline is one of the comparisons below
            out.append(f"- difference from the baseline: {_comparison(test)}")
        n = test.n
        if n >= 1:
            out.append(f"- test: {test.test}; with {n} paired seeds the smallest possible p is "
                       f"{2 / 2 ** n:.4g}" if n <= MAX_EXACT_SEEDS else f"- test: {test.test}")
    elif base is not None:
        out.append("- no seed of this trial pairs with a baseline seed: no paired test")
    for i, (method, c) in enumerate(comparisons.items()):
        which = "the comparison this study reports" if i == 0 else "also"
        study = " of ce-baseline" if method == "tuned_baseline" else ""
        of = f" (trial #{c.trial_number}{study})" if c.trial_number is not None else ""
        out.append(f"- {which}: best − {method}{of}, {c.meaning}: holdout "
                   f"{_pm(c.holdout_acc_mean, c.holdout_acc_std)}, Δ {_comparison(c.test)}")
    if comparisons and "tuned_baseline" not in comparisons:
        out.append("- no tuned baseline: run the search with `--tune-baseline N` for a CE-only search with the "
                   "same budget")
    return out


def _top_section(summary: Summary) -> list[str]:
    top = summary.top
    objective = summary.objective
    lines = ["## Top configurations", ""]
    if not top:
        return lines + ["No COMPLETE trial to rank yet.", ""]
    lines += [(f"COMPLETE trials ranked by {objective.column} ({objective.mode}); accuracies are seed "
               "means ± sample sd; Δ is trial minus mixed baseline on per-seed holdout accuracy, paired by "
               "seed, in percentage points, with its 95 % t interval and the sign-flip permutation p."), ""]
    show_objective = objective.column != "inner_acc_mean"
    show_size = any(t.student_params is not None for t in top)  # the architecture may be a knob
    head = ["rank", "trial", *(["objective"] if show_objective else []), "inner acc", "holdout acc",
            "Δ holdout vs baseline [95 % CI]", "p", "seeds", "epochs", *(["parameters"] if show_size else [])]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in top:
        test = t.vs_baseline
        cells = [str(t.rank), f"#{t.number} `{t.trial_id}`",
                 *([_objective_text(t.objective, objective.column)] if show_objective else []),
                 _pm(t.inner_acc_mean, t.inner_acc_std, t.n_seeds),
                 _pm(t.holdout_acc_mean, t.holdout_acc_std, t.n_seeds),
                 _diff_ci(test) if test else "–", f"{test.p_value:.3g}" if test else "–",
                 str(t.n_seeds), "–" if t.epochs_run is None else str(t.epochs_run),
                 *([_count(t.student_params)] if show_size else [])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Parameters (blank: knob inactive for that trial):", ""]
    knobs: list[str] = []
    for t in top:
        knobs += [k for k in t.params if k not in knobs]
    lines += ["| knob | " + " | ".join(f"#{t.number}" for t in top) + " |", "|---|" + "---|" * len(top)]
    for knob in knobs:
        cells = [_value_text(t.params[knob]) if knob in t.params else "" for t in top]
        lines.append(f"| `{knob}` | " + " | ".join(cells) + " |")
    return lines + [""]


def _trainable_text(sizes: Any) -> str:
    """``10,000 + 2,345 = 12,345`` (student + projector = total), or the total alone without a projector."""
    if sizes.total is None:
        return "not recorded"
    if sizes.projector is None:
        return _count(sizes.total)
    return f"{_count(sizes.student)} + {_count(sizes.projector)} = {_count(sizes.total)}"


def _status_text(counts: dict[str, int]) -> str:
    return f"{counts['COMPLETE']} / {counts['PRUNED']} / {counts['ERROR']}"


def _methods_section(summary: Summary) -> list[str]:
    comparison = summary.methods
    if comparison is None:
        return []
    objective = summary.objective
    against = comparison.against
    lines = [f"## Distillation methods compared (`{METHOD_KNOB}`)", "", comparison.note, ""]
    if against is None:
        lines += [("No comparator: `none` was not searched or has no COMPLETE trial, and no ablation is "
                   "recorded; no paired differences."), ""]
    else:
        lines += [(f"Each method's best COMPLETE trial by {objective.column} ({objective.mode}); accuracies "
                   "are seed means ± sample sd; Δ is that trial minus "
                   f"{against.meaning}, on per-seed holdout accuracy, in percentage points, with its 95 % t "
                   "interval and the sign-flip permutation p. Trainable parameters are one network's: student "
                   "+ projector = total."), ""]
    name = against.method if against else "–"
    head = ["kd.method", "trials (COMPLETE / PRUNED / ERROR)", "best trial", "inner acc", "holdout acc",
            "trainable parameters", "head", f"Δ holdout vs {name} [95 % CI]", "p", "seeds"]
    lines += ["| " + " | ".join(head) + " |", "|---|---|---|---|---|---:|---|---|---:|---:|"]
    test_text = None
    for entry in comparison.methods:
        best, vs = entry.best, entry.vs
        if best is None:
            cells = [f"`{entry.method}`", _status_text(entry.trials), "no COMPLETE trial", "–", "–", "–", "–",
                     "–", "–", "–"]
        else:
            is_reference = against is not None and against.kind == NO_KD and entry.method == NO_KD
            cells = [f"`{entry.method}`", _status_text(entry.trials), f"#{best.number} `{best.trial_id}`",
                     _pm(best.inner_acc_mean, best.inner_acc_std, best.n_seeds),
                     _pm(best.holdout_acc_mean, best.holdout_acc_std, best.n_seeds), _trainable_text(best.trainable),
                     _escape(best.head or "not recorded"),
                     "(the comparator)" if is_reference else _diff_ci(vs.test) if vs else "–",
                     f"{vs.test.p_value:.3g}" if vs else "–", str(best.n_seeds)]
            test_text = test_text or (vs.test.test if vs else None)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if test_text:
        lines += [f"Test: {test_text}.", ""]
    if any(e.best and e.best.head not in (None, "student") for e in comparison.methods):
        lines += [("A SimKD student predicts through the teacher's classifier, reused and frozen: its parameters "
                   "are not counted as trainable."), ""]
    return lines


def _sizes_section(summary: Summary) -> list[str]:
    sizes = summary.accuracy_vs_params
    if not summary.shows_sizes:
        return []
    points = sizes.trials
    lines = ["## Holdout accuracy against trainable parameters", ""]
    lines += [("Parameters are those one network trains (SimKD: the student's encoder plus its projector); "
               "accuracies are seed means ± sample sd. References (their own recipe) follow the trials; a "
               "teacher marked *own classes* is measured on the samples of its own classes only."), ""]
    if len(points) <= MAX_SIZE_ROWS:
        lines += ["| trial | kd.method | student | projector | total | head | holdout acc | inner acc |",
                  "|---|---|---:|---:|---:|---|---|---|"]
        for p in points:
            t = p.trainable
            lines.append(f"| #{p.number} `{p.trial_id}` | `{p.method}` | {_count(t.student)} | "
                         f"{'–' if t.projector is None else _count(t.projector)} | {_count(t.total)} | "
                         f"{_escape(p.head or 'not recorded')} | "
                         f"{_pm(p.holdout_acc_mean, p.holdout_acc_std, p.n_seeds)} | {_pct(p.inner_acc_mean)} |")
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
            spread = f"{_pct(min(accs))} to {_pct(max(accs))}" if accs else "–"
            lines.append(f"| `{method}` | {_count(total)} | {len(group)} | #{best.number} | "
                         f"{_pm(best.holdout_acc_mean, best.holdout_acc_std, best.n_seeds)} | {spread} |")
    if sizes.references:
        lines += ["", "| reference | parameters | seeds | holdout acc |", "|---|---:|---:|---|"]
        for r in sizes.references:
            own = " (own classes)" if r.own_classes else ""
            lines.append(f"| {r.method}{own} | {_count(r.params)} | {r.n_seeds} | "
                         f"{_pm(r.holdout_acc_mean, r.holdout_acc_std, r.n_seeds)} |")
    if sizes.unsized:
        lines += ["", f"{sizes.unsized} COMPLETE trial(s) did not record their size and are left out."]
    return lines + [""]


def _reference_section(summary: Summary) -> list[str]:
    ref = summary.reference
    lines = ["## Reference: mixed baseline and teachers", ""]
    if not ref:
        return lines + ["No reference rows recorded (a study trains them when it starts).", ""]
    lines += [("Trained once per study on the study's seeds. A teacher is evaluated on the samples of its own "
               "classes (and group) only, so its accuracy is not comparable with the students' (every class "
               "of every group)."), "",
              "| method | seeds | parameters | inner acc | holdout acc |", "|---|---:|---:|---|---|"]
    for r in ref:
        lines.append(f"| {r.method} | {r.n_seeds} | {_count(r.params)} | "
                     f"{_pm(r.inner_acc_mean, r.inner_acc_std, r.n_seeds)} | "
                     f"{_pm(r.holdout_acc_mean, r.holdout_acc_std, r.n_seeds)} |")
    return lines + [""]


def _teacher_section(summary: Summary) -> list[str]:
    teachers = summary.teachers
    lines = ["## Teachers on their own classes", ""]
    if not teachers:
        return lines + [("No teacher recorded (the study's metadata names no task and its reference table "
                         "holds no teacher rows)."), ""]
    task = summary.task
    if task:
        lines += [(f"Task: {task.get('n_classes')} classes, {task.get('n_groups')} group(s), routing "
                   f"`{task.get('routing')}`. Each teacher is trained, selected and measured on the samples "
                   "of its own classes (and group) only, in its own label space; accuracies are seed means "
                   "± sample sd."), ""]
    else:
        lines += [("The task is not recorded (a study of an older kdtune): which classes each teacher knew is "
                   "not known here."), ""]
    lines += ["| teacher | knows | parameters | seeds | inner acc | holdout acc |", "|---|---|---:|---:|---|---|"]
    for t in teachers:
        knows = t.knows + (f" (checkpoint `{_escape(str(t.checkpoint))}`)" if t.checkpoint else "")
        lines.append(f"| {t.method} | {knows} | {_count(t.params)} | {t.n_seeds} | "
                     f"{_pm(t.inner_acc_mean, t.inner_acc_std, t.n_seeds)} | "
                     f"{_pm(t.holdout_acc_mean, t.holdout_acc_std, t.n_seeds)} |")
    if any(t.n_seeds == 0 for t in teachers):
        lines += ["", ("A teacher with 0 seeds has no reference rows yet (the references are trained when the "
                       "study starts).")]
    return lines + [""]


def _class_section(summary: Summary) -> list[str]:
    lines = ["## Holdout accuracy per class", ""]
    per_class: ClassAccuracy | None = summary.class_accuracy
    if per_class is None:
        why = ("no COMPLETE trial yet" if summary.best is None else
               "not recorded for the best trial (a study of an older kdtune)")
        return lines + [f"Not shown: {why}.", ""]
    counts = summary.parameter_counts
    methods = per_class.accuracy
    shared = per_class.shared_classes
    names = {"student": f"student (trial #{per_class.trial_number})", "baseline": "mixed baseline",
             "ablation": "ablation (no KD)", "tuned_baseline": "tuned baseline"}
    seeds = ", ".join(f"{names[m]} {n}" for m, n in per_class.n_seeds.items())
    lines += [f"Seed means over the holdout samples of each class (seeds: {seeds}).", ""]
    lines += [(f"Parameters of one network: student {_count(counts.student)}, mixed baseline "
               f"{_count(counts.baseline)}."), ""]
    lines += ["| class | " + " | ".join(names[m] for m in methods) + " |", "|---|" + "---:|" * len(methods)]
    marked = set(shared or [])
    for c in per_class.classes:
        label = f"{c}*" if c in marked else str(c)
        lines.append(f"| {label} | " + " | ".join(_pct(methods[m][c]) for m in methods) + " |")
    if shared is None:
        lines += ["", "Shared classes are not recorded (the metadata holds no task)."]
    elif shared:
        which = "every class here" if len(shared) == len(per_class.classes) else ",".join(map(str, shared))
        lines += ["", f"`*` a shared class: more than one teacher knows it ({which})."]
    else:
        lines += ["", "No class is shared: each class is known by exactly one teacher."]
    return lines + [""]


def _importance_section(summary: Summary) -> list[str]:
    # the figures the JSON holds (rounded to 6 digits), so that the report and --json never disagree
    view = summary.importance.to_dict()
    lines = ["## Parameter importance", ""]
    values, method = view["values"], view["method"]
    if values is None:
        return lines + [f"Not computed: {method['note']}.", ""]
    lines += [(f"{method['evaluator']}: {method['note']}. Only COMPLETE trials count (a PRUNED trial's "
               "value is from an earlier epoch)."), ""]
    boot = method.get("bootstrap")
    if boot:
        seed = f", seed {boot['random_state']}" if boot["random_state"] is not None else ""
        lines += [(f"Uncertainty: {boot['resamples']} bootstrap resamples of the {method['n_trials']} "
                   f"COMPLETE trials (with replacement{seed}); the interval holds 90 % of a knob's resampled "
                   "shares (5th to 95th percentile); *same rank* and *top 3* say in how many resamples it "
                   "kept its rank or ranked among the first three."), ""]
    else:
        lines += ["No bootstrap: the ranking has no uncertainty attached.", ""]
    if method.get("second_evaluator"):
        lines += [f"Second evaluator, {method['second_evaluator']}.", ""]
    said = []
    if method.get("agreement"):
        said.append(method["agreement"]["sentence"])
    said += _separation(method.get("separated"), view["knobs"])
    if said:
        lines += ["**" + " ".join(said) + "**", ""]
    knobs = view["knobs"]
    lines += [("| knob | active in | PED-ANOVA | bootstrap mean [90 % interval] | same rank | top 3 | "
               "variance explained |"), "|---|---:|---:|---|---:|---:|---:|"]
    for k in knobs:
        indent = ("&nbsp;&nbsp;" * (k["depth"] - 1) + "└ ") if k["depth"] else ""
        condition = f" ({_escape(k['condition'])})" if k["depth"] else ""
        interval = "–" if k["mean"] is None else f"{k['mean']:.3f} [{k['low']:.3f}, {k['high']:.3f}]"
        cells = [f"{indent}`{k['knob']}`{condition}", f"{k['n_active']} of {method['n_trials']}",
                 f"{k['importance']:.3f}", interval, _share(k["same_rank"]), _share(k["top3"]),
                 f"{k['variance']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if any(k["depth"] for k in knobs):
        lines += ["", ("A conditional knob (└) is listed under the knob its condition is on, and is scored "
                       "only over the trials where it was active (*active in*).")]
    return lines + [""]


def _separation(separated: bool | None, knobs: list[dict[str, Any]]) -> list[str]:
    """Whether the bootstrap separates the two most important knobs, in one sentence (or none)."""
    if separated is None:
        return []
    ranked = sorted(knobs, key=lambda k: -k["importance"])
    first, second = ranked[0]["knob"], ranked[1]["knob"]
    if separated:
        return [f"The 90 % interval of `{first}` lies above that of `{second}`, the runner-up."]
    return [(f"The 90 % intervals of `{first}` and `{second}`, the top two, overlap: the bootstrap does not "
             "separate them.")]


def _provenance_section(study: StudyData, summary: Summary) -> list[str]:
    meta = study.metadata
    lines = ["## Data and versions", "", "| | |", "|---|---|"]
    rows = [("data", meta.get("data")), ("data source", meta.get("data_source")),
            ("data fingerprint", f"`{meta.get('fingerprint')}`" if meta.get("fingerprint") else None),
            ("search space", meta.get("space_name")), ("protocol", meta.get("protocol")),
            ("seeds", meta.get("seeds")), ("inner fraction", meta.get("inner_fraction")),
            ("split seed", meta.get("split_seed"))]
    if study.asha is not None:
        a = study.asha
        rows.append(("ASHA", (f"grace period {a.grace_period}, reduction factor {a.reduction_factor}, "
                              f"max_t {a.max_t}; rungs at {a.rungs()} evaluations")))
    versions = meta.get("versions") or {}
    rows += [(f"{name} (study)", version) for name, version in sorted(versions.items())]
    rows += [(f"{name} (analysis)", version) for name, version in _analysis_versions().items()]
    lines += [f"| {k} | {_escape(str(v))} |" for k, v in rows if v is not None]
    lines += ["", "Tables:", ""] + [f"- {name}: `{path}`" for name, path in summary.tables.items()]
    return lines + [""]


def _analysis_versions() -> dict[str, str]:
    import numpy
    import pandas
    import pyarrow

    return {"pandas": pandas.__version__, "pyarrow": pyarrow.__version__, "numpy": numpy.__version__}


# ------------------------------------------------------------------------------------------ formatting

def _share(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def _count(value: Any) -> str:
    """A parameter count (12,345), or "not recorded"."""
    return "not recorded" if value is None else f"{int(value):,}"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def _pm(mean: float | None, std: float | None, n_seeds: int | None = None) -> str:
    """``92.00 ± 1.58 %``; over one seed ``92.00 % (one seed: no spread)``; ``–`` without a mean."""
    if mean is None:
        return "–"
    if n_seeds == 1:
        return f"{100 * mean:.2f} % ({ONE_SEED})"
    return f"{100 * mean:.2f} %" if std is None else f"{100 * mean:.2f} ± {100 * std:.2f} %"


def _diff_ci(test: PairedTest) -> str:
    text = f"{100 * test.diff_mean:+.2f} pp"
    if test.ci95 is not None:
        lo, hi = test.ci95
        text += f" [{100 * lo:+.2f}, {100 * hi:+.2f}]"
    return text


def _comparison(test: PairedTest) -> str:
    text = f"{100 * test.diff_mean:+.2f} percentage points"
    if test.ci95 is not None:
        lo, hi = test.ci95
        text += f" (95 % CI {100 * lo:+.2f} to {100 * hi:+.2f})"
    return text + f", p = {test.p_value:.4g}"


def _objective_text(value: float | None, column: str) -> str:
    if value is None:
        return "–"
    return _pct(value) if column.endswith("_acc_mean") else f"{value:.4g}"


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    return _escape(str(value))


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"`{k}` = {_value_text(v)}" for k, v in params.items()) or "(none)"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
