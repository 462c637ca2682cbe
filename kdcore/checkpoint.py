"""Teachers trained elsewhere: state-dict files loaded with ``torch.load(weights_only=True)``.

A checkpoint is one network's ``state_dict`` (``torch.save(model.state_dict(), path)``), bare or wrapped as
the toolboxes save them (RepDistiller, SimKD, mdistiller: ``{"epoch", "model": state_dict, "accuracy", ...}``;
``{"state_dict": ...}``; keys prefixed ``module.`` by DataParallel), of the teacher's
architecture (``kdcore.networks.build`` of its model spec) whose outputs are the teacher's classes in the
order its ``classes`` lists them. ``weights_only=True`` admits tensors and plain containers only, so a
checkpoint cannot run code when loaded. Every seed of the student learns from the one loaded network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from kdcore.batching import SeedModel, from_states, seed_batching_for
from kdcore.errors import ConfigError, one_line
from kdcore.task import Teacher


def read_state(path: str | Path, who: str) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, or ConfigError with one line saying why it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{who}: checkpoint {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a foreign or damaged file fails in many ways
        raise ConfigError(f"{who}: checkpoint {path} is not a state-dict file that torch.load(weights_only=True) "
                          f"reads ({one_line(exc)[:200]})") from None
    state = unwrap_state(state)
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{who}: checkpoint {path} must hold a state dict (names -> tensors), but holds "
                          f"{type(state).__name__}")
    return {str(k): v for k, v in state.items()}


WRAPPER_KEYS = ("model", "state_dict")  # {"model": ...}: RepDistiller, SimKD, mdistiller; {"state_dict": ...}
DATA_PARALLEL_PREFIX = "module."


def unwrap_state(obj: object) -> object:
    """The state dict inside a toolbox's checkpoint: ``obj["model"]`` or ``obj["state_dict"]`` when ``obj`` is
    such a wrapper, with DataParallel's ``module.`` prefix taken off when every key carries it; anything else
    as it came (the caller refuses what is not a state dict)."""
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if isinstance(obj, Mapping) and obj and all(str(k).startswith(DATA_PARALLEL_PREFIX) for k in obj):
        obj = {str(k)[len(DATA_PARALLEL_PREFIX):]: v for k, v in obj.items()}
    return obj


def load_teacher(teacher: Teacher, input_shape: tuple[int, ...], seeds: Sequence[int],
                 device: str | torch.device = "cpu") -> SeedModel:
    """Teacher ``teacher`` from its checkpoint, repeated for every seed; ConfigError (one line) when the file
    is missing, unreadable, or does not fit the teacher's architecture."""
    if teacher.checkpoint is None:
        raise ConfigError(f"{teacher.name} has no checkpoint")
    who = f"{teacher.name} (classes {list(teacher.classes)})"
    state = read_state(teacher.checkpoint, who)
    try:
        model = from_states(teacher.fit.model_spec, input_shape, len(teacher.classes), [state] * len(seeds),
                            seeds, seed_batching=seed_batching_for(teacher.fit.seed_batching, device),
                            channels_last=teacher.fit.channels_last)
    except ConfigError as exc:
        raise ConfigError(f"{who}: checkpoint {teacher.checkpoint} does not fit its architecture "
                          f"{teacher.fit.model!r} with {len(teacher.classes)} outputs: {exc}") from None
    return model.to(device)
