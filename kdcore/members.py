"""Members of a batched model: choosing some of them, of the model and of everything shaped like it.

A seed-batched model (``kdcore.batching``) holds its members on the leading axis of every parameter and
buffer; a pack (``kdcore.pack``) makes those members configurations x seeds. ``take`` builds a model of
some members (repeated members tile it: a teacher of S seeds becomes the teacher of K x S members), and
``keep_`` shrinks a model in place, so that a pruned configuration's members cost nothing from then on. A
per-seed set (``Subset``) and the teachers' targets are cut the same way.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from kdcore.batching import SeedModel
from kdcore.prepared import Subset
from kdcore.teachers import Targets


def _select_(model: SeedModel, index: torch.Tensor) -> None:
    """Every parameter and buffer of ``model`` replaced by its members ``index`` (tied tensors stay tied)."""
    params: dict[int, nn.Parameter] = {}
    buffers: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for module in model.modules():
            for leaf, p in module._parameters.items():
                if p is not None:
                    if id(p) not in params:
                        params[id(p)] = nn.Parameter(p.detach()[index.to(p.device)].clone(),
                                                     requires_grad=p.requires_grad)
                    module._parameters[leaf] = params[id(p)]
            for leaf, b in module._buffers.items():
                if b is not None:
                    if id(b) not in buffers:
                        buffers[id(b)] = b[index.to(b.device)].clone()
                    module._buffers[leaf] = buffers[id(b)]
    model.seeds = tuple(model.seeds[int(i)] for i in index.tolist())


def keep_(model: SeedModel, index: torch.Tensor) -> SeedModel:
    """``model`` itself, shrunk to its members ``index`` (its parameters are new tensors: an optimizer over
    the old ones must be told, ``MemberOptimizer.select``)."""
    _select_(model, index)
    return model


def take(model: SeedModel, index: torch.Tensor) -> SeedModel:
    """A new model holding ``model``'s members ``index``, in that order (an index may repeat)."""
    out = copy.deepcopy(model)
    _select_(out, index)
    return out


def tiled(model: SeedModel, copies: int) -> SeedModel:
    """``copies`` times the members of ``model``, one after another: member k * S + s is member s."""
    if copies == 1:
        return model
    return take(model, torch.arange(model.n_seeds).repeat(copies))


def subset(part: Subset, index: torch.Tensor) -> Subset:
    """A per-seed set cut to the members ``index`` (a set shared by every member stays as it is)."""
    if not part.per_seed:
        return part
    at = index.to(part.device)

    def cut(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t[at]

    x = part.x if part.rows is not None else part.x[at]
    real = None if part.real is None else tuple(part.real[int(i)] for i in index.tolist())
    return dataclasses.replace(part, x=x, y=part.y[at], d=part.d[at], weight=cut(part.weight), real=real,
                               rows=cut(part.rows))


def targets(t: Targets, index: torch.Tensor) -> Targets:
    """The teachers' targets (S, N, R, C) of the members ``index``."""
    at = index.to(t.logits.device)
    return Targets(t.logits[at], None if t.mask is None else t.mask[at], None if t.weight is None else t.weight[at])
