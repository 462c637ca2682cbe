"""The teachers of a task: trained on their own classes and group (or loaded from checkpoints), run, and
turned into the targets the student learns from.

Each teacher trains on the samples of its classes (and group), in its own label space; the routing of the
task (``kdcore.task``) says which teachers give each sample its target. ``teacher_outputs`` is the one place a
teacher runs once trained: eval mode, no gradient.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kdcore import batching
from kdcore.batching import SeedModel
from kdcore.checkpoint import load_teacher
from kdcore.config import ExperimentConfig
from kdcore.errors import ConfigError, TrainingError
from kdcore.evaluation import EVAL_CHUNK, class_accuracy, evaluate, trainable_parameters
from kdcore.prepared import Prepared, Subset, rows_of, task_of
from kdcore.result import FitResult, ReportFn
from kdcore.supervised import train_supervised
from kdcore.task import Task, Teacher


def teacher_outputs(teacher: SeedModel, x: torch.Tensor | Subset,
                    stages: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The teacher's logits (S, N, C) on x (N, ...) or (S, N, ...), or on every row of a set, and, for feature
    distillation, its last ``stages`` feature maps (S, N, C_i, H_i, W_i): the only place teachers run (eval
    mode, no gradient, so a row's outputs do not depend on the rows beside it), in chunks of ``EVAL_CHUNK``
    rows; in the caller's precision (bf16 inside a bf16 training step), returned in float32."""
    if isinstance(x, Subset):
        parts = x.chunks(EVAL_CHUNK)
    else:
        parts = list(x.split(EVAL_CHUNK, dim=0 if x.dim() == len(teacher.input_shape) + 1 else 1))
    logits, maps = [], []
    teacher.eval()
    with torch.no_grad():
        for part in parts:
            logits.append(teacher(part))
            if stages:
                if not isinstance(teacher, batching.StackedModel):
                    raise ConfigError(f"feature distillation needs a teacher with feature maps, but got "
                                      f"{type(teacher).__name__}")
                maps.append(teacher.call("features", part)[-stages:])
    # float32 whatever precision the caller's autocast ran them in (float32 tensors are not copied)
    return (torch.cat(logits, dim=1).float(),
            [torch.cat([m[i] for m in maps], dim=1).float() for i in range(stages)])


def evaluate_teacher(prep: Prepared, teacher: Teacher, model: SeedModel, seconds: float = 0.0) -> FitResult:
    """A teacher that was not trained here (a checkpoint): its metrics on its own classes' samples, marked
    with the file it came from (``FitResult.loaded_from``)."""
    _, select, holdout = prep.part(teacher.classes, teacher.group)
    ev = evaluate(model, select, holdout)
    class_acc = class_accuracy(ev.holdout_logits, holdout)
    zeros = np.zeros(model.n_seeds, dtype=np.int64)
    return FitResult(teacher.name, model.seeds, ev.inner_acc, ev.inner_loss, ev.holdout_acc, ev.holdout_loss, zeros,
                     0, seconds, model, classes=teacher.classes, class_acc=class_acc,
                     params=trainable_parameters(model), loaded_from=teacher.checkpoint)


def train_teacher(prep: Prepared, config: ExperimentConfig, teacher: Teacher,
                  on_epoch: ReportFn | None = None) -> FitResult:
    """One teacher, trained (or loaded from its checkpoint and evaluated) on its own classes and group,
    selected and reported on those samples only, in its own label space.

    What it trains depends on the teacher alone: its network is initialised, its batches shuffled and
    augmented from generators seeded by the seeds (``kdcore.networks.build``, ``kdcore.loop``), never
    from state an earlier teacher left, so teacher k comes out the same whether trained after the others
    or alone in its own process."""
    if teacher.checkpoint is not None:
        start = time.perf_counter()
        model = load_teacher(teacher, prep.input_shape, config.seeds, prep.device)
        return evaluate_teacher(prep, teacher, model, time.perf_counter() - start)
    return train_supervised(prep, teacher.fit, config.seeds, method=teacher.name, eval_every=config.eval_every,
                            on_epoch=on_epoch, classes=teacher.classes, group=teacher.group)


def train_teachers(prep: Prepared, config: ExperimentConfig, on_epoch: ReportFn | None = None) -> list[FitResult]:
    """The task's teachers, one after another (``train_teacher``)."""
    return [train_teacher(prep, config, teacher, on_epoch) for teacher in task_of(prep, config).teachers]


