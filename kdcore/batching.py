"""The networks of ``kdcore.networks`` batched over seeds: one model that trains every seed at once.

``batched`` makes all seeds as one ``SeedModel`` whose seed s holds exactly ``networks.build(..., seed=s)``'s
weights and trains as it would, to float rounding: one forward, one backward and one optimizer step serve
every seed, and no gradient mixes seeds.

Two ``SeedModel`` kinds:

- ``StackedModel``, any architecture: the seeds' parameters and buffers stacked on a leading axis
  (``torch.func.stack_module_state``) and the one-seed network run either under ``vmap(functional_call)``
  (``seed_batching="vmap"``: one call serves every seed; vmap turns a convolution into one grouped
  convolution) or once per seed on that seed's slices of the same stacks (``"loop"``: the standalone
  kernels, S calls). Both keep one state dict (seed axis first), one optimizer and the same per-seed
  maths; they agree to float rounding (a test holds them to 1e-6 through training). Batch norm works as
  standalone: per-seed batch statistics, and the running statistics, batched like every buffer, are updated
  in place per seed (by vmap, or through the slice views; checked in this torch, 2.13).
  ``channels_last`` stores every convolution weight channels-last within each seed's slice, so that the
  convolutions of either path (the grouped one of vmap, a seed's own of the loop) take cuDNN's / oneDNN's
  NHWC kernels.
- ``BatchedFFNN``, the ``mlp``: one hand-written ``baddbmm`` per layer, kept because the generic path is
  neither as fast nor bit-identical. ``bench/batched_models.py`` (2-20-10-2, 5 seeds, forward + backward +
  Adam, one thread, two runs on a shared 2-core machine): batch 128: BatchedFFNN 0.65-1.19 ms, generic vmap
  1.30-2.19 ms, five standalone FFNNs 2.98-4.72 ms; full batch 1920: 2.66-2.94, 4.22-4.49, 4.57-7.06 ms.
  Without batch norm the generic MLP trains bit-identically to it; with batch norm (its batch norm is
  hand-written) the weights part by 1e-2 after 50 Adam steps, which would change every existing study's
  numbers. Its state dict keeps its own layout (``weights.i`` stored (S, in, out), ...), so teachers cached
  by older versions still load; ``seed_state`` gives ``FFNN``'s layout.

Which seed batching ``auto`` means is ``AUTO_SEED_BATCHING``, by device, from measurements
(``bench/batched_models.py``, ``bench/image_throughput.py``). On CPU the per-seed loop is the faster for
convolutions (one thread, 5 seeds, B=64: vmap runs ResNet-8 on 32x32 input at 0.6-0.8x the loop's speed,
digits-sized CNNs at 1.1-1.4x), but the loop's figures differ from vmap's in the last bits (another
convolution algorithm), and ``auto`` must keep every existing figure: so CPU stays on vmap, and ``loop`` is
there to ask for. On CUDA the rule is vmap (one launch for all seeds) until ``bench/image_throughput.py``
has measured it on a GPU (``bench/gpu_check.sh``); that has not happened yet. Under bf16 autocast the loop
gains more on CPU (``bench/image_throughput.py``: vmap at 0.4-0.5x the loop's speed against 0.6-0.7x in
fp32): vmap's batching rules for batch norm and linear add float32 weights to bf16 products, so its
activations return to float32 between layers, while the loop's stay bf16.
"""
from __future__ import annotations

import abc
import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from kdcore.config import SEED_BATCHINGS, ModelSpec
from kdcore.errors import ConfigError, DataError
from kdcore.networks import BN_EPS, BN_MOMENTUM, FFNN, build, check_shape_args

# --- seed batching ----------------------------------------------------------------------------------------

# device type -> what seed_batching "auto" means there (the module docstring has the measurements). The mlp
# has its own hand-batched kernel (BatchedFFNN) under "auto" and "vmap" alike.
AUTO_SEED_BATCHING: dict[str, str] = {"cpu": "vmap", "cuda": "vmap"}


def seed_batching_for(setting: str, device: str | torch.device) -> str:
    """``vmap`` or ``loop``: the fit's ``seed_batching`` setting, with ``auto`` resolved for ``device``."""
    if setting not in SEED_BATCHINGS:
        raise ConfigError(f"seed_batching must be one of {list(SEED_BATCHINGS)}, but got {setting!r}")
    if setting != "auto":
        return setting
    return AUTO_SEED_BATCHING.get(torch.device(device).type, "vmap")


def _seed_channels_last(stack: torch.Tensor) -> torch.Tensor:
    """A stack (S, O, I, kh, kw) of convolution weights restrided so that each seed's slice is channels-last
    (memory order S, O, kh, kw, I); the values are unchanged, and so is every other tensor."""
    if stack.dim() != 5:
        return stack
    return stack.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


