"""The networks kdtune trains, by name: the registry of architectures and the one-seed ``build``.

``MODELS`` maps each built-in name of ``kdcore.config.MODEL_NAMES`` to a factory
``(spec, input_shape, n_classes) -> nn.Module``; any other name is a user's ``package.module:function``
(``resolve_factory``). ``build`` makes the standalone network of one seed; ``kdcore.batching`` stacks the
seeds of one architecture into one model that trains them all at once.
"""

from __future__ import annotations

import importlib
import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from kdcore.config import MODEL_NAMES, ModelSpec, is_import_path
from kdcore.errors import ConfigError, one_line

BN_EPS = 1e-5
BN_MOMENTUM = 0.1
CNN_CHANNELS = (16, 32)
RESNET_CHANNELS = (16, 16, 32, 64)

Factory = Callable[[ModelSpec, tuple[int, ...], int], nn.Module]
UserFactory = Callable[[tuple[int, ...], int], nn.Module]


# --- the architectures ----------------------------------------------------------------------------------


def _init_linear_(layer: nn.Linear, generator: torch.Generator) -> None:
    """``nn.Linear.reset_parameters`` with an explicit generator (same draws, same order)."""
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    bound = 1 / math.sqrt(layer.in_features) if layer.in_features > 0 else 0.0
    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


class FFNN(nn.Module):
    """Plain feed-forward net: Linear -> [BatchNorm1d] -> ReLU per hidden layer, then Linear to logits.

    Input (B, *shape) is flattened to (B, n_in) first. With ``generator`` the weights are drawn from it (the
    global generator untouched); ``FFNN(..., generator=torch.Generator().manual_seed(s))`` equals
    ``torch.manual_seed(s); FFNN(...)`` with ``generator=None``, which equals the ``nn.Sequential`` anyone
    would write after ``torch.manual_seed(s)``.
    """

    def __init__(
        self,
        n_in: int,
        hidden: Sequence[int],
        n_out: int,
        *,
        batch_norm: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        widths = [n_in, *hidden]
        with torch.random.fork_rng(devices=[], enabled=generator is not None):
            # nn.Linear() first draws from the global generator; with a generator we redraw from it
            for a, b in itertools.pairwise(widths):
                linear = nn.Linear(a, b)
                if generator is not None:
                    _init_linear_(linear, generator)
                layers.append(linear)
                if batch_norm:
                    layers.append(nn.BatchNorm1d(b, eps=BN_EPS, momentum=BN_MOMENTUM))
                layers.append(nn.ReLU())
            head = nn.Linear(widths[-1], n_out)
            if generator is not None:
                _init_linear_(head, generator)
            layers.append(head)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *shape) -> (B, n_out) logits."""
        return self.net(x.flatten(1))


def _pooled_head(n_features: int, n_classes: int) -> tuple[nn.Module, nn.Linear]:
    """Global average pool (B, C, H, W) -> (B, C) and the linear classifier, kept apart for feature KD."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), nn.Linear(n_features, n_classes)


