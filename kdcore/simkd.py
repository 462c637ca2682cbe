"""SimKD (Chen et al., "Knowledge Distillation with the Reused Teacher Classifier", CVPR 2022).

A projector maps the student's last feature map to the teacher's (1x1 conv -> 3x3 conv -> 1x1 conv, each
with batch norm and ReLU, bottleneck ``teacher channels / factor``); the loss is the distance between the
projected student features and the teacher's; the teacher's own classifier, frozen, predicts from the pooled
projected features. Only the student's encoder and the projector train. Spatial sizes are aligned by
adaptive average pooling of the larger map to the smaller, as the authors' code does.

``SimKDStudent`` is one seed's network (student encoder + projectors + the reused head); ``simkd_model``
batches it over seeds like any architecture. The losses are pure functions of tensors. How the student
trains is the ``simkd`` entry of ``kdcore.methods``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kdcore import batching, losses, networks
from kdcore.batching import SeedModel
from kdcore.config import ExperimentConfig
from kdcore.errors import ConfigError
from kdcore.networks import BN_EPS, BN_MOMENTUM
from kdcore.prepared import Prepared, task_of


class Projector(nn.Module):
    """(B, c_s, H, W) -> (B, c_t, H, W): 1x1 conv -> BN -> ReLU -> 3x3 conv -> BN -> ReLU -> 1x1 conv -> BN -> ReLU."""

    def __init__(self, c_student: int, c_teacher: int, factor: int) -> None:
        super().__init__()
        mid = max(1, c_teacher // factor)

        def block(c_in: int, c_out: int, k: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False),
                    nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM), nn.ReLU()]

        self.net = nn.Sequential(*block(c_student, mid, 1), *block(mid, mid, 3), *block(mid, c_teacher, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def align(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool the larger of two (..., C, H, W) maps to the other's spatial size (the authors' alignment)."""
    hs = (int(student.shape[-2]), int(student.shape[-1]))
    ht = (int(teacher.shape[-2]), int(teacher.shape[-1]))
    if hs[0] * hs[1] > ht[0] * ht[1]:
        return F.adaptive_avg_pool2d(student.flatten(0, -4), ht).unflatten(0, student.shape[:-3]), teacher
    if hs != ht:
        return student, F.adaptive_avg_pool2d(teacher.flatten(0, -4), hs).unflatten(0, teacher.shape[:-3])
    return student, teacher


def _stage_shapes(net: nn.Module, input_shape: tuple[int, ...]) -> list[torch.Size]:
    features = getattr(net, "features", None)
    if features is None or not hasattr(net, "pool") or not isinstance(getattr(net, "fc", None), nn.Linear):
        raise ConfigError(f"SimKD needs models with features(x), pool and a linear fc (cnn, resnet), but got "
                          f"{type(net).__name__}")
    was = net.training
    net.eval()
    with torch.no_grad():
        shapes = [f.shape[1:] for f in features(torch.zeros(1, *input_shape))]
    net.train(was)
    return shapes