def _stacked(outputs: Sequence[Any]) -> Any:
    """Per-seed results (a tensor, or tuples and lists of them) -> the same structure, tensors stacked on a
    new leading seed axis (what vmap returns)."""
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(list(outputs))
    if isinstance(first, (tuple, list)):
        return type(first)(_stacked([o[j] for o in outputs]) for j in range(len(first)))
    raise TypeError(f"a per-seed network must return tensors (or tuples and lists of them), but returned a "
                    f"{type(first).__name__}")


class SeedModel(nn.Module, abc.ABC):
    """S independent networks of one architecture, one per seed, trained as one module.

    ``forward`` maps (S, B, *input_shape) per-seed inputs, or (B, *input_shape) shared by all seeds, to
    (S, B, n_classes) logits. Every ``state_dict`` tensor has the seed axis first, so that a trainer can keep
    each seed's best weights with one ``torch.where`` per tensor.
    """

    def __init__(self, seeds: Sequence[int], input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.seeds: tuple[int, ...] = tuple(int(s) for s in seeds)
        if not self.seeds:
            raise ConfigError("a batched model needs at least one seed, but got none")
        self.input_shape: tuple[int, ...] = tuple(input_shape)

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def _per_seed(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """x and whether it is shared by all seeds (B, *input_shape), else per seed (S, B, *input_shape)."""
        n = len(self.input_shape)
        shared = x.dim() == n + 1
        if (not shared and (x.dim() != n + 2 or x.shape[0] != self.n_seeds)) or tuple(x.shape[-n:]) != self.input_shape:
            raise DataError(f"input must be (S={self.n_seeds}, B, *{self.input_shape}) or (B, *{self.input_shape}), "
                            f"but got shape {tuple(x.shape)}")
        return x, shared

    @abc.abstractmethod
    def seed_state(self, i: int) -> dict[str, torch.Tensor]:
        """Seed number i's weights in the standalone network's ``state_dict`` layout (copies)."""

    @abc.abstractmethod
    def load_seed_state(self, i: int, state: Mapping[str, torch.Tensor]) -> None:
        """Put a standalone network's ``state_dict`` into seed number i; ConfigError naming the first misfit."""


def _check_state(state: Mapping[str, torch.Tensor], shapes: Mapping[str, torch.Size], where: str, *,
                 may_miss: Sequence[str] = (), may_add: Sequence[str] = ()) -> None:
    """ConfigError naming the first key that is missing, unexpected or of the wrong shape.

    ``may_miss`` keys may be absent, ``may_add`` keys may be there without the model having them.
    """
    if not isinstance(state, Mapping):
        raise ConfigError(f"{where} must be a state dict, but got a {type(state).__name__}")
    for key, shape in shapes.items():
        if key not in state:
            if key in may_miss:
                continue
            raise ConfigError(f"{where} does not fit the model: missing key {key!r} (of shape {tuple(shape)})")
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise ConfigError(f"{where} does not fit the model: {key!r} must be a tensor, but got a "
                              f"{type(value).__name__}")
        if value.shape != shape:
            raise ConfigError(f"{where} does not fit the model: {key!r} must have shape {tuple(shape)}, but got "
                              f"{tuple(value.shape)}")
    unexpected = [k for k in state if k not in shapes and k not in may_add]
    if unexpected:
        raise ConfigError(f"{where} does not fit the model: unexpected key {unexpected[0]!r}"
                          + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))


class _Method(nn.Module):
    """``net.<name>`` as a module's forward, so that ``functional_call`` can run a method other than forward."""

    def __init__(self, net: nn.Module, name: str) -> None:
        super().__init__()
        self.net = net
        self.name = name

    def forward(self, x: torch.Tensor, **kwargs: Any) -> Any:
        return getattr(self.net, self.name)(x, **kwargs)


class StackedModel(SeedModel):
    """Any architecture batched over seeds: stacked weights, the one-seed network run under ``vmap`` or in a
    loop over the seeds (``seed_batching``).

    ``net`` is the standalone architecture with every parameter and buffer replaced by its (S, ...) stack,
    so its ``state_dict`` keys are the standalone ones, prefixed ``net.``. Random layers (dropout) draw
    different masks per seed (``randomness="different"``), as independent runs would; batch norm needs a
    fixed momentum (``momentum=None`` reads its counter in Python, which vmap cannot). On one CPU thread vmap
    gains little over five standalone networks for convolutions (they are compute-bound: digits cnn 1.1-1.4x,
    resnet8 on 8x8 about 1x, resnet8 on 32x32 0.6-0.8x; ``bench/batched_models.py``); the win it exists for
    is on accelerators, where one launch serves all seeds. ``loop`` runs seed i's network on the views
    ``stack[i]`` of the same parameters (one ``unbind`` per tensor, whose backward stacks the seeds' gradients
    once), so optimizer, state dict and checkpoints are those of ``vmap``.
    """

    def __init__(self, nets: Sequence[nn.Module], seeds: Sequence[int], input_shape: tuple[int, ...], *,
                 seed_batching: str = "vmap", channels_last: bool = False) -> None:
        super().__init__(seeds, input_shape)
        if len(nets) != self.n_seeds:
            raise ConfigError(f"one network per seed must be given, but got {len(nets)} for {self.n_seeds} seeds")
        if seed_batching not in ("vmap", "loop"):
            raise ConfigError(f"a StackedModel batches its seeds by 'vmap' or 'loop', but got {seed_batching!r}")
        self.seed_batching = seed_batching
        self.channels_last = channels_last
        params, buffers = torch.func.stack_module_state(list(nets))  # {name: (S, ...)}
        if channels_last:
            params = {name: _seed_channels_last(p) for name, p in params.items()}
        template = copy.deepcopy(nets[0])
        # Tied tensors appear once in named_parameters(); every module slot holding one gets the same stack.
        new_params = {id(p): nn.Parameter(params[name].detach(), requires_grad=p.requires_grad)
                      for name, p in template.named_parameters()}
        new_buffers = {id(b): buffers[name] for name, b in template.named_buffers()}
        for module in template.modules():
            for leaf, p in module._parameters.items():
                if p is not None:
                    module._parameters[leaf] = new_params[id(p)]
            for leaf, b in module._buffers.items():
                if b is not None:
                    module._buffers[leaf] = new_buffers[id(b)]
        self.net = template

    def forward(self, x: torch.Tensor, **kwargs: Any) -> Any:
        """(S, B, *input_shape) or (B, *input_shape) -> (S, B, n_classes) logits (or whatever the standalone
        network's ``forward(x, **kwargs)`` returns, each tensor with the seed axis first)."""
        return self.call("forward", x, **kwargs)

    def call(self, method: str, x: torch.Tensor, **kwargs: Any) -> Any:
        """The standalone network's ``method(x, **kwargs)`` for every seed (e.g. ``"features"``): tensors
        of the result gain the seed axis first."""
        x, shared = self._per_seed(x)
        net = self.net if method == "forward" else _Method(self.net, method)
        prefix = "" if method == "forward" else "net."

        def one(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor) -> Any:
            return torch.func.functional_call(net, (params, buffers), (x,), kwargs)

        params = {prefix + k: v for k, v in self.net.named_parameters()}
        buffers = {prefix + k: v for k, v in self.net.named_buffers()}
        if self.seed_batching == "loop":
            slices = [dict(zip(params, seed)) for seed in zip(*(p.unbind(0) for p in params.values()))]
            views = [dict(zip(buffers, seed)) for seed in zip(*(b.unbind(0) for b in buffers.values()))]
            if not views:  # a network without buffers
                views = [{} for _ in range(self.n_seeds)]
            return _stacked([one(slices[i], views[i], x if shared else x[i]) for i in range(self.n_seeds)])
        run = torch.func.vmap(one, in_dims=(0, 0, None if shared else 0), randomness="different")
        return run(params, buffers, x)

    def seed_state(self, i: int) -> dict[str, torch.Tensor]:
        return {key: value[i].clone() for key, value in self.net.state_dict().items()}

    def load_seed_state(self, i: int, state: Mapping[str, torch.Tensor]) -> None:
        """A missing ``num_batches_tracked`` is left as it is, as ``nn.BatchNorm`` does with old checkpoints."""
        target = self.net.state_dict()  # detached views of the stacks
        counters = [k for k in target if k.endswith(".num_batches_tracked")]
        _check_state(state, {k: v.shape[1:] for k, v in target.items()}, f"state of seed {i}", may_miss=counters)
        with torch.no_grad():
            for key, value in target.items():
                if key in state:
                    value[i].copy_(state[key])


class BatchedFFNN(SeedModel):
    """The ``mlp`` batched over seeds, by hand: one ``baddbmm`` per layer.

    Seed s is initialised exactly as ``FFNN`` from ``torch.Generator().manual_seed(s)``. Weights are stored
    transposed, (S, in, out), so that ``baddbmm`` maps (S, B, in) -> (S, B, out). Input (…, *input_shape) is
    flattened to (…, n_in); ``input_shape`` defaults to (n_in,).
    """

    def __init__(
        self,
        n_in: int,
        hidden: Sequence[int],
        n_out: int,
        seeds: Sequence[int],
        *,
        batch_norm: bool = False,
        input_shape: tuple[int, ...] | None = None,
    ) -> None:
        shape = (n_in,) if input_shape is None else tuple(input_shape)
        if math.prod(shape) != n_in:
            raise ConfigError(f"prod(input_shape) == n_in must hold, but got input_shape={shape}, n_in={n_in}")
        super().__init__(seeds, shape)
        self.n_in = n_in
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
        """(S, B, *input_shape) per-seed inputs, or (B, *input_shape) shared by all seeds -> (S, B, out) logits."""
        x, shared = self._per_seed(x)
        if shared:
            x = x.expand(self.n_seeds, *x.shape)
        h = x.reshape(self.n_seeds, x.shape[1], self.n_in)  # (S, B, in); a view, no copy
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                if self.batch_norm:
                    h = self._batch_norm(h, i)
                h = torch.relu(h)
        return h

    def _key(self, layer: int, bn: bool = False) -> str:
        """The ``FFNN`` state-dict prefix of linear ``layer`` (or of the batch norm after it)."""
        step = 3 if self.batch_norm else 2
        return f"net.{layer * step + (1 if bn else 0)}"

    def seed_state(self, i: int) -> dict[str, torch.Tensor]:
        """Seed number i's weights in the ``state_dict`` layout of ``FFNN`` (without ``num_batches_tracked``)."""
        out: dict[str, torch.Tensor] = {}
        for j, (w, b) in enumerate(zip(self.weights, self.biases)):
            out[f"{self._key(j)}.weight"] = w[i].detach().T.clone()
            out[f"{self._key(j)}.bias"] = b[i, 0].detach().clone()
            if self.batch_norm and j < len(self.weights) - 1:
                out[f"{self._key(j, bn=True)}.weight"] = self.bn_weights[j][i, 0].detach().clone()
                out[f"{self._key(j, bn=True)}.bias"] = self.bn_biases[j][i, 0].detach().clone()
                out[f"{self._key(j, bn=True)}.running_mean"] = getattr(self, f"bn_mean_{j}")[i, 0].clone()
                out[f"{self._key(j, bn=True)}.running_var"] = getattr(self, f"bn_var_{j}")[i, 0].clone()
        return out

    def load_seed_state(self, i: int, state: Mapping[str, torch.Tensor]) -> None:
        """``FFNN``'s layout in; ``num_batches_tracked`` may be there and is ignored (momentum is fixed)."""
        shapes = {k: v.shape for k, v in self.seed_state(0).items()}
        optional = [f"{self._key(j, bn=True)}.num_batches_tracked" for j in range(len(self.weights) - 1)]
        _check_state(state, shapes, f"state of seed {i}", may_add=optional if self.batch_norm else ())
        with torch.no_grad():
            for j, (w, b) in enumerate(zip(self.weights, self.biases)):
                w[i].copy_(state[f"{self._key(j)}.weight"].T)
                b[i, 0].copy_(state[f"{self._key(j)}.bias"])
                if self.batch_norm and j < len(self.weights) - 1:
                    self.bn_weights[j][i, 0].copy_(state[f"{self._key(j, bn=True)}.weight"])
                    self.bn_biases[j][i, 0].copy_(state[f"{self._key(j, bn=True)}.bias"])
                    getattr(self, f"bn_mean_{j}")[i, 0].copy_(state[f"{self._key(j, bn=True)}.running_mean"])
                    getattr(self, f"bn_var_{j}")[i, 0].copy_(state[f"{self._key(j, bn=True)}.running_var"])


def batched(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int, seeds: Sequence[int], *,
            seed_batching: str = "vmap", channels_last: bool = False) -> SeedModel:
    """All seeds as one model; seed s's weights equal ``build(spec, input_shape, n_classes, seed=s)``'s.

    ``seed_batching`` is ``vmap`` or ``loop`` (``seed_batching_for`` resolves ``auto``); the mlp under
    ``vmap`` is the hand-batched ``BatchedFFNN`` (which has no convolutions, so ``channels_last`` is moot).
    """
    shape = check_shape_args(input_shape, n_classes)
    if spec.name == "mlp" and seed_batching != "loop":
        return BatchedFFNN(math.prod(shape), spec.hidden, n_classes, seeds, batch_norm=spec.batch_norm,
                           input_shape=shape)
    return StackedModel([build(spec, shape, n_classes, s) for s in seeds], seeds, shape, seed_batching=seed_batching,
                        channels_last=channels_last)


def from_states(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int,
                states: Sequence[Mapping[str, torch.Tensor]], seeds: Sequence[int], *, seed_batching: str = "vmap",
                channels_last: bool = False) -> SeedModel:
    """A batched model whose seed i holds standalone state dict ``states[i]`` (e.g. a teacher checkpoint,
    the same state for every seed)."""
    if len(states) != len(seeds):
        raise ConfigError(f"one state per seed must be given, but got {len(states)} state(s) for "
                          f"{len(seeds)} seed(s)")
    model = batched(spec, input_shape, n_classes, seeds, seed_batching=seed_batching, channels_last=channels_last)
    for i, state in enumerate(states):
        model.load_seed_state(i, state)
    return model
