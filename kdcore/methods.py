"""The KD methods, a plain dict: ``METHODS[kd.method]`` is the one object that knows a method.

Each entry owns everything that differs between methods: its settings checks (``check_config``), what it
needs of the task and the models (``check_task``, ``check_models``), whether it learns from teachers at all
(``uses_teachers``), the configuration of its no-KD ablation (``ablation``), how many epochs each of its
phases runs (``phase_epochs``), and how its student trains: ``trainer``, the import path of the function
that runs its phases through the one loop (the built-in ones are in ``kdcore.distillers``; a user's may live
in their own package, as a user's model factory does). Adding a method is one new entry here; nothing else
names a method.

This module imports nothing of kdcore but its errors: ``kdcore.config`` reads the names and rules from it,
and the command line reads configs before it imports torch. The torch side is named, not imported, so the
imports stay one way (config -> methods; distillers -> student -> methods) and ``resolve`` loads it when a
student trains. Training code reaches the entries through a ``StudentRun`` (``kdcore.student``), which hands
each trainer the prepared data, the task, the teachers' targets and the loop.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kdcore.errors import ConfigError

if TYPE_CHECKING:
    from kdcore.config import ExperimentConfig, KDConfig
    from kdcore.result import FitResult
    from kdcore.student import StudentRun
    from kdcore.task import Task

FEATURE_MODELS = ("cnn", "resnet")  # registry models with feature maps (``features``, ``pool``, ``fc``)


class Method:
    """One KD method. The defaults are a single-phase method that learns from its teachers and needs
    nothing particular of the task; ``trainer`` (and ``model_check``, if any) name its torch side."""

    trainer: str = ""  # "package.module:function", called as function(run: StudentRun) -> FitResult
    model_check: str | None = None  # "package.module:function"(config, task, input_shape, n_classes) -> None

    def check_config(self, kd: KDConfig) -> None:
        """ConfigError (one line) for ``kd`` settings this method cannot train with."""

    def check_task(self, task: Task, student_model: str) -> None:
        """ConfigError (one line) when this method cannot distil ``task`` into a ``student_model``."""

    def check_models(self, config: ExperimentConfig, task: Task, input_shape: tuple[int, ...],
                     n_classes: int) -> None:
        """ConfigError when the configured networks cannot be assembled the way this method needs them (at
        plan time, before anything trains; may import torch)."""
        if self.model_check is not None:
            resolve(self.model_check)(config, task, input_shape, n_classes)

    def uses_teachers(self, kd: KDConfig) -> bool:
        """Whether the student learns from teachers (False: hard labels only, and no teacher is trained)."""
        return True

    def ablation(self, kd: KDConfig) -> dict[str, Any]:
        """The KD settings of this configuration's ablation: no distillation term, hard labels alone."""
        return {"method": "hinton", "alpha": 0.0, "temperature": kd.temperature}

    def phase_epochs(self, kd: Any, student_epochs: int) -> tuple[int, ...]:
        """The most epochs each phase of the student runs (``kd``: anything with this method's settings)."""
        return (student_epochs,)

    def train(self, run: StudentRun) -> FitResult:
        """The student trained on ``run``'s data: the method's phases run through ``run.fit``."""
        if not self.trainer:
            raise ConfigError(f"{type(self).__name__} names no trainer ('package.module:function')")
        return resolve(self.trainer)(run)  # type: ignore[no-any-return]


def resolve(path: str) -> Callable[..., Any]:
    """The function at import path ``package.module:function``; ConfigError (one line) if there is none."""
    module_name, _, attribute = path.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"KD method trainer {path!r} cannot be loaded ({type(exc).__name__}: {exc})") from None
    if not callable(function):
        raise ConfigError(f"KD method trainer {path!r} is not a function")
    return function  # type: ignore[no-any-return]


class NoKD(Method):
    """Hard labels only: the no-KD reference."""

    trainer = "kdcore.distillers:hard_labels"

    def uses_teachers(self, kd: KDConfig) -> bool:
        return False


class Hinton(Method):
    """Hinton KD, ``(1 - alpha) * CE + alpha * T^2 * KL``, over each routed teacher's classes; with alpha = 0
    (the ablation of a configuration) the student trains on hard labels alone, exactly as ``(1 - 0) * CE``
    would."""

    trainer = "kdcore.distillers:hinton"

    def uses_teachers(self, kd: KDConfig) -> bool:
        return kd.alpha > 0


