"""Distillation losses as pure functions of tensors.

Every function reduces over the sample axis only, so the same code serves one network (B, C) and a batch
of seeds (S, B, C): the result then has shape (S,), and ``loss.sum()`` gives each seed exactly the gradient
it would get alone. An optional ``weight`` (..., B) turns the mean over samples into a weighted mean: rows
of weight 0 (the padding of per-seed sets of unequal sizes) count for nothing.

The settings of a loss (``alpha``, ``temperature``, annealing's ``phi``) are one float for every member,
or a float64 tensor (S,) with one value per member (a pack of configurations, ``kdcore.pack``): each
member's loss is then the one its own float would give, bit for bit (a derived scalar such as T^2 or
1 - alpha is computed in float64, as Python computes it, before it meets the logits' dtype).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Setting = float | torch.Tensor  # one value for every member, or a float64 (S,) tensor, one per member


def per_member(value: Setting, like: torch.Tensor, dims: int = 0) -> Setting:
    """``value`` as ``like``'s dtype, shaped (S, 1 * dims) to broadcast over ``dims`` trailing axes; a float
    stays a float (the tensor op then casts it, exactly as this cast does)."""
    if not isinstance(value, torch.Tensor):
        return value
    return value.to(device=like.device, dtype=like.dtype).view(-1, *([1] * dims))


def below_one(alpha: Setting) -> bool:
    """Whether some member has a cross-entropy term (alpha < 1)."""
    return bool((alpha < 1).any()) if isinstance(alpha, torch.Tensor) else alpha < 1


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
    """Hinton et al.: ``(1 - alpha) * CE(y, z_s) + alpha * T^2 * KL(softmax(z_t/T) || softmax(z_s/T))``.

    The one-teacher, every-class form: training uses ``subset_hinton_kd``, which equals it to the last bit
    there (a test holds them together), so this stays as the reference formula.
    """
    loss = alpha * kd_kl(student_logits, teacher_logits, temperature)
    if alpha < 1:
        loss = loss + (1 - alpha) * cross_entropy(student_logits, labels)
    return loss


def subset_kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None,
                 weight: torch.Tensor | None, temperature: Setting) -> torch.Tensor:
    """Distillation from class-subset teachers, mean over samples. -> (...).

    For sample i and each of its teacher slots r (``weight`` (..., B, R) 1 for a routed teacher, 0 for an
    empty slot): ``T^2 * KL(softmax(z_t/T) over S_r || softmax(z_s/T) renormalised over S_r)``, where
    ``mask`` (..., B, R, C) marks the classes S_r that teacher knows and ``teacher_logits`` (..., B, R, C)
    holds its logits in those slots; averaged over the sample's routed teachers. Both sides are
    distributions over S_r, so a class two teachers share is never counted twice. With one routed teacher
    that knows every class this is ``kd_kl``, to the last bit. ``mask=None`` means every slot's teacher knows
    every class, ``weight=None`` that every slot is filled: the multi-domain task's case, which then costs
    what plain Hinton KD costs (no masking in a trial's batch loop).
    """
    t = per_member(temperature, student_logits, teacher_logits.dim() - 1)
    z_s, z_t = student_logits.unsqueeze(-2) / t, teacher_logits / t
    if mask is not None:
        z_s, z_t = z_s.masked_fill(~mask, -torch.inf), z_t.masked_fill(~mask, -torch.inf)
    log_p_s, log_p_t = F.log_softmax(z_s, dim=-1), F.log_softmax(z_t, dim=-1)
    terms = log_p_t.exp() * (log_p_t - log_p_s)
    if mask is not None:  # outside S_r both are -inf: the term is 0 there (where, not 0 * nan)
        terms = torch.where(mask, terms, torch.zeros_like(terms))
    kl = terms.sum(dim=-1).clamp_min(0)  # (..., B, R); >= 0, rounding can dip below
    per_sample = kl.mean(dim=-1) if weight is None else (kl * weight).sum(dim=-1) / weight.sum(dim=-1)
    return per_member(temperature**2, per_sample) * per_sample.mean(dim=-1)


def subset_hinton_kd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None,
    weight: torch.Tensor | None,
    labels: torch.Tensor,
    alpha: Setting,
    temperature: Setting,
) -> torch.Tensor:
    """``(1 - alpha) * CE(y, z_s) + alpha * subset_kd_kl``: Hinton KD from the teachers routed to each sample.
    Equals ``hinton_kd`` when each sample has one teacher that knows every class. A member with alpha = 1
    in a pack adds 0 * CE, which leaves its loss as it is."""
    kd = subset_kd_kl(student_logits, teacher_logits, mask, weight, temperature)
    loss = per_member(alpha, kd) * kd
    if below_one(alpha):
        loss = loss + per_member(1 - alpha, kd) * cross_entropy(student_logits, labels)
    return loss


def subset_target(teacher_logits: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor,
                  temperature: float) -> torch.Tensor:
    """What a student matching every routed teacher exactly would output: the routed teachers' tempered
    distributions, each over its S_r, averaged. (..., B, R, C) -> (..., B, C); each row sums to 1."""
    p_t = F.softmax((teacher_logits / temperature).masked_fill(~mask, -torch.inf), dim=-1)
    p_t = torch.where(mask, p_t, torch.zeros_like(p_t))
    return (p_t * weight.unsqueeze(-1)).sum(dim=-2) / weight.sum(dim=-1, keepdim=True)


def annealing_target(teacher_logits: torch.Tensor, phi: Setting) -> torch.Tensor:
    """Phase-1 target of annealing KD: the teacher's logits (S, B, C) scaled by ``phi`` in (0, 1]."""
    return teacher_logits * per_member(phi, teacher_logits, teacher_logits.dim() - 1)


def annealing_mse(student_logits: torch.Tensor, target: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over samples and classes (phase 1 of annealing KD; no labels). -> (...)."""
    return weighted_mean((student_logits - target).pow(2).mean(dim=-1), weight)
