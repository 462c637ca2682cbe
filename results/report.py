"""``kdtune analyse``: a study's analysis as ``report.md`` with its plots, and as a JSON-ready dict.

``analyse(study_dir)`` reads only the Parquet tables (and the small ``study.json`` records), so it runs
without Ray on a laptop, while the study runs, after it was interrupted, or once it has finished.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from kdcore import write_atomic
from results.asha import iterations_reached, rung_survivors
from results.classes import class_accuracy, parameter_counts, study_task, teacher_summary
from results.errors import ResultsError
from results.importance import Importance, param_importance
from results.methods import METHOD_KNOB, method_comparison
from results.schema import param_column
from results.sizes import accuracy_vs_params
from results.study_data import StudyData, load_study
from results.summaries import (
    baseline_summary,
    ranked_complete,
    reference_comparisons,
    reference_summary,
    status_counts,
    top_configurations,
)

REPORT_FILE = "report.md"
_SIGNATURE = "by `kdtune analyse` from its Parquet tables alone"
ANALYSIS_DIR = "analysis"
PLOT_FILES = {
    "history": "history.png",
    "importance": "importance.png",
    "curves": "curves.png",
    "alpha": "acc_vs_alpha.png",
    "temperature": "acc_vs_temperature.png",
    "rungs": "asha_rungs.png",
    "params": "acc_vs_params.png",
}
_PLOT_TITLES = {
    "history": "Optimisation history",
    "importance": "Parameter importance",
    "curves": "Learning curves of the top trials",
    "alpha": "Accuracy against kd.alpha",
    "temperature": "Accuracy against kd.temperature",
    "rungs": "Trials surviving each ASHA rung",
    "params": "Holdout accuracy against trainable parameters",
}
MAX_SIZE_ROWS = 40  # beyond this many COMPLETE trials the accuracy-vs-size table groups them by method and size


def analyse(study_dir: str | os.PathLike[str], *, top_k: int = 5,
            out_dir: str | os.PathLike[str] | None = None, random_state: int = 0) -> dict[str, Any]:
    """Analyse the study at ``study_dir``: write ``report.md`` and PNG plots, return the summary dict.

    Output goes to ``study_dir/analysis/`` unless ``out_dir`` is given; ``random_state`` seeds the
    importance bootstrap (and is written to the summary). The dict is JSON-serialisable (accuracies as
    fractions, None where a value is missing); ``ResultsError`` if ``study_dir`` is not a study with tables.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ResultsError(f"top_k must be an integer >= 1, but got {top_k!r}")
    study = load_study(study_dir)
    out = Path(out_dir).expanduser().resolve() if out_dir is not None else study.root / ANALYSIS_DIR
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(f"cannot write the analysis to {out} ({exc.strerror or exc})") from None

    ranked = ranked_complete(study)
    top = top_configurations(study, top_k, ranked)
    baseline = baseline_summary(study.reference)
    importance = param_importance(study, ranked, random_state=random_state)
    counts = status_counts(study.trials)
    comparisons = reference_comparisons(study, top[0] if top else None)
    methods = method_comparison(study, ranked)
    sizes = accuracy_vs_params(study, ranked)
    notes = _notes(study, counts, baseline, importance)
    plots = _draw(study, ranked, top, baseline, importance, out,
                  sizes=sizes if _show_sizes(methods, sizes) else None,
                  methods=[m["method"] for m in methods["methods"]] if methods else [])

    summary: dict[str, Any] = {
        "study": str(study.root),
        "name": study.name,
        "objective": {**study.objective, "column": study.objective_column},
        "trials": counts,
        "planned_trials": study.planned,
        "best": _best(top[0]) if top else None,
        "baseline": baseline,
        "comparisons": comparisons,
        "comparison": next(iter(comparisons), None),
        "reference": reference_summary(study.reference),
        "task": study_task(study),
        "models": study.metadata.get("models"),
        "teachers": teacher_summary(study),
        "class_accuracy": class_accuracy(study, top[0] if top else None),
        "parameter_counts": parameter_counts(study, top[0] if top else None),
        "methods": methods,
        "accuracy_vs_params": sizes,
        "top": top,
        **_importance_fields(importance),
        "protocol_note": study.metadata.get("protocol_note"),
        "notes": notes,
        "tables": {name: str(path) for name, path in study.tables.items()},
        "report": str(out / REPORT_FILE),
        "plots": [str(p) for p in plots.values()],
    }
    summary = _jsonable(summary)
    _write_text(out / REPORT_FILE, render_report(study, summary, plots))
    return summary