class SimKDStudent(nn.Module):
    """One seed's SimKD network: the student's encoder, a projector per distilled stage, the teacher's head.

    ``forward(x)`` -> (B, C) logits of the reused (frozen) teacher classifier on the pooled projection of the
    last stage: what predicts at test time. ``forward(x, features=True)`` -> (logits, projected maps), one
    map per distilled stage (previous stage first under ``last_two``), each at its aligned spatial size.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, input_shape: tuple[int, ...], *, factor: int,
                 stages: int) -> None:
        super().__init__()
        s_shapes, t_shapes = _stage_shapes(student, input_shape), _stage_shapes(teacher, input_shape)
        if min(len(s_shapes), len(t_shapes)) < stages:
            raise ConfigError(f"SimKD placement needs {stages} stages in both networks, but the student has "
                              f"{len(s_shapes)} and the teacher {len(t_shapes)}")
        self.encoder = student
        self.encoder.fc = nn.Identity()  # the student's own head never predicts: it is not trained or counted
        self.projectors = nn.ModuleList(Projector(s[0], t[0], factor)
                                        for s, t in zip(s_shapes[-stages:], t_shapes[-stages:]))
        self.stages = stages
        self.target_sizes = [(int(t[1]), int(t[2])) for t in t_shapes[-stages:]]
        fc = teacher.fc
        if not isinstance(fc, nn.Linear):
            raise ConfigError(f"SimKD reuses the teacher's linear fc, but it is a {type(fc).__name__}")
        self.head = nn.Linear(fc.in_features, fc.out_features)
        self.head.load_state_dict(fc.state_dict())
        self.head.requires_grad_(False)

    def forward(self, x: torch.Tensor, features: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        maps = self.encoder.features(x)[-self.stages:]  # type: ignore[operator]
        projected = []
        for projector, fmap, size in zip(self.projectors, maps, self.target_sizes):
            if fmap.shape[-2] * fmap.shape[-1] > size[0] * size[1]:
                fmap = F.adaptive_avg_pool2d(fmap, size)
            projected.append(projector(fmap))
        logits = self.head(projected[-1].mean(dim=(-2, -1)))
        return (logits, projected) if features else logits


def build_student(student: nn.Module, teacher: nn.Module, input_shape: tuple[int, ...], *, factor: int,
                  placement: str) -> SimKDStudent:
    """The SimKD network of ``student`` distilled from ``teacher`` (its classifier copied and frozen)."""
    return SimKDStudent(student, teacher, input_shape, factor=factor, stages=2 if placement == "last_two" else 1)


def simkd_model(prep: Prepared, config: ExperimentConfig, teacher: SeedModel) -> batching.StackedModel:
    """Seed s's SimKD network: the student built for seed s, projectors initialised from seed s, and seed s's
    teacher classifier copied and frozen; batched over the seeds like any architecture."""
    teacher_spec = task_of(prep, config).teachers[0].fit.model_spec
    nets = []
    for i, seed in enumerate(config.seeds):
        student = networks.build(config.student.model_spec, prep.input_shape, prep.n_classes, seed)
        frozen = networks.build(teacher_spec, prep.input_shape, prep.n_classes, seed)
        frozen.load_state_dict(teacher.seed_state(i))
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(int(seed))
            nets.append(build_student(student, frozen, prep.input_shape, factor=config.kd.factor,
                                      placement=config.kd.placement))
    fit = config.student
    return batching.StackedModel(nets, config.seeds, prep.input_shape,
                                 seed_batching=batching.seed_batching_for(fit.seed_batching, prep.device),
                                 channels_last=fit.channels_last).to(prep.device)


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """Distance between projected student maps and teacher maps (..., B, C, H, W), mean over samples -> (...).

    ``mse``: mean squared error over each sample's C*H*W values (the authors' ``nn.MSELoss``); ``cosine``:
    1 - cosine similarity of each sample's flattened map. ``weight`` (..., B): 1 keeps a sample, 0 drops it
    (a batch where every sample is dropped contributes 0).
    """
    s, t = align(student, teacher)
    if kind == "mse":
        per_sample = (s - t).pow(2).flatten(-3).mean(dim=-1)
    elif kind == "cosine":
        per_sample = 1 - F.cosine_similarity(s.flatten(-3), t.flatten(-3), dim=-1)
    else:
        raise ConfigError(f"feature loss must be 'mse' or 'cosine', but got {kind!r}")
    if weight is None:
        return per_sample.mean(dim=-1)
    return (per_sample * weight).sum(dim=-1) / weight.sum(dim=-1).clamp_min(1)


def label_mask(teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(..., B) float: 1 where the teacher's prediction is the label, 0 where the teacher is wrong."""
    return (teacher_logits.argmax(dim=-1) == labels).float()


def simkd_loss(logits: torch.Tensor, projected: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor],
               teacher_logits: torch.Tensor, labels: torch.Tensor, *, kind: str, prev_weight: float,
               use_labels: bool, ce_weight: float, logit_weight: float, temperature: float) -> torch.Tensor:
    """The SimKD objective per seed (...,): feature loss on the last stage (+ ``prev_weight`` times the
    previous stage's), over the samples the teacher gets right when ``use_labels``; plus ``ce_weight`` * CE
    and ``logit_weight`` * T^2 * KL(teacher || reused head) on the reused-classifier logits."""
    if labels.dim() < logits.dim() - 1:
        labels = labels.expand(logits.shape[:-1])
    weight = label_mask(teacher_logits, labels) if use_labels else None
    loss = feature_loss(projected[-1], teacher_maps[-1], kind, weight)
    if len(projected) > 1:
        loss = loss + prev_weight * feature_loss(projected[-2], teacher_maps[-2], kind, weight)
    if ce_weight > 0:
        loss = loss + ce_weight * losses.cross_entropy(logits, labels)
    if logit_weight > 0:
        loss = loss + logit_weight * losses.kd_kl(logits, teacher_logits, temperature)
    return loss
