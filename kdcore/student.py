"""The distilled student: the experiment's KD method (``kdcore.methods``) trained on the prepared data.

``train_student`` checks what the method needs (its teachers, its task) and hands the method a
``StudentRun``: the data, the task, the teachers' targets and the loop, which is all a method builds its
phases from (as mdistiller keeps one trainer and swaps the distiller).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kdcore.batching import SeedModel
from kdcore.config import ExperimentConfig, FitConfig, KDConfig
from kdcore.errors import TrainingError
from kdcore.loop import BatchLoss, Phase, SelectLoss, run_phase
from kdcore.methods import METHODS
from kdcore.prepared import Prepared, Subset, rows_of, task_of
from kdcore.result import FitResult, ReportFn, joined
from kdcore.supervised import hard_label_losses, new_model
from kdcore.task import Task
from kdcore.teachers import Routing, Targets, routed_targets, routing_of, teacher_outputs, teacher_targets
from kdcore.variant_logits import VariantLogits, compute


@dataclass(frozen=True)
class StudentRun:
    """What a KD method trains its student from: ``prep``'s sets, ``config``'s student settings, the task
    resolved against the data and, for a method that uses them, the task's trained ``teachers``, with their
    logits over every crop/flip variant (``variants``) when ``kd.targets`` is ``variants`` and the caller
    keeps them (a study's cache); else they are computed here when needed."""

    prep: Prepared
    config: ExperimentConfig
    teachers: Sequence[SeedModel]
    on_epoch: ReportFn | None = None
    variants: VariantLogits | None = None

    # the building blocks every method shares
    rows = staticmethod(rows_of)
    teacher_outputs = staticmethod(teacher_outputs)
    joined = staticmethod(joined)

    @property
    def kd(self) -> KDConfig:
        return self.config.kd

    @property
    def student(self) -> FitConfig:
        return self.config.student

    @functools.cached_property
    def task(self) -> Task:
        return task_of(self.prep, self.config)

    def new_model(self) -> SeedModel:
        """A fresh seed-batched student network for every class."""
        return new_model(self.prep, self.student, self.config.seeds)

    def targets(self, subset: Subset) -> Targets:
        """The routed teachers' targets (S, N, R, C) for ``subset`` (``teacher_targets``)."""
        targets = teacher_targets(self.task, self.teachers, subset)
        if targets.logits.shape[0] != len(self.config.seeds):
            raise TrainingError(f"teachers have {targets.logits.shape[0]} seeds, but the student has "
                                f"{len(self.config.seeds)}")
        return targets

    @property
    def augmenting(self) -> bool:
        """Whether the student's batches are augmented (then the teachers run on each augmented batch)."""
        return self.student.augments

    @functools.cached_property
    def fit_routing(self) -> Routing:
        """The task's routing of every fit-set row, computed once (``batch_targets`` takes its rows)."""
        if len(self.teachers) != len(self.task.teachers):
            raise TrainingError(f"the task has {len(self.task.teachers)} teachers, but {len(self.teachers)} "
                                "models were given")
        if self.teachers[0].n_seeds != len(self.config.seeds):
            raise TrainingError(f"teachers have {self.teachers[0].n_seeds} seeds, but the student has "
                                f"{len(self.config.seeds)}")
        return routing_of(self.task, self.prep.fit, len(self.config.seeds))

    @functools.cached_property
    def variant_logits(self) -> VariantLogits:
        """The teachers' logits over every variant of the fit set's images (given, or computed once here)."""
        found = self.variants if self.variants is not None else compute(self.teachers, self.prep.fit,
                                                                          self.student.augment)
        # On an accelerator the tables move there once (1.62 GB per seed for CIFAR-100): no host round trip
        # per batch; on the CPU they stay memory-mapped, shared by the trials of the node.
        return found if self.prep.device.type == "cpu" else found.to(self.prep.device)

    def batch_targets(self, targets: Targets, idx: torch.Tensor, x: torch.Tensor,
                      variant: torch.Tensor | None = None) -> Targets:
        """The routed teachers' targets for the batch ``idx`` (S, B): rows of ``targets`` (computed once on
        the fit set) when batches are not augmented, else the teachers run on the augmented batch ``x`` or,
        under ``kd.targets: variants``, their logits looked up at each image's ``variant`` (S, B); routed by
        the rows of the fit set's routing (nothing read on the host inside a step)."""
        if not self.augmenting:
            return targets.rows(idx)
        if self.kd.targets == "variants" and variant is not None:
            outputs = self.variant_logits.lookup(self.prep.fit, idx, variant)
        else:
            outputs = [teacher_outputs(model, x)[0] for model in self.teachers]
        return routed_targets(self.task, outputs, self.fit_routing.rows(idx))

    def hard_label_losses(self) -> tuple[BatchLoss, SelectLoss]:
        """Cross-entropy on the fit set's labels and on the selection set's."""
        return hard_label_losses(self.prep.fit, self.prep.select)

    def phase(self, model: SeedModel, batch_loss: BatchLoss, select_loss: SelectLoss, **changes: Any) -> Phase:
        """A phase of the student (every class) as its fit settings say, but for ``changes`` (``Phase``)."""
        return Phase.of("student", model, self.student, batch_loss, select_loss, eval_every=self.config.eval_every,
                        classes=range(self.prep.n_classes), **changes)

    def fit(self, phase: Phase) -> FitResult:
        """``phase`` trained on the fit set, selected on the selection set, reported on the holdout."""
        return run_phase(phase, self.prep.fit, self.prep.select, self.prep.holdout, self.on_epoch)


def train_student(
    prep: Prepared,
    config: ExperimentConfig,
    teachers: Sequence[SeedModel] | None,
    on_epoch: ReportFn | None = None,
    variants: VariantLogits | None = None,
) -> FitResult:
    """The student distilled from the task's teachers by ``config.kd.method`` (its entry of ``METHODS``).

    A configuration without a KD term (``none``, or Hinton with alpha = 0) trains on hard labels alone, and
    ``teachers`` may then be None. ``variants``: the teachers' logits over every crop/flip variant, kept by
    the caller (``kdcore.variant_logits.VariantCache``), for ``kd.targets: variants``.
    """
    kd = config.kd
    method = METHODS[kd.method]
    run = StudentRun(prep, config, () if teachers is None else tuple(teachers), on_epoch, variants)
    if method.uses_teachers(kd):
        if teachers is None:
            raise TrainingError(f"kd.method {kd.method!r} (alpha={kd.alpha}) learns from teachers, but none were "
                                "given")
        method.check_task(run.task, config.student.model)
    return method.train(run)