def _best(entry: dict[str, Any]) -> dict[str, Any]:
    keys = ("params", "holdout_acc_mean", "holdout_acc_std", "inner_acc_mean", "inner_acc_std", "objective",
            "number", "trial_id", "n_seeds", "student_params", "projector_params", "head", "vs_baseline")
    return {k: entry.get(k) for k in keys}


def _notes(study: StudyData, counts: dict[str, int], baseline: dict[str, Any] | None,
           importance: Importance) -> list[str]:
    notes = list(study.notes)
    total = counts["total"]
    if total == 0:
        notes.append("no trials recorded yet: no trial of the study has ended (or its trials table is empty)")
    elif counts["COMPLETE"] == 0:
        notes.append(f"no COMPLETE trial yet: all {total} recorded trials were "
                     f"{_counts_in_words(counts)}; nothing to rank")
    if study.planned is not None and total < study.planned:
        notes.append(f"{total} of {study.planned} planned trials recorded: the study is running, was "
                     "interrupted, or its remaining trials have not ended yet")
    if baseline is None:
        notes.append("no mixed-baseline rows in the reference table: no comparison with the baseline")
    if importance.values is None and importance.note:
        notes.append(f"parameter importance not computed: {importance.note}")
    if importance.agreement is not None and not importance.agreement.agree:
        notes.append(f"parameter importance: {importance.agreement.sentence}")
    return notes


def _importance_fields(importance: Importance) -> dict[str, Any]:
    """``importance`` (PED-ANOVA shares, as before), ``importance_method`` (how, with the bootstrap, the
    second evaluator and their agreement) and ``importance_knobs`` (a row per knob, in the report's order)."""
    d = importance.to_dict()
    return {"importance": d["values"], "importance_method": d["method"], "importance_knobs": d["knobs"]}


def _counts_in_words(counts: dict[str, int]) -> str:
    parts = [f"{n} {status}" for status, n in counts.items() if status != "total" and n]
    return ", ".join(parts) if parts else "none"


# ----------------------------------------------------------------------------------------------- plots

def _show_sizes(methods: dict[str, Any] | None, sizes: dict[str, Any]) -> bool:
    """Whether accuracy against size says anything: methods are compared, or the trials differ in size."""
    if not sizes["trials"]:
        return False
    return methods is not None or len({p["trainable"]["total"] for p in sizes["trials"]}) > 1


