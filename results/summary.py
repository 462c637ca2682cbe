"""The summary of a study's analysis as typed data, and its JSON (``kdtune analyse --json``) made in one place.

``summarise(study)`` computes every section from the tables (``results.summaries``, ``.classes``,
``.methods``, ``.sizes``, ``.importance``); ``Summary.to_json()`` is the dict ``analyse`` returns and the
CLI prints. Rendering lives elsewhere: ``results.markdown`` writes the report, ``results.plots`` draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from results.classes import (
    ClassAccuracy,
    ParameterCounts,
    TeacherStats,
    class_accuracy,
    parameter_counts,
    study_task,
    teacher_summary,
)
from results.header import Header, report_header
from results.importance import Importance, param_importance
from results.json_view import to_json
from results.methods import MethodComparison, method_comparison
from results.sizes import AccuracyVsParams, accuracy_vs_params
from results.study_data import StudyData
from results.summaries import (
    Comparison,
    ReferenceStats,
    TopTrial,
    baseline_summary,
    ranked_complete,
    reference_comparisons,
    reference_summary,
    status_counts,
    top_configurations,
)

# the best trial's keys in the JSON's ``best``, in its order (``top`` holds every key of each trial)
BEST_KEYS = ("params", "holdout_acc_mean", "holdout_acc_std", "inner_acc_mean", "inner_acc_std", "objective",
             "number", "trial_id", "n_seeds", "student_params", "projector_params", "head", "vs_baseline")


@dataclass(frozen=True)
class Objective:
    """What trials are ranked by: the metric, its direction, and the trials column that holds it."""

    metric: str
    mode: str
    column: str


@dataclass(frozen=True)
class Summary:
    """Every figure of a study's analysis. ``report`` and ``plots`` are where ``analyse`` wrote them."""

    study: Path
    name: str
    objective: Objective
    trials: dict[str, int]  # by status, every known status, then ``total``
    planned_trials: int | None
    top: tuple[TopTrial, ...]  # best first
    baseline: ReferenceStats | None
    comparisons: dict[str, Comparison]  # the fairest first: the first is the comparison the study reports
    reference: tuple[ReferenceStats, ...]
    task: dict[str, Any] | None  # the metadata's task (``kdcore.Task.describe()``)
    models: Any  # the metadata's models
    teachers: tuple[TeacherStats, ...]
    class_accuracy: ClassAccuracy | None
    parameter_counts: ParameterCounts
    methods: MethodComparison | None
    accuracy_vs_params: AccuracyVsParams
    importance: Importance
    protocol_note: Any
    notes: tuple[str, ...]
    tables: dict[str, Path]
    header: Header | None = None  # what the figures rest on: holdout size, what ± means, inner − holdout gaps
    report: Path | None = None
    plots: tuple[Path, ...] = ()

    @property
    def best(self) -> TopTrial | None:
        return self.top[0] if self.top else None

    @property
    def shows_sizes(self) -> bool:
        """Whether accuracy against size says anything: methods are compared, or the trials differ in size."""
        points = self.accuracy_vs_params.trials
        return bool(points) and (self.methods is not None or len({p.trainable.total for p in points}) > 1)

    def to_json(self) -> dict[str, Any]:
        """The dict of ``kdtune analyse --json``: JSON types only, accuracies as fractions, None if missing."""
        best = to_json(self.best)
        baseline = to_json(self.baseline)
        importance = self.importance.to_dict()
        return to_json({
            "study": self.study,
            "name": self.name,
            "objective": self.objective,
            "trials": self.trials,
            "planned_trials": self.planned_trials,
            "best": None if best is None else {k: best[k] for k in BEST_KEYS},
            "baseline": None if baseline is None else {k: v for k, v in baseline.items() if k != "method"},
            "comparisons": self.comparisons,
            "comparison": next(iter(self.comparisons), None),
            "reference": self.reference,
            "task": self.task,
            "models": self.models,
            "teachers": self.teachers,
            "class_accuracy": self.class_accuracy,
            "parameter_counts": self.parameter_counts,
            "methods": self.methods,
            "accuracy_vs_params": self.accuracy_vs_params,
            "top": self.top,
            "importance": importance["values"],  # PED-ANOVA shares
            "importance_method": importance["method"],  # how: bootstrap, second evaluator, agreement
            "importance_knobs": importance["knobs"],  # a row per knob, in the report's order
            "protocol_note": self.protocol_note,
            "notes": self.notes,
            "header": self.header,
            "tables": self.tables,
            "report": self.report,
            "plots": self.plots,
        })


def summarise(study: StudyData, *, top_k: int = 5, random_state: int = 0) -> Summary:
    """Every section of the analysis of ``study``; ``random_state`` seeds the importance bootstrap."""
    ranked = ranked_complete(study)
    top = top_configurations(study, top_k, ranked)
    best = top[0] if top else None
    baseline = baseline_summary(study.reference)
    importance = param_importance(study, ranked, random_state=random_state)
    counts = status_counts(study.trials)
    return Summary(
        study=study.root, name=study.name,
        objective=Objective(study.objective["metric"], study.objective["mode"], study.objective_column),
        trials=counts, planned_trials=study.planned, top=tuple(top), baseline=baseline,
        comparisons=reference_comparisons(study, best), reference=tuple(reference_summary(study.reference)),
        task=study_task(study), models=study.metadata.get("models"), teachers=tuple(teacher_summary(study)),
        class_accuracy=class_accuracy(study, best), parameter_counts=parameter_counts(study, best),
        methods=method_comparison(study, ranked), accuracy_vs_params=accuracy_vs_params(study, ranked),
        importance=importance, protocol_note=study.metadata.get("protocol_note"),
        notes=tuple(_notes(study, counts, baseline, importance)), tables=dict(study.tables),
        header=report_header(study, best, baseline))


def counts_in_words(counts: dict[str, int]) -> str:
    """``3 PRUNED, 1 ERROR``: the statuses that occur."""
    parts = [f"{n} {status}" for status, n in counts.items() if status != "total" and n]
    return ", ".join(parts) if parts else "none"


def _notes(study: StudyData, counts: dict[str, int], baseline: ReferenceStats | None,
           importance: Importance) -> list[str]:
    notes = list(study.notes)
    total = counts["total"]
    if total == 0:
        notes.append("no trials recorded yet: no trial of the study has ended (or its trials table is empty)")
    elif counts["COMPLETE"] == 0:
        notes.append(f"no COMPLETE trial yet: all {total} recorded trials were "
                     f"{counts_in_words(counts)}; nothing to rank")
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
