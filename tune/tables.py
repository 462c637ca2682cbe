"""A study's Parquet tables as kdtune writes them: their metadata, their parameter columns, and the rows of
the reference table (``results.schema``; the ``results`` package reads them).

Imports pyarrow (through ``results.writer``), never Ray: a study's driver, ``kdtune resume`` and the reference
jobs all write through ``study_tables``.
"""

from __future__ import annotations

from typing import Any

from kdcore import parameter_count, resolve_task
from results.schema import class_acc_cell, param_type
from results.writer import StudyTables
from search_spaces import SearchSpace
from tune.study import StudyMeta, StudyPaths

ABLATION = "ablation"  # the reference-table method of the best trial retrained without its KD term
TUNED_BASELINE = "tuned_baseline"  # ... of the best trial of the study's CE-only search (--tune-baseline)


def space_param_types(space: SearchSpace) -> list[tuple[str, Any]]:
    """(knob path, arrow type) for every knob of a search space, in order."""
    return [(k.path, param_type(k.kind, getattr(k, "choices", ()))) for k in space.knobs]


def study_tables(paths: StudyPaths, meta: StudyMeta, space: SearchSpace) -> StudyTables:
    """The study's tables in ``DIR/NAME/results``, with the study's metadata (``results.schema``)."""
    base = space.base
    metadata = {
        "study": meta.name, "data": meta.data, "data_source": meta.data_source, "fingerprint": meta.fingerprint,
        "space_name": meta.space_name, "space": meta.space_text, "protocol": base.protocol,
        "protocol_note": ("seed protocol: checkpoints selected on the given validation set, which is also "
                          "reported as holdout (as published): holdout figures are optimistic")
        if base.protocol == "seed" else (
            f"honest protocol: each seed selects on its own of {base.n_folds} folds of the training set; "
            "holdout never chooses" if base.inner == "folds" else
            "honest protocol: selection on an inner split of the training set; holdout never chooses"),
        "seeds": list(base.seeds), "inner": base.inner, "inner_fraction": base.inner_fraction,
        "fold_start": base.fold_start, "split_seed": base.split_seed,
        "objective": space.objective.to_dict(), "versions": meta.versions,
        "task": meta.task, "models": _models(meta, space),
        "self_distillation": meta.self_distillation,
        "asha_counts": meta.asha_counts, "evaluation_sizes": meta.evaluation_sizes,
    }
    return StudyTables(paths.results, space_param_types(space), metadata)


def _models(meta: StudyMeta, space: SearchSpace) -> dict[str, Any] | None:
    """The baseline's, the teacher's and the student's fixed model spec with its trainable parameters for
    the data's input shape (results.schema, "models"); None for a study planned by an older kdtune."""
    if meta.task is None or meta.input_shape is None:
        return None
    base, shape = space.base, tuple(meta.input_shape)
    n_classes = int(meta.task["n_classes"])
    task = resolve_task(base.task, base.teacher, n_classes, int(meta.task["n_groups"]))
    out: dict[str, Any] = {name: {**getattr(base, name).model_spec.to_dict(),
                                  "params": parameter_count(getattr(base, name).model_spec, shape, n_classes)}
                           for name in ("baseline", "student")}
    out["teacher"] = {**base.teacher.model_spec.to_dict(),
                      "params": [parameter_count(t.fit.model_spec, shape, len(t.classes)) for t in task.teachers]}
    return {name: out[name] for name in ("baseline", "teacher", "student")}


def reference_rows(study: str, method: str, summary: dict[str, Any], trial_number: int | None = None
                   ) -> list[dict[str, Any]]:
    """The reference-table rows of one method: one per seed, with the method's parameter count and classes
    (``FitResult.summary``; null when the summary has none: a tuned baseline's per-seed rows, an older
    kdcore's teacher cache) and each seed's holdout accuracy per class, in the order of those classes."""
    params = summary.get("params")
    classes = summary.get("classes")
    return [{"study": study, "method": method, "seed": s["seed"], "trial_number": trial_number,
             "inner_acc": s["inner_acc"], "holdout_acc": s["holdout_acc"], "inner_loss": s["inner_loss"],
             "holdout_loss": s["holdout_loss"], "best_epoch": s["best_epoch"],
             "params": None if params is None else int(params),
             "classes": None if classes is None else [int(c) for c in classes],
             "holdout_class_acc": class_acc_cell(s.get("holdout_class_acc"))} for s in summary["per_seed"]]


def tuned_summary(attrs: dict[str, Any], task: dict[str, Any] | None) -> dict[str, Any]:
    """What ``reference_rows`` needs of the CE-only search's best trial, from its Optuna user attributes: the
    per-seed rows, the student's size (None when an older kdtune ran that search) and its classes, every
    class of the task (a CE-only student has C outputs; C from the per-class lists when the task is not
    recorded, None when neither is)."""
    per_seed = attrs["per_seed"]
    n_classes = task.get("n_classes") if isinstance(task, dict) else None
    if not isinstance(n_classes, int):
        lengths = {len(s.get("holdout_class_acc") or []) for s in per_seed}
        n_classes = lengths.pop() if len(lengths) == 1 and 0 not in lengths else None
    return {"per_seed": per_seed, "params": attrs.get("student_params"),
            "classes": None if n_classes is None else list(range(n_classes))}
