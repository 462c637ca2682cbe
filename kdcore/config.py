"""Typed, frozen settings for one experiment: how each network is fitted and how the student distils (the
task's own settings, who teaches, are ``kdcore.task_config``).

Every dataclass has ``from_dict`` that rejects unknown keys (naming the valid ones) and validates eagerly,
and ``to_dict`` that round-trips. ``ExperimentConfig.with_overrides`` takes dotted paths
(``"kd.alpha"``, ``"student.lr"``) so that a search space can name any knob without knowing the nesting.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kdcore.errors import ConfigError
from kdcore.fields import check_keys, choice, int_tuple, number
from kdcore.methods import METHODS
from kdcore.task_config import TaskConfig

DEFAULT_SEEDS: tuple[int, ...] = (0, 10, 1234, 99, 2021)
# "adam_coupled" is Adam with coupled weight decay (L2 added to the gradient: torch.optim.Adam(weight_decay=...)),
# as some image seeds used it; "adamw" decouples it (Loshchilov & Hutter). Kept apart so that nobody mixes them.
OPTIMIZERS = ("adam", "adamw", "adam_coupled", "sgd")
DECAYING_OPTIMIZERS = ("adamw", "adam_coupled", "sgd")
SCHEDULES = ("constant", "step", "multistep", "cyclic", "onecycle")
MODEL_NAMES = ("mlp", "cnn", "resnet")
KD_METHODS = tuple(METHODS)  # the registry's names (kdcore.methods), in its order
PLACEMENTS = ("last", "last_two")
FEATURE_LOSSES = ("mse", "cosine")
PROTOCOLS = ("honest", "seed")
# Training-time augmentation of image batches (kdcore.augment): name -> (padding in pixels, horizontal flips).
# crop_flip is the CIFAR standard of the KD literature (RandomCrop(32, padding=4) + RandomHorizontalFlip);
# shift a small translation without flips, for 8x8 digits (a flipped digit is another digit).
AUGMENTATIONS: dict[str, tuple[int, bool]] = {"none": (0, False), "crop_flip": (4, True), "shift": (1, False)}
# Where a logit-target method's targets come from on augmented batches (KDConfig.targets).
KD_TARGETS = ("batch", "variants")
INNER = ("folds", "split")
# How a fit computes (kdcore.loop, kdcore.batching): its training steps' precision (bf16: forward and loss
# under torch.autocast, the loss itself in float32), and how its seeds are batched: one vmap call for all
# seeds, a loop over the seeds, or the per-device rule of ``kdcore.batching.AUTO_SEED_BATCHING``.
PRECISIONS = ("fp32", "bf16")
SEED_BATCHINGS = ("auto", "vmap", "loop")


@dataclass(frozen=True)
class FitConfig:
    """How one network (baseline, teacher or student) is built and trained.

    The defaults are the recipe measured best on every built-in distance (``bench/defaults.py``, README
    "Defaults"): Adam with a one-cycle schedule peaking at 0.01, batches of 128, 300 epochs, the best epoch
    by selection loss kept. The published recipe (Adam 1e-3 constant, full batch, no selection) is the
    ``published`` space and ``PUBLISHED_FIT``.
    ``batch_size=None`` means full batch. ``patience=None`` disables early stopping (train all epochs);
    ``restore_best`` then still decides whether the best-by-selection-loss weights or the last ones are kept.
    Schedule parameters are read only by their schedule: ``step_size``/``gamma`` (step, in epochs),
    ``max_lr`` (cyclic: the other end of the triangle from ``lr``; one-cycle: the peak, which alone sets
    the one-cycle curve, ``lr`` unused), ``cycle_epochs`` (cyclic: epochs per half cycle),
    ``pct_start`` (one-cycle warm-up fraction), ``milestones`` (multistep: lr times ``gamma`` at each of
    these epochs, as ``MultiStepLR``). ``patience`` counts epochs (not evaluations).
    The architecture is ``model`` with ``hidden``/``batch_norm``/``channels``/``width``/``depth`` (see
    ``ModelSpec``). ``momentum`` and ``nesterov`` are read by ``sgd`` only; weight decay needs an optimizer
    that decays (``adamw``, ``adam_coupled``, ``sgd``). ``augment`` (``AUGMENTATIONS``) transforms each
    training batch of images on the device, every seed drawing its own crops and flips; the teacher of a
    distilled student sees the same augmented batch.
    How it computes, which changes figures only to float rounding (fp32) or to bf16's (bf16): ``precision``
    (``fp32``; ``bf16`` runs each training step's forward passes and loss under bf16 autocast, the loss in
    float32; evaluation stays in float32), ``channels_last`` (convolution weights stored channels-last per
    seed, so that cuDNN and oneDNN pick their NHWC kernels) and ``seed_batching`` (``auto``: the per-device
    rule of ``kdcore.batching.AUTO_SEED_BATCHING``; ``vmap``: one call for all seeds; ``loop``: one call per
    seed on the same stacked weights).
    """

    model: str = "mlp"
    hidden: tuple[int, ...] = (20, 10)
    batch_norm: bool = False
    channels: tuple[int, ...] | None = None
    width: int = 1
    depth: int = 8
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    batch_size: int | None = 128
    epochs: int = 300
    patience: int | None = None
    restore_best: bool = True
    schedule: str = "onecycle"
    step_size: int = 100
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5
    max_lr: float = 1e-2
    cycle_epochs: int = 20
    pct_start: float = 0.3
    augment: str = "none"
    precision: str = "fp32"
    channels_last: bool = False
    seed_batching: str = "auto"

    def __post_init__(self) -> None:
        where = "fit settings"
        hidden = self.hidden
        if isinstance(hidden, int) or not isinstance(hidden, (list, tuple)) or not hidden:
            raise ConfigError(f"{where}: hidden must be a non-empty list of widths, but got {hidden!r}")
        widths = tuple(number(h, "hidden width", integer=True) for h in hidden)
        if min(widths) < 1:
            raise ConfigError(f"{where}: every hidden width must be >= 1, but got {list(widths)}")
        object.__setattr__(self, "hidden", widths)
        if not isinstance(self.model, str) or not (self.model in MODEL_NAMES or is_import_path(self.model)):
            raise ConfigError(f"model must be one of {list(MODEL_NAMES)} or an import path 'package.module:function', "
                              f"but got {self.model!r}")
        if self.channels is not None:
            channels = int_tuple(self.channels, "channels")
            if min(channels) < 1:
                raise ConfigError(f"every entry of channels must be >= 1, but got {list(channels)}")
            if self.model == "resnet" and len(channels) != 4:
                raise ConfigError(f"resnet channels must be 4 numbers (stem, stage 1, stage 2, stage 3), but got "
                                  f"{list(channels)}")
            object.__setattr__(self, "channels", channels)
        for name in ("width", "depth"):
            value = number(getattr(self, name), name, integer=True)
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, but got {value}")
            object.__setattr__(self, name, value)
        if self.model == "resnet" and (self.depth - 2) % 6:
            raise ConfigError(f"resnet depth must be 6n + 2 (8, 14, 20, 32, 44, 56, 110), but got {self.depth}")
        if not isinstance(self.nesterov, bool):
            raise ConfigError(f"{where}: nesterov must be true or false, but got {self.nesterov!r}")
        milestones = int_tuple(self.milestones, "milestones", allow_empty=True)
        if any(b <= a for a, b in itertools.pairwise(milestones)) or (milestones and milestones[0] < 1):
            raise ConfigError(f"milestones must be increasing epochs >= 1, but got {list(milestones)}")
        object.__setattr__(self, "milestones", milestones)
        if self.schedule == "multistep" and not milestones:
            raise ConfigError("schedule 'multistep' needs milestones (the epochs at which lr is multiplied by gamma)")
        if not isinstance(self.batch_norm, bool):
            raise ConfigError(f"{where}: batch_norm must be true or false, but got {self.batch_norm!r}")
        if not isinstance(self.restore_best, bool):
            raise ConfigError(f"{where}: restore_best must be true or false, but got {self.restore_best!r}")
        choice(self.optimizer, "optimizer", OPTIMIZERS)
        choice(self.schedule, "schedule", SCHEDULES)
        choice(self.augment, "augment", tuple(AUGMENTATIONS))
        choice(self.precision, "precision", PRECISIONS)
        choice(self.seed_batching, "seed_batching", SEED_BATCHINGS)
        if not isinstance(self.channels_last, bool):
            raise ConfigError(f"{where}: channels_last must be true or false, but got {self.channels_last!r}")
        for name in ("lr", "weight_decay", "momentum", "gamma", "max_lr", "pct_start"):
            object.__setattr__(self, name, number(getattr(self, name), name))
        for name in ("epochs", "step_size", "cycle_epochs"):
            value = number(getattr(self, name), name, integer=True)
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, but got {value}")
            object.__setattr__(self, name, value)
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, but got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, but got {self.weight_decay}")
        if self.weight_decay > 0 and self.optimizer not in DECAYING_OPTIMIZERS:
            raise ConfigError(
                f"weight_decay={self.weight_decay} applies only to optimizers {list(DECAYING_OPTIMIZERS)}, "
                f"but optimizer is {self.optimizer!r}; set weight_decay to 0, or use adamw (decoupled) or "
                "adam_coupled (Adam with L2 in the gradient)"
            )
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"0 <= momentum < 1 must hold, but got momentum={self.momentum}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ConfigError(f"nesterov applies to optimizer 'sgd' with momentum > 0, but got optimizer "
                              f"{self.optimizer!r}, momentum={self.momentum}")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"0 < gamma <= 1 must hold, but got gamma={self.gamma}")
        if self.max_lr <= 0:
            raise ConfigError(f"max_lr must be > 0, but got {self.max_lr}")
        if not 0 < self.pct_start < 1:
            raise ConfigError(f"0 < pct_start < 1 must hold, but got pct_start={self.pct_start}")
        for name in ("batch_size", "patience"):
            value = getattr(self, name)
            if value is not None:
                value = number(value, name, integer=True)
                if value < 1:
                    raise ConfigError(f"{name} must be >= 1 or null, but got {value}")
                object.__setattr__(self, name, value)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "fit settings") -> FitConfig:
        check_keys(cls, data, where)
        try:
            return cls(**dict(data))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["hidden"] = list(self.hidden)
        out["milestones"] = list(self.milestones)
        out["channels"] = None if self.channels is None else list(self.channels)
        return out

    def key_dict(self) -> dict[str, Any]:
        """``to_dict`` without the settings added after cache format 1 while they hold their defaults, so
        that a study's teacher-cache keys outlive new settings."""
        out = self.to_dict()
        defaults = FitConfig().to_dict()
        for name in FIT_V2_SETTINGS:
            if out[name] == defaults[name]:
                del out[name]
        return out

    @property
    def augments(self) -> bool:
        """Whether ``augment`` changes a batch at all (``none`` pads nothing and flips nothing)."""
        return AUGMENTATIONS[self.augment] != (0, False)

    @property
    def model_spec(self) -> ModelSpec:
        return ModelSpec(self.model, self.hidden, self.batch_norm, self.channels, self.width, self.depth)


