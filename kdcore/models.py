"""The FFNN, standalone and batched over seeds.

``BatchedFFNN`` holds S independent networks as parameters stacked on a leading seed axis and runs them in
one batched matmul per layer, so a five-seed run costs about what one seed costs. Seed s of it is
initialised exactly as ``FFNN`` is from ``torch.Generator().manual_seed(s)``, which in turn equals what
``torch.manual_seed(s); nn.Sequential(nn.Linear(...), nn.ReLU(), ...)`` gives.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def _init_linear_(layer: nn.Linear, generator: torch.Generator) -> None:
    """``nn.Linear.reset_parameters`` with an explicit generator (same draws, same order)."""
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    bound = 1 / math.sqrt(layer.in_features) if layer.in_features > 0 else 0.0
    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


class FFNN(nn.Module):
    """Plain feed-forward net: Linear -> [BatchNorm1d] -> ReLU per hidden layer, then Linear to logits."""

    def __init__(
        self,
        n_in: int,
        hidden: Sequence[int],
        n_out: int,
        *,
        batch_norm: bool = False,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        widths = [n_in, *hidden]
        with torch.random.fork_rng(devices=[]):  # nn.Linear() first draws from the global generator
            for a, b in itertools.pairwise(widths):
                linear = nn.Linear(a, b)
                _init_linear_(linear, generator)
                layers.append(linear)
                if batch_norm:
                    layers.append(nn.BatchNorm1d(b, eps=BN_EPS, momentum=BN_MOMENTUM))
                layers.append(nn.ReLU())
            head = nn.Linear(widths[-1], n_out)
            _init_linear_(head, generator)
            layers.append(head)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BatchedFFNN(nn.Module):
    """S independent FFNNs, one per seed, evaluated together.

    Weights are stored transposed, (S, in, out), so that ``baddbmm`` maps (S, B, in) -> (S, B, out).
    """

    def __init__(
        self,
        n_in: int,
        hidden: Sequence[int],
        n_out: int,
        seeds: Sequence[int],
        *,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.seeds = tuple(int(s) for s in seeds)
        self.batch_norm = batch_norm
        singles = [
            FFNN(n_in, hidden, n_out, batch_norm=batch_norm, generator=torch.Generator().manual_seed(s))
            for s in self.seeds
        ]
        linears = [[m for m in net.net if isinstance(m, nn.Linear)] for net in singles]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([net[i].weight.detach().T for net in linears]).contiguous())
            for i in range(len(linears[0]))
        )  # each (S, in, out)
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([net[i].bias.detach() for net in linears])[:, None, :].contiguous())
            for i in range(len(linears[0]))
        )  # each (S, 1, out)
        n_seeds = len(self.seeds)
        self.bn_weights = nn.ParameterList()
        self.bn_biases = nn.ParameterList()
        if batch_norm:
            for width in hidden:
                self.bn_weights.append(nn.Parameter(torch.ones(n_seeds, 1, width)))
                self.bn_biases.append(nn.Parameter(torch.zeros(n_seeds, 1, width)))
                self.register_buffer(f"bn_mean_{len(self.bn_weights) - 1}", torch.zeros(n_seeds, 1, width))
                self.register_buffer(f"bn_var_{len(self.bn_weights) - 1}", torch.ones(n_seeds, 1, width))

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def _batch_norm(self, h: torch.Tensor, i: int) -> torch.Tensor:
        mean_buf: torch.Tensor = getattr(self, f"bn_mean_{i}")
        var_buf: torch.Tensor = getattr(self, f"bn_var_{i}")
        if self.training:
            mean = h.mean(dim=1, keepdim=True)  # (S, 1, C): statistics per seed, over its batch
            var = h.var(dim=1, keepdim=True, unbiased=False)
            with torch.no_grad():
                n = h.shape[1]
                unbiased = var * (n / (n - 1)) if n > 1 else var
                mean_buf.lerp_(mean, BN_MOMENTUM)
                var_buf.lerp_(unbiased, BN_MOMENTUM)
        else:
            mean, var = mean_buf, var_buf
        return (h - mean) * torch.rsqrt(var + BN_EPS) * self.bn_weights[i] + self.bn_biases[i]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (S, B, in) per-seed inputs, or (B, in) shared by all seeds -> (S, B, out) logits."""
        if x.dim() == 2:
            x = x.expand(self.n_seeds, *x.shape)
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                if self.batch_norm:
                    h = self._batch_norm(h, i)
                h = torch.relu(h)
        return h

    def seed_state(self, s: int) -> dict[str, torch.Tensor]:
        """Seed s's weights in the ``state_dict`` layout of ``FFNN`` (for export and for tests)."""
        out: dict[str, torch.Tensor] = {}
        step = 3 if self.batch_norm else 2
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            out[f"net.{i * step}.weight"] = w[s].detach().T.clone()
            out[f"net.{i * step}.bias"] = b[s, 0].detach().clone()
            if self.batch_norm and i < len(self.weights) - 1:
                out[f"net.{i * step + 1}.weight"] = self.bn_weights[i][s, 0].detach().clone()
                out[f"net.{i * step + 1}.bias"] = self.bn_biases[i][s, 0].detach().clone()
                out[f"net.{i * step + 1}.running_mean"] = getattr(self, f"bn_mean_{i}")[s, 0].clone()
                out[f"net.{i * step + 1}.running_var"] = getattr(self, f"bn_var_{i}")[s, 0].clone()
        return out