@dataclass(frozen=True)
class Targets:
    """The teachers' targets for a set of samples, slot r of sample i holding one routed teacher.

    logits (S, N, R, C): teacher logits placed in the global class slots (0 where the teacher does not know
    the class); mask (S, N, R, C): the classes that slot's teacher knows, None when every teacher knows every
    class; weight (S, N, R): 1 for a routed teacher, 0 for an empty slot, None when no slot is empty. R is
    the largest number of teachers routed to one sample (1 in the multi-domain task, which has neither mask
    nor weight).
    """

    logits: torch.Tensor
    mask: torch.Tensor | None
    weight: torch.Tensor | None

    def rows(self, idx: torch.Tensor) -> Targets:
        """Each seed's rows ``idx`` (S, B) -> targets of shape (S, B, ...)."""
        return Targets(rows_of(self.logits, idx), None if self.mask is None else rows_of(self.mask, idx),
                       None if self.weight is None else rows_of(self.weight, idx))


@dataclass(frozen=True)
class Routing:
    """Which teacher fills each target slot of each sample, from the samples' labels and groups alone.

    slot (S, N, K, R): teacher k fills slot r of sample i; mask and weight as in ``Targets``; columns[k]
    the global classes of teacher k's outputs, on the device. Computed once per set (it reads the labels
    on the host), so that a batch's targets (``rows``, then ``routed_targets``) need nothing from the host.
    """

    slot: torch.Tensor
    mask: torch.Tensor | None
    weight: torch.Tensor | None
    columns: tuple[torch.Tensor, ...]

    def rows(self, idx: torch.Tensor) -> Routing:
        """Each seed's rows ``idx`` (S, B) -> the routing of that batch."""
        return Routing(rows_of(self.slot, idx), None if self.mask is None else rows_of(self.mask, idx),
                       None if self.weight is None else rows_of(self.weight, idx), self.columns)


def routing_of(task: Task, subset: Subset, n_seeds: int) -> Routing:
    """The task's routing of every row of ``subset`` for ``n_seeds`` seeds."""
    device = subset.y.device
    route = torch.as_tensor(task.route(subset.y.cpu().numpy(), subset.d.cpu().numpy()), device=device)
    route = route.expand(n_seeds, *route.shape[-2:])  # (S, N, K)
    n_slots = max(1, int(route.sum(dim=-1).max()))
    slot = torch.nn.functional.one_hot((route.cumsum(dim=-1) - 1).clamp_min(0), n_slots).bool()  # (S, N, K, R)
    slot &= route.unsqueeze(-1)
    mask = torch.zeros((*route.shape[:2], n_slots, task.n_classes), dtype=torch.bool, device=device)
    known = torch.as_tensor(task.class_mask, device=device)  # (K, C)
    for teacher in task.teachers:
        mask = mask | (slot[:, :, teacher.index].unsqueeze(-1) & known[teacher.index])
    filled = slot.any(dim=2)  # (S, N, R)
    # An empty slot (a sample with fewer teachers than R) counts for nothing (weight 0); every class is
    # "known" there so that its softmax stays finite.
    mask = mask | ~filled.unsqueeze(-1)
    columns = tuple(torch.as_tensor(list(t.classes), device=device) for t in task.teachers)
    return Routing(slot, None if bool(mask.all()) else mask, None if bool(filled.all()) else filled.float(), columns)


def routed_targets(task: Task, outputs: Sequence[torch.Tensor], routing: Routing) -> Targets:
    """The targets of samples routed by ``routing`` from each teacher's logits on them, ``outputs[k]``
    (S, N, |S_k|): from the teacher run on them (``teacher_outputs``) or looked up in its tables
    (``kdcore.variant_logits``), placed in its classes' columns of its slots."""
    slot = routing.slot
    logits = torch.zeros((*slot.shape[:2], slot.shape[-1], task.n_classes), device=slot.device)
    for teacher, local, columns in zip(task.teachers, outputs, routing.columns):
        # local (S, N, |S_k|): every row, kept where routed to this teacher
        full = torch.zeros((*local.shape[:2], task.n_classes), device=slot.device)
        full[..., columns] = local.to(full.dtype)
        here = slot[:, :, teacher.index].unsqueeze(-1)  # (S, N, R, 1)
        logits = torch.where(here, full.unsqueeze(2), logits)
    return Targets(logits, routing.mask, routing.weight)


def teacher_targets(task: Task, teachers: Sequence[SeedModel], subset: Subset) -> Targets:
    """The routed teachers' targets for ``subset``, each teacher run once (``teacher_outputs``)."""
    if len(teachers) != len(task.teachers):
        raise TrainingError(f"the task has {len(task.teachers)} teachers, but {len(teachers)} models were given")
    outputs = [teacher_outputs(model, subset)[0] for model in teachers]
    return routed_targets(task, outputs, routing_of(task, subset, teachers[0].n_seeds))