class ConvNet(nn.Module):
    """The ``cnn``: per stage 3x3 conv -> [BatchNorm2d] -> ReLU -> 2x2 max-pool, then average pool and linear.

    The pool is left out once the feature map is 1 pixel across (deep stacks on 8x8 digits). Convs have no
    bias under batch norm: BN's shift replaces it, and a bias before BN gets only rounding noise as gradient,
    which Adam would blow up to lr-sized steps.
    """

    def __init__(self, input_shape: tuple[int, ...], channels: Sequence[int], n_classes: int, *,
                 batch_norm: bool) -> None:
        super().__init__()
        c_in, height, width = input_shape
        stages: list[nn.Module] = []
        for c_out in channels:
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM))
            layers.append(nn.ReLU())
            if min(height, width) > 1:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            stages.append(nn.Sequential(*layers))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.pool, self.fc = _pooled_head(c_in, n_classes)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, H, W) -> each stage's output, (B, channels[i], H_i, W_i)."""
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, n_classes) logits."""
        return self.fc(self.pool(self.features(x)[-1]))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a shortcut (``downsample``: 1x1 conv + BN where the shape changes),
    ReLU after the add. Module names are RepDistiller's, so the literature's checkpoints load as they are."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(self.bn2(self.conv2(out)) + shortcut)


class ResNet(nn.Module):
    """The CIFAR-style BasicBlock ResNet of the KD literature (RepDistiller's resnet8 ... resnet32x4).

    3x3 conv stem (``conv1``, ``bn1``) -> ReLU, three stages (``layer1`` .. ``layer3``) of (depth - 2) / 6
    blocks at strides 1, 2, 2, global average pool, linear head ``fc``: RepDistiller's module names, so that
    its, SimKD's and mdistiller's checkpoints load strictly (resnet8x4: 62 state-dict keys, 1,233,540
    parameters on CIFAR-100; resnet32x4: 206 keys, 7,433,860). ``features`` gives the stem's and each stage's
    output, and ``pool`` and ``fc`` are separate, so feature distillation (SimKD) can take the last feature
    map and reuse the classifier. Convs are initialised as RepDistiller does (Kaiming normal, fan-out); batch
    norm is always on.
    """

    def __init__(self, input_shape: tuple[int, ...], depth: int, channels: Sequence[int], n_classes: int) -> None:
        super().__init__()
        c_stem, *c_stages = channels
        n_blocks = (depth - 2) // 6
        # Built in the order of the original layout (stem conv, stem BN, the stages' blocks, the head), so
        # that every seed draws the same initial weights as before the modules took the literature's names.
        self.conv1 = nn.Conv2d(input_shape[0], c_stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_stem, eps=BN_EPS, momentum=BN_MOMENTUM)
        c_in = c_stem
        for number, (c_out, stride) in enumerate(zip(c_stages, (1, 2, 2)), start=1):
            blocks = [BasicBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1) for i in range(n_blocks)]
            self.add_module(f"layer{number}", nn.Sequential(*blocks))
            c_in = c_out
        self.pool, self.fc = _pooled_head(c_in, n_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @property
    def stages(self) -> list[nn.Module]:
        """The three stages, ``layer1`` .. ``layer3``."""
        return [self.layer1, self.layer2, self.layer3]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, H, W) -> [stem, stage 1, stage 2, stage 3] outputs, (B, channels[i], H_i, W_i)."""
        out = [torch.relu(self.bn1(self.conv1(x)))]
        for stage in self.stages:
            out.append(stage(out[-1]))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, n_classes) logits."""
        return self.fc(self.pool(self.features(x)[-1]))


# --- the registry -----------------------------------------------------------------------------------------


def _image_shape(spec: ModelSpec, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ConfigError(f"model {spec.name!r} needs images, input_shape (channels, height, width), but got "
                          f"{input_shape}")
    return input_shape[0], input_shape[1], input_shape[2]


def _mlp(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    return FFNN(math.prod(input_shape), spec.hidden, n_classes, batch_norm=spec.batch_norm)


def _cnn(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    channels = tuple(c * spec.width for c in (spec.channels or CNN_CHANNELS))
    return ConvNet(_image_shape(spec, input_shape), channels, n_classes, batch_norm=spec.batch_norm)


def _resnet(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    channels = spec.channels or RESNET_CHANNELS
    if len(channels) != 4:
        raise ConfigError(f"resnet channels must be 4 numbers (stem, stage 1, stage 2, stage 3), but got "
                          f"{list(channels)}")
    if spec.depth < 8 or (spec.depth - 2) % 6:
        raise ConfigError(f"resnet depth must be 6n + 2 (8, 14, 20, 32, 44, 56, 110), but got {spec.depth}")
    return ResNet(_image_shape(spec, input_shape), spec.depth, tuple(c * spec.width for c in channels), n_classes)


MODELS: dict[str, Factory] = {"mlp": _mlp, "cnn": _cnn, "resnet": _resnet}


def resolve_factory(name: str) -> UserFactory:
    """The user's model factory ``package.module:function``, called as ``function(input_shape, n_classes)``."""
    if not isinstance(name, str) or not is_import_path(name):
        raise ConfigError(f"model must be one of {list(MODEL_NAMES)} or an import path 'package.module:function', "
                          f"but got {name!r}")
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure to import (missing, broken) is the same user error
        raise ConfigError(f"model {name!r}: cannot import module {module_name!r} ({type(exc).__name__}: "
                          f"{one_line(exc)}); "
                          "is its package installed or on PYTHONPATH?") from None
    if not hasattr(module, attr):
        raise ConfigError(f"model {name!r}: module {module_name!r} has no attribute {attr!r}")
    factory = getattr(module, attr)
    if not callable(factory):
        raise ConfigError(f"model {name!r}: {attr!r} must be callable as {attr}(input_shape, n_classes), but it is "
                          f"a {type(factory).__name__}")
    return factory  # type: ignore[no-any-return]


def _make(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """The registry's (or the user's) network, drawn from the global generator."""
    if spec.name in MODELS:
        return MODELS[spec.name](spec, input_shape, n_classes)
    model = resolve_factory(spec.name)(input_shape, n_classes)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {spec.name!r} must return an nn.Module, but returned a {type(model).__name__}")
    return model


def check_shape_args(input_shape: tuple[int, ...], n_classes: int) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ConfigError(f"input_shape must be a non-empty tuple of positive sizes, but got {input_shape!r}")
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
        raise ConfigError(f"n_classes must be an integer >= 1, but got {n_classes!r}")
    return shape


def build(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int, seed: int) -> nn.Module:
    """The standalone network of ``seed``: what ``torch.manual_seed(seed)`` then the factory gives.

    Only the CPU generator is seeded, inside ``fork_rng``: the caller's random state is left as it was.
    """
    shape = check_shape_args(input_shape, n_classes)
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(seed))  # torch.manual_seed would reseed CUDA too
        return _make(spec, shape, n_classes)


def parameter_count(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> int:
    """Trainable parameters of one network of this architecture."""
    net = build(spec, input_shape, n_classes, seed=0)
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