# Settings added after teacher-cache format 1: left out of a key while at their defaults.
FIT_V2_SETTINGS = ("model", "channels", "width", "depth", "momentum", "nesterov", "milestones", "augment",
                   "precision", "channels_last", "seed_batching")


@dataclass(frozen=True)
class KDConfig:
    """The distillation knobs.

    ``hinton``: ``(1 - alpha) * CE + alpha * T^2 * KL``, over each routed teacher's classes. Default alpha
    0.9, T 1: with per-domain teachers the high temperatures of the published recipe (T 9) hurt (README
    "Defaults"). ``annealing`` (Jafari et al. 2021): phase 1 of ``anneal_epochs`` epochs regresses the
    student's logits on ``phi(t) * teacher`` with ``tau_max`` steps, then phase 2 trains on hard labels (the
    student's ``epochs``); alpha and temperature are not used. ``none``: hard labels only (the no-KD
    reference; the same as hinton with alpha 0).
    ``simkd`` (Chen et al., CVPR 2022; ``kdcore.simkd``): a projector of bottleneck ``teacher channels /
    factor`` maps the student's last feature map to the teacher's (``placement: last_two`` adds one for the
    previous stage, its loss weighted ``prev_weight``); the loss is ``feature_loss`` (``mse`` or ``cosine``)
    between them, on the samples the teacher classifies right when ``use_labels``, plus ``ce_weight`` * CE and
    ``logit_weight`` * T^2 * KL(teacher || reused head) on the reused-classifier path; the teacher's frozen
    classifier predicts. alpha is not used.
    ``targets`` (logit-target methods, on augmented batches): ``batch`` runs the teachers on each augmented
    batch; ``variants`` looks their logits up in tables over every crop/flip variant, computed once
    (``kdcore.variant_logits``; float16, so within 2^-11 of each logit: not the same figures bit for bit).
    """

    method: str = "hinton"
    alpha: float = 0.9
    temperature: float = 1.0
    tau_max: int = 10
    anneal_epochs: int = 500
    factor: int = 2
    placement: str = "last"
    prev_weight: float = 0.5
    feature_loss: str = "mse"
    use_labels: bool = False
    ce_weight: float = 0.0
    logit_weight: float = 0.0
    targets: str = "batch"

    def __post_init__(self) -> None:
        choice(self.targets, "kd.targets", KD_TARGETS)
        choice(self.method, "kd.method", tuple(METHODS))  # the live registry: a test may add an entry
        choice(self.placement, "kd.placement", PLACEMENTS)
        choice(self.feature_loss, "kd.feature_loss", FEATURE_LOSSES)
        alpha = number(self.alpha, "alpha")
        if not 0 <= alpha <= 1:
            raise ConfigError(f"0 <= alpha <= 1 must hold, but got alpha={alpha}")
        temperature = number(self.temperature, "temperature")
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, but got {temperature}")
        tau_max = number(self.tau_max, "tau_max", integer=True)
        if tau_max < 1:
            raise ConfigError(f"tau_max must be >= 1, but got {tau_max}")
        anneal_epochs = number(self.anneal_epochs, "anneal_epochs", integer=True)
        if anneal_epochs < 1:
            raise ConfigError(f"anneal_epochs must be >= 1, but got {anneal_epochs}")
        object.__setattr__(self, "tau_max", tau_max)
        object.__setattr__(self, "anneal_epochs", anneal_epochs)
        METHODS[self.method].check_config(self)  # the method's own rules (annealing: anneal_epochs >= tau_max)
        factor = number(self.factor, "kd.factor", integer=True)
        if factor < 1:
            raise ConfigError(f"kd.factor must be >= 1, but got {factor}")
        for name in ("prev_weight", "ce_weight", "logit_weight"):
            value = number(getattr(self, name), f"kd.{name}")
            if value < 0:
                raise ConfigError(f"kd.{name} must be >= 0, but got {value}")
            object.__setattr__(self, name, value)
        if not isinstance(self.use_labels, bool):
            raise ConfigError(f"kd.use_labels must be true or false, but got {self.use_labels!r}")
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "temperature", temperature)
        object.__setattr__(self, "factor", factor)

    @property
    def uses_teachers(self) -> bool:
        """False without a distillation term (``none``, or Hinton KD with alpha = 0): hard labels only."""
        return METHODS[self.method].uses_teachers(self)

    def without_kd(self) -> KDConfig:
        """The ablation of this configuration: no distillation term, everything else unchanged."""
        return KDConfig(**METHODS[self.method].ablation(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "kd") -> KDConfig:
        check_keys(cls, data, where)
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if out["targets"] == "batch":  # added later: only where it differs, so records made before stay equal
            del out["targets"]
        return out


def is_import_path(name: str) -> bool:
    """``package.module:function``: a user's own model factory (resolved by ``kdcore.networks.resolve_factory``)."""
    module, sep, attr = name.partition(":")
    return bool(sep) and all(p.isidentifier() for p in module.split(".")) and attr.isidentifier()


@dataclass(frozen=True)
class ModelSpec:
    """One architecture by name with its settings (``kdcore.networks.MODELS``), read off a ``FitConfig``.

    ``mlp``: ``hidden`` widths, optional ``batch_norm``. ``cnn``: one 3x3 conv stage per entry of ``channels``
    (times ``width``), each conv -> [BN] -> ReLU -> 2x2 max-pool, then global average pool and a linear head.
    ``resnet``: the CIFAR-style BasicBlock ResNet of the KD literature, ``depth`` = 6n + 2 (n blocks per
    stage), ``channels`` = (stem, stage 1, stage 2, stage 3) times ``width`` (ResNet-8x4: depth 8, channels
    (8, 16, 32, 64), width 4). ``channels=None`` takes the model's default. Any other name is an import path
    ``package.module:function`` called as ``function(input_shape, n_classes)`` -> ``nn.Module``.
    """

    name: str = "mlp"
    hidden: tuple[int, ...] = (20, 10)
    batch_norm: bool = False
    channels: tuple[int, ...] | None = None
    width: int = 1
    depth: int = 8

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "hidden": list(self.hidden), "batch_norm": self.batch_norm,
                "channels": None if self.channels is None else list(self.channels), "width": self.width,
                "depth": self.depth}


