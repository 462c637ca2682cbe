"""The task behind a study and its figures per class: what each teacher knows and scores on its own classes,
the best student's accuracy per class beside the references', and the parameters of each network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from results.cells import first_int, first_list, list_cell
from results.stats import mean_std
from results.study_data import StudyData
from results.summaries import TopTrial

TEACHER_PREFIX = "teacher_"  # reference method teacher_K: teacher K of the task (kdcore.task.Teacher.name)
CLASS_METHODS = ("baseline", "ablation", "tuned_baseline")  # shown per class beside the best student


@dataclass(frozen=True)
class TeacherStats:
    """A teacher: what it knows, its size, and its accuracy over seeds on the samples of its own classes."""

    method: str
    index: int
    classes: list[int] | None
    group: int | None
    checkpoint: Any
    knows: str
    params: int | None
    n_seeds: int
    inner_acc_mean: float | None
    inner_acc_std: float | None
    holdout_acc_mean: float | None
    holdout_acc_std: float | None
    holdout_class_acc_mean: list[float | None] | None  # in the order of ``classes``


@dataclass(frozen=True)
class ClassAccuracy:
    """The best trial's holdout accuracy per class (seed means) beside the references', by method."""

    trial_number: int | None
    trial_id: Any
    classes: list[int]
    shared_classes: list[int] | None
    accuracy: dict[str, list[float | None]]  # method -> one value per class (None: no seed measured it)
    n_seeds: dict[str, int]


@dataclass(frozen=True)
class ParameterCounts:
    """Trainable parameters of one network of each kind; None where not recorded."""

    student: int | None
    projector: int | None
    head: str | None
    baseline: int | None
    fixed_student: int | None
    teachers: dict[str, int | None]


def study_task(study: StudyData) -> dict[str, Any] | None:
    """The task the study's metadata records (``kdcore.task.Task.describe()``), or None (an older kdtune)."""
    task = study.metadata.get("task")
    return task if isinstance(task, dict) else None


def shared_classes(study: StudyData) -> list[int] | None:
    """The classes more than one teacher knows (metadata ``task.shared_classes``); None if not recorded."""
    task = study_task(study)
    shared = task.get("shared_classes") if task else None
    return [int(c) for c in shared] if isinstance(shared, list) else None


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
        accs, order = list_cell(values), list_cell(classes)
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


def teacher_summary(study: StudyData) -> list[TeacherStats]:
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
        classes = first_list(rows["classes"])
        if classes is None and isinstance(info.get("classes"), list):
            classes = [int(c) for c in info["classes"]]
        group = info.get("group")
        params = first_int(rows["params"])
        if params is None and isinstance(fixed_params, list) and 0 <= index < len(fixed_params):
            params = int(fixed_params[index])
        inner_mean, inner_std = mean_std(rows["inner_acc"])
        holdout_mean, holdout_std = mean_std(rows["holdout_acc"])
        per_class = per_class_means(rows) if classes is not None else None
        out.append(TeacherStats(
            method=name, index=index, classes=classes, group=None if group is None else int(group),
            checkpoint=info.get("checkpoint"), knows=knows_text(classes, group), params=params,
            n_seeds=int(rows["seed"].nunique()), inner_acc_mean=inner_mean, inner_acc_std=inner_std,
            holdout_acc_mean=holdout_mean, holdout_acc_std=holdout_std,
            holdout_class_acc_mean=None if per_class is None or classes is None else
            [per_class[0][c] for c in classes]))
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


def class_accuracy(study: StudyData, best: TopTrial | None) -> ClassAccuracy | None:
    """The best trial's holdout accuracy per class (seed mean), beside the baseline's, the ablation's (of this
    very trial) and the tuned baseline's where recorded, with the task's shared classes.

    None without a best trial or when its seed rows hold no per-class accuracy (an older kdtune).
    """
    if not best:
        return None
    task = study_task(study)
    n_classes = int(task["n_classes"]) if task and isinstance(task.get("n_classes"), int) else None
    student = per_class_means(study.seeds[study.seeds["trial_id"] == best.trial_id], n_classes)
    if student is None:
        return None
    n_classes = len(student[0])
    methods: dict[str, list[float | None]] = {"student": student[0]}
    seeds = {"student": student[1]}
    for method in CLASS_METHODS:
        rows = study.reference[study.reference["method"] == method]
        if method == "ablation":
            rows = rows[pd.to_numeric(rows["trial_number"], errors="coerce") == best.number]
        means = per_class_means(rows, n_classes)
        if means is not None:
            methods[method], seeds[method] = means
    return ClassAccuracy(trial_number=best.number, trial_id=best.trial_id, classes=list(range(n_classes)),
                         shared_classes=shared_classes(study), accuracy=methods, n_seeds=seeds)


def parameter_counts(study: StudyData, best: TopTrial | None) -> ParameterCounts:
    """Trainable parameters of one network: the best trial's student (trials ``student_params``: all it
    trains, SimKD's projector included, that part in ``projector``, and the ``head`` it predicts through), the
    baseline (its reference rows, else the metadata's ``models``) and each teacher; None where not recorded.
    ``fixed_student`` is the student of the space's fixed settings (metadata), for a searched architecture."""
    def fixed(name: str) -> int | None:
        value = _fixed_params(study, name)
        return int(value) if isinstance(value, int) else None

    baseline = first_int(study.reference.loc[study.reference["method"] == "baseline", "params"])
    return ParameterCounts(student=best.student_params if best else None,
                           projector=best.projector_params if best else None, head=best.head if best else None,
                           baseline=baseline if baseline is not None else fixed("baseline"),
                           fixed_student=fixed("student"),
                           teachers={t.method: t.params for t in teacher_summary(study)})
