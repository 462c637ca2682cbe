"""kdcore: the PyTorch engine of kdtune (data, batched models, losses, schedules, training).

Imports neither ray nor optuna. This module is the public API: every name a caller outside ``kdcore``
needs is here, and each is imported on first use (``PUBLIC`` says from where), so that ``import kdcore``
costs nothing and the ``kdtune`` command line stays light until a command needs torch. The modules behind
it may move; these names stay. Tests of one module's internals import that module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kdcore.errors import ConfigError, DataError, KDCoreError, TrainingError, one_line

__version__ = "0.1.0"

# public name -> (module, attribute)
PUBLIC: dict[str, tuple[str, str]] = {
    # settings
    **{name: ("kdcore.config", name) for name in (
        "ExperimentConfig", "FitConfig", "KDConfig", "ModelSpec", "DEFAULT_SEEDS", "PUBLISHED_FIT", "MODEL_NAMES",
        "KD_METHODS", "OPTIMIZERS", "SCHEDULES", "PROTOCOLS", "INNER", "PRECISIONS", "SEED_BATCHINGS", "knob_paths",
        "set_path")},
    **{name: ("kdcore.task_config", name) for name in ("TaskConfig", "TeacherSpec", "ROUTINGS")},
    # data
    "load_data": ("kdcore.sources", "load"),
    "data_spec": ("kdcore.sources", "canonical"),
    **{name: ("kdcore.sources", name) for name in ("load_pickle", "builtin", "BUILTIN_NAMES")},
    **{name: ("kdcore.dataset", name) for name in ("ClassificationData", "ARRAY_KEYS", "validate_arrays")},
    **{name: ("kdcore.generator", name) for name in ("generate", "bayes_accuracy")},
    **{name: ("kdcore.splits", name) for name in ("inner_split", "inner_folds")},
    # the task: teachers, routing
    "resolve_task": ("kdcore.task", "resolve"),
    **{name: ("kdcore.task", name) for name in ("Task", "Teacher", "check_coverage")},
    # the KD methods: what each needs of a task, its phases, its epochs
    **{name: ("kdcore.methods", name) for name in ("METHODS", "Method", "NO_KD", "check_method",
                                                   "evaluations_before_measured_phase")},
    # networks
    "SeedModel": ("kdcore.batching", "SeedModel"),
    "parameter_count": ("kdcore.networks", "parameter_count"),
    "load_teacher": ("kdcore.checkpoint", "load_teacher"),
    # training
    "run_experiment": ("kdcore.experiment", "run_experiment"),
    **{name: ("kdcore.prepared", name) for name in ("prepare", "Prepared", "Subset", "task_of")},
    **{name: ("kdcore.result", name) for name in ("ExperimentResult", "EpochReport", "FitResult", "round_acc")},
    "train_baseline": ("kdcore.supervised", "train_baseline"),
    **{name: ("kdcore.teachers", name) for name in ("train_teachers", "teacher_targets")},
    "train_student": ("kdcore.student", "train_student"),
    **{name: ("kdcore.teacher_cache", name) for name in ("TeacherCache", "teacher_key")},
    **{name: ("kdcore.variant_logits", name) for name in ("VariantCache", "VariantLogits")},
    # files
    **{name: ("kdcore.atomic_file", name) for name in ("write_atomic", "replacing")},
    "safe_load": ("kdcore.yaml_loader", "safe_load"),
}

__all__ = ["ConfigError", "DataError", "KDCoreError", "TrainingError", "one_line", "__version__", *PUBLIC]  # noqa: PLE0604


def __getattr__(name: str) -> Any:
    try:
        module, attribute = PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module 'kdcore' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # what the names are, for type checkers and editors
    # ruff: noqa: F401
    from kdcore.atomic_file import replacing, write_atomic
    from kdcore.batching import SeedModel
    from kdcore.checkpoint import load_teacher
    from kdcore.config import (
        DEFAULT_SEEDS,
        INNER,
        KD_METHODS,
        MODEL_NAMES,
        OPTIMIZERS,
        PROTOCOLS,
        PUBLISHED_FIT,
        SCHEDULES,
        ExperimentConfig,
        FitConfig,
        KDConfig,
        ModelSpec,
        knob_paths,
        set_path,
    )
    from kdcore.dataset import ARRAY_KEYS, ClassificationData, validate_arrays
    from kdcore.experiment import run_experiment
    from kdcore.generator import bayes_accuracy, generate
    from kdcore.methods import METHODS, NO_KD, Method, check_method, evaluations_before_measured_phase
    from kdcore.networks import parameter_count
    from kdcore.prepared import Prepared, Subset, prepare, task_of
    from kdcore.result import EpochReport, ExperimentResult, FitResult, round_acc
    from kdcore.sources import BUILTIN_NAMES, builtin, load_pickle
    from kdcore.sources import canonical as data_spec
    from kdcore.sources import load as load_data
    from kdcore.splits import inner_folds, inner_split
    from kdcore.student import train_student
    from kdcore.supervised import train_baseline
    from kdcore.task import Task, Teacher, check_coverage
    from kdcore.task import resolve as resolve_task
    from kdcore.task_config import ROUTINGS, TaskConfig, TeacherSpec
    from kdcore.teacher_cache import TeacherCache, teacher_key
    from kdcore.teachers import teacher_targets, train_teachers
    from kdcore.variant_logits import VariantCache, VariantLogits
    from kdcore.yaml_loader import safe_load