class Annealing(Method):
    """Annealing KD (Jafari et al. 2021): phase 1 (``kd.anneal_epochs``) regresses the student's logits on
    ``phi(t) * teacher`` without labels, selected by MSE to the full teacher; phase 2 (the student's epochs)
    trains on hard labels from the best phase-1 weights, with a fresh optimizer and a restarted LR schedule."""

    trainer = "kdcore.distillers:annealing"

    def check_config(self, kd: KDConfig) -> None:
        if kd.anneal_epochs < kd.tau_max:
            raise ConfigError(
                f"anneal_epochs >= tau_max must hold (one epoch per annealing step at least), "
                f"but got anneal_epochs={kd.anneal_epochs}, tau_max={kd.tau_max}"
            )

    def check_task(self, task: Task, student_model: str) -> None:
        if not (task.full_classes and task.one_teacher_each):
            raise ConfigError("kd.method 'annealing' regresses on one teacher's logits over every class: it needs "
                              "teachers that know every class, one routed to each sample; use kd.method 'hinton'")

    def phase_epochs(self, kd: Any, student_epochs: int) -> tuple[int, ...]:
        return (int(kd.anneal_epochs), student_epochs)


class SimKD(Method):
    """SimKD (Chen et al., CVPR 2022; ``kdcore.simkd``): only the student's encoder and the projectors train;
    the reused, frozen teacher classifier predicts. ``stages`` is how many feature maps ``kd.placement``
    aligns."""

    trainer = "kdcore.distillers:simkd"
    model_check = "kdcore.distillers:simkd_models"

    def check_config(self, kd: KDConfig) -> None:
        if kd.targets != "batch":
            raise ConfigError("kd.method 'simkd' learns the teacher's feature maps, which no table over crop/flip "
                              f"variants holds; kd.targets must be 'batch', but got {kd.targets!r}")

    @staticmethod
    def stages(kd: KDConfig) -> int:
        return 2 if kd.placement == "last_two" else 1

    def check_task(self, task: Task, student_model: str) -> None:
        if len(task.teachers) != 1 or not task.full_classes:
            raise ConfigError(f"kd.method 'simkd' distils one teacher that knows every class, but the task has "
                              f"{len(task.teachers)} teacher(s) knowing {[list(t.classes) for t in task.teachers]}")
        for role, name in (("student", student_model), ("teacher", task.teachers[0].fit.model)):
            if name == "mlp":
                raise ConfigError(f"kd.method 'simkd' needs feature maps, but the {role} is an mlp; use one of "
                                  f"{list(FEATURE_MODELS)} or a factory whose model has features, pool and fc")


NO_KD = "none"  # the method without a distillation term: what every other method is measured against

# kd.method -> the method; the order is the order the command line and the messages list them in.
METHODS: dict[str, Method] = {
    "hinton": Hinton(),
    "annealing": Annealing(),
    "simkd": SimKD(),
    NO_KD: NoKD(),
}


def method_of(name: str) -> Method:
    """``METHODS[name]``, or ConfigError naming the methods there are."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"kd.method must be one of {list(METHODS)}, but got {name!r}") from None


def evaluations_before_measured_phase(kd: Any, student_epochs: int, eval_every: int) -> int:
    """How many evaluations a student makes before the phase its objective measures (its method's last,
    ``Method.phase_epochs``): 0 for one-phase methods, phase 1's for annealing KD. The earlier phases run to
    their end (no early stopping), evaluating every ``eval_every`` epochs and at their last epoch, as
    ``kdcore.loop.run_phase`` does; ASHA counts from there, and the report says so."""
    phases = method_of(kd.method).phase_epochs(kd, student_epochs)
    return sum(math.ceil(e / eval_every) for e in phases[:-1])


def check_method(task: Task, method: str, student_model: str) -> None:
    """ConfigError (one line) when KD method ``method`` cannot distil this task into a ``student_model``:
    annealing KD needs teachers that know every class, one routed to each sample; SimKD one teacher that
    knows every class, and image models with feature maps (cnn, resnet, or a factory of the user's that has
    ``features``, ``pool`` and ``fc``)."""
    method_of(method).check_task(task, student_model)
