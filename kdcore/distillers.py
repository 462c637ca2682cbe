"""How each built-in KD method's student trains: the phases it runs through the one loop.

The torch side of ``kdcore.methods``: each registry entry names its function here by import path
(``trainer``), so that the registry stays light and the imports flow one way. Every function takes the
``StudentRun`` of ``kdcore.student`` (data, task, teachers' targets, the loop) and returns the student's
``FitResult``.
"""

from __future__ import annotations

import torch

from kdcore import losses, networks
from kdcore import simkd as simkd_parts
from kdcore.config import ExperimentConfig
from kdcore.methods import SimKD
from kdcore.result import FitResult
from kdcore.schedules import annealing_phi
from kdcore.student import StudentRun
from kdcore.task import Task

SIMKD_CACHE_ELEMENTS = 2**28  # teacher feature maps of the whole fit set up to 1 GiB are computed once


def hard_labels(run: StudentRun) -> FitResult:
    """The student on hard labels alone: one cross-entropy phase."""
    return run.fit(run.phase(run.new_model(), *run.hard_label_losses()))


def hinton(run: StudentRun) -> FitResult:
    """Hinton KD over each routed teacher's classes; alpha = 0 is hard labels alone."""
    kd, train = run.kd, run.prep.fit
    if not kd.alpha > 0:
        return hard_labels(run)
    model = run.new_model()
    targets = None if run.augmenting else run.targets(train)  # (S, N, R, C) routed by the task
    _, select_ce = run.hard_label_losses()

    def hinton_loss(logits: torch.Tensor, idx: torch.Tensor, epoch: int, x: torch.Tensor,
                    variant: torch.Tensor | None = None) -> torch.Tensor:
        t = run.batch_targets(targets, idx, x, variant)  # type: ignore[arg-type]  # None only when augmenting
        return losses.subset_hinton_kd(logits, t.logits, t.mask, t.weight, train.take(train.y, idx), kd.alpha,
                                       kd.temperature)

    return run.fit(run.phase(model, hinton_loss, select_ce, wants_variant=True))


def annealing(run: StudentRun) -> FitResult:
    """Annealing KD: phase 1 regresses on phi * teacher logits (no labels, selected by MSE to the full
    teacher), phase 2 trains on hard labels from phase 1's best weights, its LR schedule restarted."""
    kd, select = run.kd, run.prep.select
    model = run.new_model()
    fit_targets = None if run.augmenting else run.targets(run.prep.fit)
    select_targets = run.targets(select).logits[:, :, 0]

    def phase1_loss(logits: torch.Tensor, idx: torch.Tensor, epoch: int, x: torch.Tensor,
                    variant: torch.Tensor | None = None) -> torch.Tensor:
        phi = annealing_phi(epoch, epochs=kd.anneal_epochs, tau_max=kd.tau_max)
        full = run.batch_targets(fit_targets, idx, x, variant).logits[:, :, 0]  # type: ignore[arg-type]
        return losses.annealing_mse(logits, losses.annealing_target(full, phi))  # the one routed teacher

    def phase1_select(logits: torch.Tensor) -> torch.Tensor:
        return losses.annealing_mse(logits, select_targets, select.weight)

    first = run.fit(run.phase(model, phase1_loss, phase1_select, epochs=kd.anneal_epochs, patience=None,
                              restore_best=True, wants_variant=True))
    second = run.fit(run.phase(first.model, *run.hard_label_losses(), epoch_offset=first.epochs_run))
    return run.joined(first, second)


def simkd_models(config: ExperimentConfig, task: Task, input_shape: tuple[int, ...], n_classes: int) -> None:
    """ConfigError unless SimKD's networks can be assembled: the student and teacher need feature maps
    (builds one of each, at plan time)."""
    simkd_parts.build_student(networks.build(config.student.model_spec, input_shape, n_classes, 0),
                              networks.build(task.teachers[0].fit.model_spec, input_shape, n_classes, 0),
                              input_shape, factor=config.kd.factor, placement=config.kd.placement)


def simkd(run: StudentRun) -> FitResult:
    """SimKD: only the student's encoder and the projectors train; the reused teacher classifier predicts."""
    kd, train = run.kd, run.prep.fit
    teacher = run.teachers[0]
    model = simkd_parts.simkd_model(run.prep, run.config, teacher)
    stages = SimKD.stages(kd)
    cache: tuple[torch.Tensor, list[torch.Tensor]] | None = None
    probe_logits, probe_maps = run.teacher_outputs(teacher, train.inputs(0, 1), stages)
    per_row = sum(m[0, 0].numel() for m in probe_maps) + probe_logits.shape[-1]
    if not run.augmenting and per_row * len(train) * len(run.config.seeds) <= SIMKD_CACHE_ELEMENTS:
        cache = run.teacher_outputs(teacher, train, stages)  # the same inputs every epoch: computed once

    def batch_loss(out: tuple[torch.Tensor, list[torch.Tensor]], idx: torch.Tensor, epoch: int,
                   x: torch.Tensor) -> torch.Tensor:
        logits, projected = out
        if cache is not None:
            t_logits, t_maps = run.rows(cache[0], idx), [run.rows(m, idx) for m in cache[1]]
        else:  # on the batch the student saw (augmented, when the fit augments)
            t_logits, t_maps = run.teacher_outputs(teacher, x, stages)
        return simkd_parts.simkd_loss(logits, projected, t_maps, t_logits, train.take(train.y, idx),
                                      kind=kd.feature_loss, prev_weight=kd.prev_weight, use_labels=kd.use_labels,
                                      ce_weight=kd.ce_weight, logit_weight=kd.logit_weight,
                                      temperature=kd.temperature)

    _, select_ce = run.hard_label_losses()
    net = model.net
    if not isinstance(net, simkd_parts.SimKDStudent):  # built so by simkd_model just above
        raise TypeError(f"simkd_model built a {type(net).__name__}, not a SimKDStudent")
    detail = {name: sum(p.numel() for p in part.parameters()) // model.n_seeds
              for name, part in (("student", net.encoder), ("projector", net.projectors),
                                 ("reused_head_frozen", net.head))}
    return run.fit(run.phase(model, batch_loss, select_ce, train_forward=lambda m, x: m(x, features=True),
                             head="teacher classifier (reused, frozen)", params_detail=detail))