def _draw(study: StudyData, ranked: pd.DataFrame, top: list[dict[str, Any]], baseline: dict[str, Any] | None,
          importance: Importance, out: Path, *, sizes: dict[str, Any] | None = None,
          methods: list[str] | None = None) -> dict[str, Path]:
    """Every plot the data supports; stale plots of an earlier analysis in ``out`` are removed."""
    from results import plots as P

    drawn: dict[str, Path] = {}
    path = {key: out / name for key, name in PLOT_FILES.items()}
    column = study.objective_column
    base_inner = baseline.get("inner_acc_mean") if baseline else None
    base_holdout = baseline.get("holdout_acc_mean") if baseline else None
    if len(study.trials):
        drawn["history"] = P.plot_history(
            study.trials, column, maximize=study.maximize, path=path["history"],
            label=column.removesuffix("_mean").replace("_", " "),
            baseline=base_inner if column == "inner_acc_mean" else None)
    if importance.values and any(v > 0 for v in importance.values.values()):
        resamples = importance.resamples
        spread = f"\n90 % bootstrap intervals over {resamples} resamples" if resamples else ""
        drawn["importance"] = P.plot_importance(
            importance.values, path=path["importance"], labels={k.path: k.label() for k in importance.knobs},
            intervals={k.path: (k.low, k.high) for k in importance.knobs
                       if k.low is not None and k.high is not None},
            title=f"Parameter importance (PED-ANOVA, {importance.n_trials} COMPLETE trials){spread}")
    curves = [(t["trial_id"], f"#{t['number']} (rank {t['rank']})") for t in top if t["trial_id"] is not None]
    if curves and study.epochs["trial_id"].isin([c[0] for c in curves]).any():
        drawn["curves"] = P.plot_curves(study.epochs, curves, path=path["curves"], baseline=base_inner)
    for key, knob, log_x in (("alpha", "kd.alpha", False), ("temperature", "kd.temperature", True)):
        col = param_column(knob)
        if col in ranked.columns and ranked[col].notna().any():
            drawn[key] = P.plot_accuracy_vs(ranked, col, path=path[key], knob=knob, log_x=log_x,
                                            baseline_holdout=base_holdout)
    if len(study.trials):
        survivors = rung_survivors(study)
        if survivors is not None and study.asha is not None:
            a = study.asha
            complete = int((study.trials["status"] == "COMPLETE").sum())
            drawn["rungs"] = P.plot_rungs(survivors, complete=complete, path=path["rungs"], subtitle=(
                f"grace {a.grace_period}, reduction factor {a.reduction_factor}, max_t {a.max_t}"))
        else:
            drawn["rungs"] = P.plot_iterations_histogram(iterations_reached(study), path=path["rungs"])
    if sizes is not None:
        drawn["params"] = P.plot_accuracy_vs_params(sizes["trials"], sizes["references"], methods=methods or [],
                                                    path=path["params"])
    if _earlier_analysis(out):
        for key, stale in path.items():
            if key not in drawn:
                stale.unlink(missing_ok=True)
    return drawn


def _earlier_analysis(out: Path) -> bool:
    """Whether ``out`` holds a report written by ``analyse`` (so its plot files are ours to replace)."""
    try:
        with open(out / REPORT_FILE, encoding="utf-8") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return head.startswith("# Study `") and _SIGNATURE in head


# ---------------------------------------------------------------------------------------------- report

def render_report(study: StudyData, summary: dict[str, Any], plots: dict[str, Path]) -> str:
    """The Markdown report of an analysis (``summary`` as ``analyse`` returns it)."""
    lines = [f"# Study `{study.name}`: analysis", ""]
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines += [f"Study folder `{study.root}`, analysed {now} {_SIGNATURE}.", ""]
    lines += ["## Headline", "", *_headline(summary), ""]
    if summary["protocol_note"]:
        lines += [f"**Protocol:** {summary['protocol_note']}.", ""]
    if summary["notes"]:
        lines += ["**Notes:**", "", *[f"- {n}" for n in summary["notes"]], ""]
    lines += ["## Trials", "", "| status | trials |", "|---|---:|"]
    lines += [f"| {s} | {n} |" for s, n in summary["trials"].items() if s != "total"]
    lines += [f"| **total** | **{summary['trials']['total']}** |", ""]
    if summary["planned_trials"] is not None and summary["trials"]["total"] >= summary["planned_trials"]:
        lines += [f"{summary['trials']['total']} of {summary['planned_trials']} planned trials recorded.", ""]
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
            lines += [f"### {_PLOT_TITLES[key]}", "", f"![{_PLOT_TITLES[key]}]({path.name})", ""]
    lines += _provenance_section(study, summary)
    return "\n".join(lines).rstrip() + "\n"


