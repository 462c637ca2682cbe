"""Distillation losses as pure functions of tensors.

Every function reduces over the sample axis only, so the same code serves one network (B, C) and a batch
of seeds (S, B, C): the result then has shape (S,), and ``loss.sum()`` gives each seed exactly the gradient
it would get alone. An optional ``weight`` (..., B) turns the mean over samples into a weighted mean: rows
of weight 0 (the padding of per-seed sets of unequal sizes) count for nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean over the last (sample) axis, weighted by ``weight`` when given. (..., B) -> (...)."""
    if weight is None:
        return values.mean(dim=-1)
    return (values * weight).sum(dim=-1) / weight.sum(dim=-1)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy over samples. logits (..., B, C), labels (..., B) or (B,) -> (...)."""
    logp = F.log_softmax(logits, dim=-1)
    if labels.dim() < logits.dim() - 1:
        labels = labels.expand(logits.shape[:-1])
    return weighted_mean(-logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1), weight)


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(z_t/T) || softmax(z_s/T))``, mean over samples. Shapes (..., B, C) -> (...)."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1).clamp_min(0)  # >= 0; rounding can dip below
    return temperature**2 * kl.mean(dim=-1)


def hinton_kd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """Hinton et al.: ``(1 - alpha) * CE(y, z_s) + alpha * T^2 * KL(softmax(z_t/T) || softmax(z_s/T))``."""
    loss = alpha * kd_kl(student_logits, teacher_logits, temperature)
    if alpha < 1:
        loss = loss + (1 - alpha) * cross_entropy(student_logits, labels)
    return loss


def annealing_target(teacher_logits: torch.Tensor, phi: float) -> torch.Tensor:
    """Phase-1 target of annealing KD: the teacher's logits scaled by ``phi`` in (0, 1]."""
    return teacher_logits * phi


def annealing_mse(student_logits: torch.Tensor, target: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over samples and classes (phase 1 of annealing KD; no labels). -> (...)."""
    return weighted_mean((student_logits - target).pow(2).mean(dim=-1), weight)