def _default_fit() -> FitConfig:
    return FitConfig()


# The published recipe (2-20-10-2 ReLU FFNN, Adam 1e-3, full batch, final weights), for comparisons.
PUBLISHED_FIT = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "batch_size": None, "epochs": 30000,
                 "patience": None, "restore_best": False, "schedule": "constant"}


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: the seeds, the selection protocol, the fit settings of every method and the task
    (``task``: who teaches, which classes each teacher knows, how samples are routed to them).

    ``protocol='honest'`` selects on inner validation data carved out of the training set (stratified by
    domain and class, drawn with ``split_seed``) and reports the given validation set as holdout. How it is
    carved is ``inner``: ``'folds'`` (default) partitions the training set into K = round(1 / inner_fraction)
    folds and seed number j (in the order of ``seeds``) fits on all folds but fold j mod K and selects on
    fold j mod K (j counted from ``fold_start``, so that one seed of a study can be re-run alone on its own
    fold), so that with K seeds the seed-mean inner metric is a K-fold cross-validated estimate over
    every training point; ``'split'`` holds out one ``inner_fraction`` split that every seed selects on.
    ``protocol='seed'`` trains on the whole training set and selects and reports on the given validation
    set, as the published work did. Metrics are evaluated every ``eval_every`` epochs.
    """

    seeds: tuple[int, ...] = DEFAULT_SEEDS
    protocol: str = "honest"
    inner: str = "folds"
    inner_fraction: float = 0.2
    fold_start: int = 0
    split_seed: int = 0
    eval_every: int = 1
    baseline: FitConfig = field(default_factory=_default_fit)
    teacher: FitConfig = field(default_factory=_default_fit)
    student: FitConfig = field(default_factory=_default_fit)
    kd: KDConfig = field(default_factory=KDConfig)
    task: TaskConfig = field(default_factory=TaskConfig)

    def __post_init__(self) -> None:
        seeds = self.seeds
        if isinstance(seeds, int) or not isinstance(seeds, (list, tuple)) or not seeds:
            raise ConfigError(f"seeds must be a non-empty list of integers, but got {seeds!r}")
        seeds = tuple(number(s, "seed", integer=True) for s in seeds)
        if min(seeds) < 0:
            raise ConfigError(f"seeds must be >= 0, but got {list(seeds)}")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds must be distinct, but got {list(seeds)}")
        object.__setattr__(self, "seeds", seeds)
        choice(self.protocol, "protocol", PROTOCOLS)
        frac = number(self.inner_fraction, "inner_fraction")
        if not 0 < frac < 1:
            raise ConfigError(f"0 < inner_fraction < 1 must hold, but got inner_fraction={frac}")
        object.__setattr__(self, "inner_fraction", frac)
        choice(self.inner, "inner", INNER)
        if self.inner == "folds" and self.n_folds < 2:
            raise ConfigError(
                f"inner 'folds' needs at least 2 folds (round(1 / inner_fraction) >= 2), but inner_fraction="
                f"{frac} gives {self.n_folds}; use inner_fraction <= 0.5 or inner 'split'"
            )
        object.__setattr__(self, "split_seed", number(self.split_seed, "split_seed", integer=True))
        fold_start = number(self.fold_start, "fold_start", integer=True)
        if fold_start < 0:
            raise ConfigError(f"fold_start must be >= 0, but got {fold_start}")
        object.__setattr__(self, "fold_start", fold_start)
        every = number(self.eval_every, "eval_every", integer=True)
        if every < 1:
            raise ConfigError(f"eval_every must be >= 1, but got {every}")
        object.__setattr__(self, "eval_every", every)
        for name, cls in (("baseline", FitConfig), ("teacher", FitConfig), ("student", FitConfig),
                          ("kd", KDConfig), ("task", TaskConfig)):
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"{name} must be {cls.__name__}, but got {getattr(self, name)!r}")

    @property
    def n_folds(self) -> int:
        """K of the ``folds`` inner validation: round(1 / inner_fraction)."""
        return round(1 / self.inner_fraction)

    def fold_of(self, j: int) -> int:
        """The fold that seed number j (its position in ``seeds``) selects on under ``inner='folds'``."""
        return (self.fold_start + j) % self.n_folds

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentConfig:
        check_keys(cls, data, "experiment settings")
        kwargs: dict[str, Any] = dict(data)
        for name in ("baseline", "teacher", "student"):
            if name in kwargs:
                kwargs[name] = FitConfig.from_dict(kwargs[name] or {}, where=name)
        if "kd" in kwargs:
            kwargs["kd"] = KDConfig.from_dict(kwargs["kd"] or {})
        if "task" in kwargs:
            kwargs["task"] = TaskConfig.from_dict(kwargs["task"] or {})
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seeds": list(self.seeds),
            "protocol": self.protocol,
            "inner": self.inner,
            "inner_fraction": self.inner_fraction,
            "fold_start": self.fold_start,
            "split_seed": self.split_seed,
            "eval_every": self.eval_every,
            "baseline": self.baseline.to_dict(),
            "teacher": self.teacher.to_dict(),
            "student": self.student.to_dict(),
            "kd": self.kd.to_dict(),
            "task": self.task.to_dict(),
        }

    def with_overrides(self, overrides: Mapping[str, Any]) -> ExperimentConfig:
        """Return a copy with dotted-path overrides applied (``{"kd.alpha": 0.3, "seeds": [0, 1]}``)."""
        data = self.to_dict()
        for path, value in overrides.items():
            set_path(data, path, value)
        return ExperimentConfig.from_dict(data)


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``data[a][b] = value`` for ``path='a.b'``, rejecting paths that name no setting."""
    parts = path.split(".")
    node = data
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            valid = sorted(node) if isinstance(node, dict) else []
            where = ".".join(parts[:depth]) or "the experiment"
            raise ConfigError(f"unknown setting {path!r}: {where} has no key {part!r}; valid keys are {valid}")
        if depth == len(parts) - 1:
            node[part] = value
        else:
            node = node[part]


def knob_paths() -> list[str]:
    """Every dotted path a search space or a ``--set`` flag may name."""
    paths: list[str] = []
    for key, value in ExperimentConfig().to_dict().items():
        if isinstance(value, dict):
            paths.extend(f"{key}.{sub}" for sub in value)
        else:
            paths.append(key)
    return paths