def _headline(summary: dict[str, Any]) -> list[str]:
    best, base = summary["best"], summary["baseline"]
    if best is None:
        counts = summary["trials"]
        if counts["total"] == 0:
            return ["No trials recorded yet: there is no best configuration to report."]
        return [(f"No COMPLETE trial yet ({counts['total']} recorded: {_counts_in_words(counts)}): "
                 "there is no best configuration to report.")]
    objective = summary["objective"]
    value = _objective_text(best["objective"], objective)
    out = [(f"Best configuration: trial #{best['number']} (`{best['trial_id']}`), selected by "
            f"{objective['column']} ({objective['mode']}) = {value}."), ""]
    out += [f"- parameters: {_params_text(best['params'])}"]
    holdout = (f"- holdout accuracy {_pm(best['holdout_acc_mean'], best['holdout_acc_std'])} "
               f"(mean ± sd over {best['n_seeds']} seeds)")
    if base is not None:
        holdout += f", mixed baseline {_pm(base['holdout_acc_mean'], base['holdout_acc_std'])}"
    out.append(holdout)
    counts = summary.get("parameter_counts") or {}
    if counts.get("student") is not None or counts.get("baseline") is not None:
        student = _count(counts.get("student"))
        if counts.get("projector") is not None:
            student += (f" (of which projector {_count(counts['projector'])}; it predicts through the "
                        f"{counts.get('head') or 'head not recorded'})")
        out.append(f"- trainable parameters (one network): student {student}, mixed baseline "
                   f"{_count(counts.get('baseline'))}")
    comparisons = summary.get("comparisons") or {}
    test = best["vs_baseline"]
    if test is not None:
        if not comparisons:  # otherwise the baseline is one of the comparisons below
            out.append(f"- difference from the baseline: {_comparison(test)}")
        n = test["n_seeds"]
        if n >= 1:
            out.append(f"- test: {test['test']}; with {n} paired seeds the smallest possible p is "
                       f"{2 / 2 ** n:.4g}" if n <= 16 else f"- test: {test['test']}")
    elif base is not None:
        out.append("- no seed of this trial pairs with a baseline seed: no paired test")
    for i, (method, c) in enumerate(comparisons.items()):
        which = "the comparison this study reports" if i == 0 else "also"
        study = " of ce-baseline" if method == "tuned_baseline" else ""
        of = f" (trial #{c['trial_number']}{study})" if c.get("trial_number") is not None else ""
        out.append(f"- {which}: best − {method}{of}, {c['meaning']}: holdout "
                   f"{_pm(c['holdout_acc_mean'], c['holdout_acc_std'])}, Δ {_comparison(c)}")
    if comparisons and "tuned_baseline" not in comparisons:
        out.append("- no tuned baseline: run the search with `--tune-baseline N` for a CE-only search with the "
                   "same budget")
    return out


