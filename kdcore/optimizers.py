"""Optimizers over stacked parameters whose members each have their own learning rate and weight decay.

A pack (``kdcore.pack``) trains several configurations as one batched model: every parameter holds all
members on its leading axis, and members differ in learning rate (each its own schedule) and weight decay.
torch's optimizers take one learning rate per parameter group, so ``MemberOptimizer`` does Adam, AdamW
(decoupled decay), Adam with coupled L2 and SGD (momentum, Nesterov) elementwise, as pure tensor steps,
with a (M,) learning rate and weight decay broadcast over each member's slice.

Each member's update is the one ``torch.optim``'s single-tensor (CPU) implementation makes, operation for
operation: every per-member scalar is computed in float64 as torch computes its Python float, and cast to
the parameter's dtype where torch's kernel casts it, so on the CPU a member trains bit for bit as the same
parameter would under ``torch.optim`` alone (tests hold them together). torch's fused and foreach
implementations (the GPU's defaults) group their operations differently: there the figures agree to float
rounding, not bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kdcore.errors import ConfigError

FAMILIES = {"adam": "adam", "adamw": "adam", "adam_coupled": "adam_coupled", "sgd": "sgd"}  # optimizer -> kind
BETAS = (0.9, 0.999)  # torch's Adam defaults, as ``kdcore.loop.make_optimizer`` uses them
EPS = 1e-8


def family(optimizer: str) -> str:
    """The update rule an optimizer setting names: Adam and AdamW share one (Adam is AdamW without decay)."""
    try:
        return FAMILIES[optimizer]
    except KeyError:
        raise ConfigError(f"optimizer must be one of {list(FAMILIES)}, but got {optimizer!r}") from None


def _fused_add(a: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``a + alpha * b`` rounded once, as torch's ``a.add(b, alpha=...)`` kernel does it (a fused
    multiply-add), for an ``alpha`` per member: in float64 the product of two float32 numbers is exact and
    the sum is rounded twice, which differs from one rounding only on an exact float32 midpoint."""
    if a.dtype != torch.float32:
        return a + alpha * b
    return (a.double() + b.double() * alpha.double()).float()


class MemberOptimizer:
    """Adam / AdamW / coupled-L2 Adam / SGD over ``params``, each (M, ...) with members on the leading axis.

    ``kinds`` (M,) names each member's optimizer (``adam`` and ``adamw`` may mix: Adam is AdamW with no
    decay; the others may not mix with anything else); ``weight_decay`` (M,) is each member's decay (ignored
    for ``adam`` members, as ``make_optimizer`` ignores it). Set each step's learning rates with
    ``set_lr``. ``select`` keeps some members (a pruned configuration's stop costing anything).
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], kinds: Sequence[str], weight_decay: Sequence[float],
                 *, momentum: float = 0.9, nesterov: bool = False) -> None:
        kinds = tuple(kinds)
        families = {family(k) for k in kinds}
        if len(families) != 1:
            raise ConfigError(f"one pack's members must share an update rule, but got optimizers {sorted(set(kinds))}")
        if len(weight_decay) != len(kinds):
            raise ConfigError(f"one weight decay per member must be given, but got {len(weight_decay)} for "
                              f"{len(kinds)} members")
        self.family = families.pop()
        self.params = list(params)
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        decay = [0.0 if k == "adam" else float(w) for k, w in zip(kinds, weight_decay)]
        self.weight_decay = torch.tensor(decay, dtype=torch.float64)  # (M,)
        self.decays = any(decay)
        self.lr = torch.zeros(len(kinds), dtype=torch.float64)  # (M,), set every step by ``set_lr``
        self.steps = 0
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in self.params]

    @property
    def n_members(self) -> int:
        return int(self.lr.numel())

    def set_lr(self, lr: torch.Tensor) -> None:
        """This step's learning rates (M,), float64."""
        if lr.shape != self.lr.shape:
            raise ConfigError(f"one learning rate per member must be given, but got shape {tuple(lr.shape)} for "
                              f"{self.n_members} members")
        self.lr = lr.to(torch.float64)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def _member(self, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A float64 (M,) per-member scalar cast to ``like``'s dtype and device, shaped (M, 1, ..., 1)."""
        return values.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        for p, state in zip(self.params, self.state):
            if p.grad is None:
                continue
            if self.family == "sgd":
                self._sgd(p, p.grad, state)
            else:
                self._adam(p, p.grad, state)

    def _adam(self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        beta1, beta2 = BETAS
        if not state:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if self.decays:
            if self.family == "adam_coupled":  # torch: grad.add(param, alpha=weight_decay)
                grad = _fused_add(grad, p, self._member(self.weight_decay, p))
            else:  # torch (AdamW): param.mul_(1 - lr * weight_decay)
                p.mul_(self._member(1 - self.lr * self.weight_decay, p))
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1**self.steps
        bias_correction2_sqrt = (1 - beta2**self.steps) ** 0.5
        step_size = self._member(-(self.lr / bias_correction1), p)  # torch: value=-step_size, a Python float
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(EPS)
        p.add_(step_size * exp_avg / denom)  # torch's addcdiv_: self + value * t1 / t2

    def _sgd(self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        if self.decays:
            grad = _fused_add(grad, p, self._member(self.weight_decay, p))
        if self.momentum != 0:
            if "momentum_buffer" not in state:
                buf = state["momentum_buffer"] = grad.detach().clone()
            else:
                buf = state["momentum_buffer"]
                buf.mul_(self.momentum).add_(grad)
            grad = grad.add(buf, alpha=self.momentum) if self.nesterov else buf
        p.copy_(_fused_add(p, grad, self._member(-self.lr, p)))

    def select(self, keep: torch.Tensor, params: Sequence[torch.nn.Parameter]) -> None:
        """Keep members ``keep`` (indices into the current members), now held by ``params`` (the same
        parameters in the same order, sliced to those members)."""
        if len(params) != len(self.params):
            raise ConfigError(f"the model has {len(params)} parameters, but the optimizer {len(self.params)}")
        cpu = keep.cpu()
        self.weight_decay, self.lr = self.weight_decay[cpu], self.lr[cpu]
        self.state = [{k: v[keep.to(v.device)].clone() for k, v in s.items()} for s in self.state]
        self.params = list(params)
