"""The KD methods, a plain dict: ``METHODS[kd.method]`` is the one object that knows a method.

Each entry owns everything that differs between methods: its settings checks (``check_config``), what it
needs of the task and the models (``check_task``, ``check_models``), whether it learns from teachers at all
(``uses_teachers``), the configuration of its no-KD ablation (``ablation``), how many epochs each of its
phases runs (``phase_epochs``), and how its student trains (``train``: the phases it runs through the one
loop). Adding a method is one new entry here; nothing else names a method.

Importing this module costs nothing (``kdcore.config`` reads the names and checks from it, and the command
line reads configs before it imports torch): an entry imports the torch side it trains with when it trains.
Training code reaches the entries through a ``StudentRun`` (``kdcore.student``), which hands each method the
prepared data, the task, the teachers' targets and the loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdcore.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from kdcore.config import ExperimentConfig, KDConfig
    from kdcore.result import FitResult
    from kdcore.student import StudentRun
    from kdcore.task import Task

FEATURE_MODELS = ("cnn", "resnet")  # registry models with feature maps (``features``, ``pool``, ``fc``)


class Method:
    """One KD method. The defaults are a single-phase method that learns from its teachers and needs
    nothing particular of the task."""

    def check_config(self, kd: KDConfig) -> None:
        """ConfigError (one line) for ``kd`` settings this method cannot train with."""

    def check_task(self, task: Task, student_model: str) -> None:
        """ConfigError (one line) when this method cannot distil ``task`` into a ``student_model``."""

    def check_models(self, config: ExperimentConfig, task: Task, input_shape: tuple[int, ...],
                     n_classes: int) -> None:
        """ConfigError when the configured networks cannot be assembled the way this method needs them (at
        plan time, before anything trains; may import torch)."""

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
        raise NotImplementedError


def _hard_labels(run: StudentRun) -> FitResult:
    """The student on hard labels alone: one cross-entropy phase."""
    return run.fit(run.phase(run.new_model(), *run.hard_label_losses()))


class NoKD(Method):
    """Hard labels only: the no-KD reference."""

    def uses_teachers(self, kd: KDConfig) -> bool:
        return False

    def train(self, run: StudentRun) -> FitResult:
        return _hard_labels(run)


class Hinton(Method):
    """Hinton KD, ``(1 - alpha) * CE + alpha * T^2 * KL``, over each routed teacher's classes; with alpha = 0
    (the ablation of a configuration) the student trains on hard labels alone, exactly as ``(1 - 0) * CE``
    would."""

    def uses_teachers(self, kd: KDConfig) -> bool:
        return kd.alpha > 0

    def train(self, run: StudentRun) -> FitResult:
        from kdcore import losses

        kd, train = run.kd, run.prep.fit
        if not self.uses_teachers(kd):
            return _hard_labels(run)
        model = run.new_model()
        targets = run.targets(train)  # (S, N, R, C) routed by the task
        _, select_ce = run.hard_label_losses()

        def hinton_loss(logits: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
            t = targets.rows(idx)
            return losses.subset_hinton_kd(logits, t.logits, t.mask, t.weight, train.take(train.y, idx), kd.alpha,
                                           kd.temperature)

        return run.fit(run.phase(model, hinton_loss, select_ce))


class Annealing(Method):
    """Annealing KD (Jafari et al. 2021): phase 1 (``kd.anneal_epochs``) regresses the student's logits on
    ``phi(t) * teacher`` without labels, selected by MSE to the full teacher; phase 2 (the student's epochs)
    trains on hard labels from the best phase-1 weights, with a fresh optimizer and a restarted LR schedule."""

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

    def train(self, run: StudentRun) -> FitResult:
        from kdcore import losses
        from kdcore.schedules import annealing_phi

        kd, select = run.kd, run.prep.select
        model = run.new_model()
        full = run.targets(run.prep.fit).logits[:, :, 0]  # (S, N, C): the one routed teacher of each sample
        select_targets = run.targets(select).logits[:, :, 0]

        def phase1_loss(logits: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
            phi = annealing_phi(epoch, epochs=kd.anneal_epochs, tau_max=kd.tau_max)
            return losses.annealing_mse(logits, losses.annealing_target(run.rows(full, idx), phi))

        def phase1_select(logits: torch.Tensor) -> torch.Tensor:
            return losses.annealing_mse(logits, select_targets, select.weight)

        first = run.fit(run.phase(model, phase1_loss, phase1_select, epochs=kd.anneal_epochs, patience=None,
                                  restore_best=True))
        second = run.fit(run.phase(first.model, *run.hard_label_losses(), epoch_offset=first.epochs_run))
        return run.joined(first, second)


class SimKD(Method):
    """SimKD (Chen et al., CVPR 2022; ``kdcore.simkd``): only the student's encoder and the projectors train;
    the reused, frozen teacher classifier predicts."""

    CACHE_ELEMENTS = 2**28  # teacher feature maps of the whole fit set up to 1 GiB are computed once

    def check_task(self, task: Task, student_model: str) -> None:
        if len(task.teachers) != 1 or not task.full_classes:
            raise ConfigError(f"kd.method 'simkd' distils one teacher that knows every class, but the task has "
                              f"{len(task.teachers)} teacher(s) knowing {[list(t.classes) for t in task.teachers]}")
        for role, name in (("student", student_model), ("teacher", task.teachers[0].fit.model)):
            if name == "mlp":
                raise ConfigError(f"kd.method 'simkd' needs feature maps, but the {role} is an mlp; use one of "
                                  f"{list(FEATURE_MODELS)} or a factory whose model has features, pool and fc")

    def check_models(self, config: ExperimentConfig, task: Task, input_shape: tuple[int, ...],
                     n_classes: int) -> None:
        from kdcore import models, simkd

        # The networks must have feature maps: build one of each.
        simkd.build_student(models.build(config.student.model_spec, input_shape, n_classes, 0),
                            models.build(task.teachers[0].fit.model_spec, input_shape, n_classes, 0), input_shape,
                            factor=config.kd.factor, placement=config.kd.placement)

    def train(self, run: StudentRun) -> FitResult:
        from kdcore import simkd

        kd, train = run.kd, run.prep.fit
        teacher = run.teachers[0]
        model = simkd.simkd_model(run.prep, run.config, teacher)
        stages = 2 if kd.placement == "last_two" else 1
        cache: tuple[torch.Tensor, list[torch.Tensor]] | None = None
        probe_logits, probe_maps = run.teacher_outputs(teacher, train.x[:, :1] if train.per_seed else train.x[:1],
                                                       stages)
        per_row = sum(m[0, 0].numel() for m in probe_maps) + probe_logits.shape[-1]
        if per_row * len(train) * len(run.config.seeds) <= self.CACHE_ELEMENTS:  # no augmentation: compute once
            cache = run.teacher_outputs(teacher, train.x, stages)

        def batch_loss(out: tuple[torch.Tensor, list[torch.Tensor]], idx: torch.Tensor, epoch: int) -> torch.Tensor:
            logits, projected = out
            if cache is not None:
                t_logits, t_maps = run.rows(cache[0], idx), [run.rows(m, idx) for m in cache[1]]
            else:
                t_logits, t_maps = run.teacher_outputs(teacher, train.take(train.x, idx), stages)
            return simkd.simkd_loss(logits, projected, t_maps, t_logits, train.take(train.y, idx),
                                    kind=kd.feature_loss, prev_weight=kd.prev_weight, use_labels=kd.use_labels,
                                    ce_weight=kd.ce_weight, logit_weight=kd.logit_weight, temperature=kd.temperature)

        _, select_ce = run.hard_label_losses()
        net = model.net
        assert isinstance(net, simkd.SimKDStudent)  # built so by simkd_model just above
        detail = {name: sum(p.numel() for p in part.parameters()) // model.n_seeds
                  for name, part in (("student", net.encoder), ("projector", net.projectors),
                                     ("reused_head_frozen", net.head))}
        return run.fit(run.phase(model, batch_loss, select_ce, train_forward=lambda m, x: m(x, features=True),
                                 head="teacher classifier (reused, frozen)", params_detail=detail))


# kd.method -> the method; the order is the order the command line and the messages list them in.
METHODS: dict[str, Method] = {
    "hinton": Hinton(),
    "annealing": Annealing(),
    "simkd": SimKD(),
    "none": NoKD(),
}


def method_of(name: str) -> Method:
    """``METHODS[name]``, or ConfigError naming the methods there are."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"kd.method must be one of {list(METHODS)}, but got {name!r}") from None


def check_method(task: Task, method: str, student_model: str) -> None:
    """ConfigError (one line) when KD method ``method`` cannot distil this task into a ``student_model``:
    annealing KD needs teachers that know every class, one routed to each sample; SimKD one teacher that
    knows every class, and image models with feature maps (cnn, resnet, or a factory of the user's that has
    ``features``, ``pool`` and ``fc``)."""
    method_of(method).check_task(task, student_model)
