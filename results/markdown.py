"""The Markdown report of an analysis (``report.md``), rendered from the typed ``results.summary.Summary``.

Accuracies are fractions in the summary and percentages here; a spread over one seed is not a spread, so a
figure over one seed says ``one seed: no spread`` rather than ``± 0.00``.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from results.classes import ClassAccuracy
from results.markdown_methods import methods_section, sizes_section
from results.stats import MAX_EXACT_SEEDS
from results.study_data import StudyData
from results.summary import Summary, counts_in_words
from results.wording import (
    comparison_text,
    count,
    diff_ci,
    escape,
    objective_text,
    params_text,
    pct,
    pm,
    share,
    value_text,
)

SIGNATURE = "by `kdtune analyse` from its Parquet tables alone"
PLOT_TITLES = {
    "history": "Optimisation history",
    "importance": "Parameter importance",
    "curves": "Learning curves of the top trials",
    "alpha": "Accuracy against kd.alpha",
    "temperature": "Accuracy against kd.temperature",
    "rungs": "Trials stopped and promoted at each ASHA rung",
    "params": "Holdout accuracy against trainable parameters",
}


def render_report(study: StudyData, summary: Summary, plots: dict[str, Path]) -> str:
    """The Markdown report of an analysis, linking the ``plots`` drawn beside it."""
    lines = [f"# Study `{study.name}`: analysis", ""]
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines += [f"Study folder `{study.root}`, analysed {now} {SIGNATURE}.", ""]
    lines += _header(summary)
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
    lines += methods_section(summary)
    lines += sizes_section(summary)
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
    value = objective_text(best.objective, objective.column)
    out = [(f"Best configuration: trial #{best.number} (`{best.trial_id}`), selected by "
            f"{objective.column} ({objective.mode}) = {value}."), ""]
    out += [f"- parameters: {params_text(best.params)}"]
    if best.n_seeds == 1:
        holdout = f"- holdout accuracy {pm(best.holdout_acc_mean, best.holdout_acc_std, 1)}"
    else:
        holdout = (f"- holdout accuracy {pm(best.holdout_acc_mean, best.holdout_acc_std)} "
                   f"(mean ± sd over {best.n_seeds} seeds)")
    if base is not None:
        holdout += f", mixed baseline {pm(base.holdout_acc_mean, base.holdout_acc_std, base.n_seeds)}"
    out.append(holdout)
    counts = summary.parameter_counts
    if counts.student is not None or counts.baseline is not None:
        student = count(counts.student)
        if counts.projector is not None:
            student += (f" (of which projector {count(counts.projector)}; it predicts through the "
                        f"{counts.head or 'head not recorded'})")
        out.append(f"- trainable parameters (one network): student {student}, mixed baseline "
                   f"{count(counts.baseline)}")
    comparisons = summary.comparisons
    test = best.vs_baseline
    if test is not None:
        if not comparisons:  # otherwise the baseline is one of the comparisons below
            out.append(f"- difference from the baseline: {comparison_text(test)}")
        n = test.n
        if n >= 1:
            out.append(f"- test: {test.test}; with {n} paired seeds the smallest possible p is "
                       f"{2 / 2 ** n:.4g}" if n <= MAX_EXACT_SEEDS else f"- test: {test.test}")
    elif base is not None:
        out.append("- no seed of this trial pairs with a baseline seed: no paired test")
    for method, c in comparisons.items():
        sides = c.sides
        other_size = sides is not None and sides.same_size is False
        which = ("the comparison this study reports" if c.headline else
                 "secondary, a network of another size" if other_size else "also")
        if c.headline and other_size:
            which += " (no comparison with a network of the student's size is recorded)"
        study = " of ce-baseline" if method == "tuned_baseline" else ""
        of = f" (trial #{c.trial_number}{study})" if c.trial_number is not None else ""
        differs = f"; differs: {sides.differs}" if sides is not None else ""
        out.append(f"- {which}: best − {method}{of}, {c.meaning}{differs}: holdout "
                   f"{pm(c.holdout_acc_mean, c.holdout_acc_std, c.test.n)}, Δ {comparison_text(c.test)}")
    if comparisons and "tuned_baseline" not in comparisons:
        out.append("- no tuned baseline: run the search with `--tune-baseline N` for a CE-only search with the "
                   "same budget")
    return out


def _header(summary: Summary) -> list[str]:
    """What every figure below rests on: the holdout's size, what ± means, the inner − holdout gaps."""
    header = summary.header
    if header is None:
        return []
    size = header.holdout
    if size.n is None or size.one_sample is None:
        holdout = f"- holdout: size {size.note}; what one sample is worth is not known"
    else:
        holdout = (f"- holdout: {size.n:,} samples, so one sample is {100 * size.one_sample:.2f} percentage "
                   f"points of accuracy ({size.note})")
    lines = ["## What the figures rest on", "", holdout, f"- ±: {header.spread}"]
    gaps = [f"{g.who} {100 * g.gap:+.2f} pp ({pct(g.inner_acc_mean)} inner, {pct(g.holdout_acc_mean)} holdout)"
            for g in header.gaps if g.gap is not None]
    if gaps:
        lines.append(f"- inner − holdout: {'; '.join(gaps)}. {header.gap_why}")
    return lines + [""]


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
                 *([objective_text(t.objective, objective.column)] if show_objective else []),
                 pm(t.inner_acc_mean, t.inner_acc_std, t.n_seeds),
                 pm(t.holdout_acc_mean, t.holdout_acc_std, t.n_seeds),
                 diff_ci(test) if test else "–", f"{test.p_value:.3g}" if test else "–",
                 str(t.n_seeds), "–" if t.epochs_run is None else str(t.epochs_run),
                 *([count(t.student_params)] if show_size else [])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Parameters (blank: knob inactive for that trial):", ""]
    knobs: list[str] = []
    for t in top:
        knobs += [k for k in t.params if k not in knobs]
    lines += ["| knob | " + " | ".join(f"#{t.number}" for t in top) + " |", "|---|" + "---|" * len(top)]
    for knob in knobs:
        cells = [value_text(t.params[knob]) if knob in t.params else "" for t in top]
        lines.append(f"| `{knob}` | " + " | ".join(cells) + " |")
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
    loaded = {t.method: t.checkpoint for t in summary.teachers if t.checkpoint}
    for r in ref:
        method = r.method + (f" (loaded from `{escape(str(loaded[r.method]))}`)" if r.method in loaded else "")
        lines.append(f"| {method} | {r.n_seeds} | {count(r.params)} | "
                     f"{pm(r.inner_acc_mean, r.inner_acc_std, r.n_seeds)} | "
                     f"{pm(r.holdout_acc_mean, r.holdout_acc_std, r.n_seeds)} |")
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
        knows = t.knows + (f" (loaded from `{escape(str(t.checkpoint))}`)" if t.checkpoint else "")
        lines.append(f"| {t.method} | {knows} | {count(t.params)} | {t.n_seeds} | "
                     f"{pm(t.inner_acc_mean, t.inner_acc_std, t.n_seeds)} | "
                     f"{pm(t.holdout_acc_mean, t.holdout_acc_std, t.n_seeds)} |")
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
    lines += [(f"Parameters of one network: student {count(counts.student)}, mixed baseline "
               f"{count(counts.baseline)}."), ""]
    lines += ["| class | " + " | ".join(names[m] for m in methods) + " |", "|---|" + "---:|" * len(methods)]
    marked = set(shared or [])
    for c in per_class.classes:
        label = f"{c}*" if c in marked else str(c)
        lines.append(f"| {label} | " + " | ".join(pct(methods[m][c]) for m in methods) + " |")
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
        condition = f" ({escape(k['condition'])})" if k["depth"] else ""
        interval = "–" if k["mean"] is None else f"{k['mean']:.3f} [{k['low']:.3f}, {k['high']:.3f}]"
        cells = [f"{indent}`{k['knob']}`{condition}", f"{k['n_active']} of {method['n_trials']}",
                 f"{k['importance']:.3f}", interval, share(k["same_rank"]), share(k["top3"]),
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
                              f"max_t {a.max_t}; rungs at {a.rungs()} evaluations; the rung and max_t count "
                              f"{a.counts or 'every evaluation of the student (phase 1 of annealing KD included)'}")))
    versions = meta.get("versions") or {}
    rows += [(f"{name} (study)", version) for name, version in sorted(versions.items())]
    rows += [(f"{name} (analysis)", version) for name, version in _analysis_versions().items()]
    lines += [f"| {k} | {escape(str(v))} |" for k, v in rows if v is not None]
    lines += ["", "Tables:", ""] + [f"- {name}: `{path}`" for name, path in summary.tables.items()]
    return lines + [""]


def _analysis_versions() -> dict[str, str]:
    import numpy
    import pandas
    import pyarrow

    return {"pandas": pandas.__version__, "pyarrow": pyarrow.__version__, "numpy": numpy.__version__}