def _top_section(summary: dict[str, Any]) -> list[str]:
    top = summary["top"]
    objective = summary["objective"]
    lines = ["## Top configurations", ""]
    if not top:
        return lines + ["No COMPLETE trial to rank yet.", ""]
    lines += [(f"COMPLETE trials ranked by {objective['column']} ({objective['mode']}); accuracies are seed "
               "means ± sample sd; Δ is trial minus mixed baseline on per-seed holdout accuracy, paired by "
               "seed, in percentage points, with its 95 % t interval and the sign-flip permutation p."), ""]
    show_objective = objective["column"] != "inner_acc_mean"
    show_size = any(t.get("student_params") is not None for t in top)  # the architecture may be a knob
    head = ["rank", "trial", *(["objective"] if show_objective else []), "inner acc", "holdout acc",
            "Δ holdout vs baseline [95 % CI]", "p", "seeds", "epochs", *(["parameters"] if show_size else [])]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in top:
        test = t["vs_baseline"]
        cells = [str(t["rank"]), f"#{t['number']} `{t['trial_id']}`",
                 *([_objective_text(t["objective"], objective)] if show_objective else []),
                 _pm(t["inner_acc_mean"], t["inner_acc_std"]),
                 _pm(t["holdout_acc_mean"], t["holdout_acc_std"]),
                 _diff_ci(test) if test else "–", f"{test['p_value']:.3g}" if test else "–",
                 str(t["n_seeds"]), "–" if t["epochs_run"] is None else str(t["epochs_run"]),
                 *([_count(t.get("student_params"))] if show_size else [])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Parameters (blank: knob inactive for that trial):", ""]
    knobs: list[str] = []
    for t in top:
        knobs += [k for k in t["params"] if k not in knobs]
    lines += ["| knob | " + " | ".join(f"#{t['number']}" for t in top) + " |", "|---|" + "---|" * len(top)]
    for knob in knobs:
        cells = [_value_text(t["params"][knob]) if knob in t["params"] else "" for t in top]
        lines.append(f"| `{knob}` | " + " | ".join(cells) + " |")
    return lines + [""]


def _trainable_text(sizes: dict[str, Any]) -> str:
    """``10,000 + 2,345 = 12,345`` (student + projector = total), or the total alone without a projector."""
    if sizes["total"] is None:
        return "not recorded"
    if sizes["projector"] is None:
        return _count(sizes["total"])
    return f"{_count(sizes['student'])} + {_count(sizes['projector'])} = {_count(sizes['total'])}"


def _status_text(counts: dict[str, int]) -> str:
    return f"{counts['COMPLETE']} / {counts['PRUNED']} / {counts['ERROR']}"


def _methods_section(summary: dict[str, Any]) -> list[str]:
    comparison = summary.get("methods")
    if comparison is None:
        return []
    objective = summary["objective"]
    against = comparison["against"]
    lines = [f"## Distillation methods compared (`{METHOD_KNOB}`)", "", comparison["note"], ""]
    if against is None:
        lines += [("No comparator: `none` was not searched or has no COMPLETE trial, and no ablation is "
                   "recorded; no paired differences."), ""]
    else:
        lines += [(f"Each method's best COMPLETE trial by {objective['column']} ({objective['mode']}); accuracies "
                   "are seed means ± sample sd; Δ is that trial minus "
                   f"{against['meaning']}, on per-seed holdout accuracy, in percentage points, with its 95 % t "
                   "interval and the sign-flip permutation p. Trainable parameters are one network's: student "
                   "+ projector = total."), ""]
    name = against["method"] if against else "–"
    head = ["kd.method", "trials (COMPLETE / PRUNED / ERROR)", "best trial", "inner acc", "holdout acc",
            "trainable parameters", "head", f"Δ holdout vs {name} [95 % CI]", "p", "seeds"]
    lines += ["| " + " | ".join(head) + " |", "|---|---|---|---|---|---:|---|---|---:|---:|"]
    test_text = None
    for entry in comparison["methods"]:
        best, vs = entry["best"], entry["vs"]
        if best is None:
            cells = [f"`{entry['method']}`", _status_text(entry["trials"]), "no COMPLETE trial", "–", "–", "–", "–",
                     "–", "–", "–"]
        else:
            is_reference = against is not None and against["kind"] == "none" and entry["method"] == "none"
            cells = [f"`{entry['method']}`", _status_text(entry["trials"]), f"#{best['number']} `{best['trial_id']}`",
                     _pm(best["inner_acc_mean"], best["inner_acc_std"]),
                     _pm(best["holdout_acc_mean"], best["holdout_acc_std"]), _trainable_text(best["trainable"]),
                     _escape(best["head"] or "not recorded"),
                     "(the comparator)" if is_reference else _diff_ci(vs) if vs else "–",
                     f"{vs['p_value']:.3g}" if vs else "–", str(best["n_seeds"])]
            test_text = test_text or (vs["test"] if vs else None)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if test_text:
        lines += [f"Test: {test_text}.", ""]
    if any(e["best"] and e["best"]["head"] not in (None, "student") for e in comparison["methods"]):
        lines += [("A SimKD student predicts through the teacher's classifier, reused and frozen: its parameters "
                   "are not counted as trainable."), ""]
    return lines


def _sizes_section(summary: dict[str, Any]) -> list[str]:
    sizes = summary.get("accuracy_vs_params")
    if sizes is None or not _show_sizes(summary.get("methods"), sizes):
        return []
    points = sizes["trials"]
    lines = ["## Holdout accuracy against trainable parameters", ""]
    lines += [("Parameters are those one network trains (SimKD: the student's encoder plus its projector); "
               "accuracies are seed means ± sample sd. References (their own recipe) follow the trials; a "
               "teacher marked *own classes* is measured on the samples of its own classes only."), ""]
    if len(points) <= MAX_SIZE_ROWS:
        lines += ["| trial | kd.method | student | projector | total | head | holdout acc | inner acc |",
                  "|---|---|---:|---:|---:|---|---|---|"]
        for p in points:
            t = p["trainable"]
            lines.append(f"| #{p['number']} `{p['trial_id']}` | `{p['method']}` | {_count(t['student'])} | "
                         f"{'–' if t['projector'] is None else _count(t['projector'])} | {_count(t['total'])} | "
                         f"{_escape(p['head'] or 'not recorded')} | {_pm(p['holdout_acc_mean'], p['holdout_acc_std'])} | "
                         f"{_pct(p['inner_acc_mean'])} |")
    else:
        lines += [(f"{len(points)} COMPLETE trials, grouped by method and size (every trial is in the plot and in "
                   "the JSON); *best* is the group's best trial by the objective."), "",
                  "| kd.method | total | trials | best trial | best's holdout acc | holdout range |",
                  "|---|---:|---:|---|---|---|"]
        groups: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
        for p in points:
            groups.setdefault((p["method"], p["trainable"]["total"]), []).append(p)
        for (method, total), group in groups.items():
            best = group[0]  # points are sorted by size, stably, from the objective's ranking
            accs = [p["holdout_acc_mean"] for p in group if p["holdout_acc_mean"] is not None]
            spread = f"{_pct(min(accs))} to {_pct(max(accs))}" if accs else "–"
            lines.append(f"| `{method}` | {_count(total)} | {len(group)} | #{best['number']} | "
                         f"{_pm(best['holdout_acc_mean'], best['holdout_acc_std'])} | {spread} |")
    if sizes["references"]:
        lines += ["", "| reference | parameters | seeds | holdout acc |", "|---|---:|---:|---|"]
        for r in sizes["references"]:
            own = " (own classes)" if r["own_classes"] else ""
            lines.append(f"| {r['method']}{own} | {_count(r['params'])} | {r['n_seeds']} | "
                         f"{_pm(r['holdout_acc_mean'], r['holdout_acc_std'])} |")
    if sizes["unsized"]:
        lines += ["", f"{sizes['unsized']} COMPLETE trial(s) did not record their size and are left out."]
    return lines + [""]


def _reference_section(summary: dict[str, Any]) -> list[str]:
    ref = summary["reference"]
    lines = ["## Reference: mixed baseline and teachers", ""]
    if not ref:
        return lines + ["No reference rows recorded (a study trains them when it starts).", ""]
    lines += [("Trained once per study on the study's seeds. A teacher is evaluated on the samples of its own "
               "classes (and group) only, so its accuracy is not comparable with the students' (every class "
               "of every group)."), "",
              "| method | seeds | parameters | inner acc | holdout acc |", "|---|---:|---:|---|---|"]
    for r in ref:
        lines.append(f"| {r['method']} | {r['n_seeds']} | {_count(r.get('params'))} | "
                     f"{_pm(r['inner_acc_mean'], r['inner_acc_std'])} | "
                     f"{_pm(r['holdout_acc_mean'], r['holdout_acc_std'])} |")
    return lines + [""]


def _teacher_section(summary: dict[str, Any]) -> list[str]:
    teachers = summary.get("teachers") or []
    lines = ["## Teachers on their own classes", ""]
    if not teachers:
        return lines + [("No teacher recorded (the study's metadata names no task and its reference table "
                         "holds no teacher rows)."), ""]
    task = summary.get("task")
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
        knows = t["knows"] + (f" (checkpoint `{_escape(str(t['checkpoint']))}`)" if t.get("checkpoint") else "")
        lines.append(f"| {t['method']} | {knows} | {_count(t['params'])} | {t['n_seeds']} | "
                     f"{_pm(t['inner_acc_mean'], t['inner_acc_std'])} | "
                     f"{_pm(t['holdout_acc_mean'], t['holdout_acc_std'])} |")
    if any(t["n_seeds"] == 0 for t in teachers):
        lines += ["", ("A teacher with 0 seeds has no reference rows yet (the references are trained when the "
                       "study starts).")]
    return lines + [""]


def _class_section(summary: dict[str, Any]) -> list[str]:
    lines = ["## Holdout accuracy per class", ""]
    per_class = summary.get("class_accuracy")
    if per_class is None:
        why = ("no COMPLETE trial yet" if summary.get("best") is None else
               "not recorded for the best trial (a study of an older kdtune)")
        return lines + [f"Not shown: {why}.", ""]
    counts = summary.get("parameter_counts") or {}
    methods = per_class["accuracy"]
    shared = per_class["shared_classes"]
    names = {"student": f"student (trial #{per_class['trial_number']})", "baseline": "mixed baseline",
             "ablation": "ablation (no KD)", "tuned_baseline": "tuned baseline"}
    seeds = ", ".join(f"{names[m]} {n}" for m, n in per_class["n_seeds"].items())
    lines += [f"Seed means over the holdout samples of each class (seeds: {seeds}).", ""]
    lines += [(f"Parameters of one network: student {_count(counts.get('student'))}, mixed baseline "
               f"{_count(counts.get('baseline'))}."), ""]
    lines += ["| class | " + " | ".join(names[m] for m in methods) + " |", "|---|" + "---:|" * len(methods)]
    marked = set(shared or [])
    for c in per_class["classes"]:
        label = f"{c}*" if c in marked else str(c)
        lines.append(f"| {label} | " + " | ".join(_pct(methods[m][c]) for m in methods) + " |")
    if shared is None:
        lines += ["", "Shared classes are not recorded (the metadata holds no task)."]
    elif shared:
        which = "every class here" if len(shared) == len(per_class["classes"]) else ",".join(map(str, shared))
        lines += ["", f"`*` a shared class: more than one teacher knows it ({which})."]
    else:
        lines += ["", "No class is shared: each class is known by exactly one teacher."]
    return lines + [""]


def _importance_section(summary: dict[str, Any]) -> list[str]:
    lines = ["## Parameter importance", ""]
    values, method = summary["importance"], summary["importance_method"]
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
    said += _separation(summary)
    if said:
        lines += ["**" + " ".join(said) + "**", ""]
    knobs = summary.get("importance_knobs") or []
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


def _separation(summary: dict[str, Any]) -> list[str]:
    """Whether the bootstrap separates the two most important knobs, in one sentence (or none)."""
    separated = summary["importance_method"].get("separated")
    if separated is None:
        return []
    knobs = sorted(summary.get("importance_knobs") or [], key=lambda k: -k["importance"])
    first, second = knobs[0]["knob"], knobs[1]["knob"]
    if separated:
        return [f"The 90 % interval of `{first}` lies above that of `{second}`, the runner-up."]
    return [(f"The 90 % intervals of `{first}` and `{second}`, the top two, overlap: the bootstrap does not "
             "separate them.")]


def _provenance_section(study: StudyData, summary: dict[str, Any]) -> list[str]:
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
    lines += ["", "Tables:", ""] + [f"- {name}: `{path}`" for name, path in summary["tables"].items()]
    return lines + [""]


def _analysis_versions() -> dict[str, str]:
    import numpy
    import pyarrow

    return {"pandas": pd.__version__, "pyarrow": pyarrow.__version__, "numpy": numpy.__version__}


# ------------------------------------------------------------------------------------------ formatting

def _share(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def _count(value: Any) -> str:
    """A parameter count (12,345), or "not recorded"."""
    return "not recorded" if value is None else f"{int(value):,}"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def _pm(mean: Any, std: Any) -> str:
    if mean is None:
        return "–"
    return f"{100 * mean:.2f} %" if std is None else f"{100 * mean:.2f} ± {100 * std:.2f} %"


def _diff_ci(test: dict[str, Any]) -> str:
    text = f"{100 * test['diff_mean']:+.2f} pp"
    if test["ci95"] is not None:
        lo, hi = test["ci95"]
        text += f" [{100 * lo:+.2f}, {100 * hi:+.2f}]"
    return text


def _comparison(test: dict[str, Any]) -> str:
    text = f"{100 * test['diff_mean']:+.2f} percentage points"
    if test["ci95"] is not None:
        lo, hi = test["ci95"]
        text += f" (95 % CI {100 * lo:+.2f} to {100 * hi:+.2f})"
    return text + f", p = {test['p_value']:.4g}"


def _objective_text(value: Any, objective: dict[str, Any]) -> str:
    if value is None:
        return "–"
    return _pct(value) if objective["column"].endswith("_acc_mean") else f"{value:.4g}"


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


def _jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars unwrapped, NaN and infinities as None, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, text.encode("utf-8"))
