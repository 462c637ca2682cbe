"""A KD task resolved against its data: the teachers (what each is trained on, which classes it knows) and
the routing (which teachers give each sample its target). docs/design.md, "The tasks it serves".

``TaskConfig`` (kdcore.task_config) says what the user asked for; ``resolve`` checks it against the data's
classes and groups and returns a ``Task``. The multi-domain task is the default configuration: one teacher
per group, each knowing every class, routed by group. Class-subset teachers are the same path with
``classes`` set and routing by label. Numpy only (the CLI resolves a task before it imports torch). What a
KD method needs of a task, each method checks itself (``kdcore.methods``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kdcore.config import FitConfig
from kdcore.errors import ConfigError
from kdcore.task_config import PER_GROUP, TaskConfig, TeacherSpec


@dataclass(frozen=True)
class Teacher:
    """Teacher ``index``: its output j is the logit of global class ``classes[j]``."""

    index: int
    classes: tuple[int, ...]
    group: int | None
    checkpoint: str | None
    fit: FitConfig

    @property
    def name(self) -> str:
        return f"teacher_{self.index}"

    def trains_on(self, y: np.ndarray, d: np.ndarray) -> np.ndarray:
        """(N,) bool: the samples this teacher is trained and evaluated on (its classes, its group)."""
        keep = np.isin(y, self.classes)
        if self.group is not None:
            keep &= d == self.group
        return keep

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "classes": list(self.classes), "group": self.group,
                "checkpoint": self.checkpoint, "model": self.fit.model_spec.to_dict()}


@dataclass(frozen=True)
class Task:
    """Resolved teachers and routing over ``n_classes`` classes and ``n_groups`` groups."""

    teachers: tuple[Teacher, ...]
    routing: str
    n_classes: int
    n_groups: int
    cells: tuple[tuple[int, int], ...] = ()  # the (class, group) pairs the data holds; () = every pair

    def _cells(self) -> tuple[np.ndarray, np.ndarray]:
        """(classes, groups) of the data's (class, group) cells, every pair when not given."""
        if self.cells:
            pairs = np.asarray(self.cells, dtype=np.int64)
            return pairs[:, 0], pairs[:, 1]
        c, g = np.meshgrid(np.arange(self.n_classes), np.arange(self.n_groups), indexing="ij")
        return c.reshape(-1), g.reshape(-1)

    @property
    def class_mask(self) -> np.ndarray:
        """(K, C) bool: which classes each teacher knows."""
        mask = np.zeros((len(self.teachers), self.n_classes), dtype=bool)
        for t in self.teachers:
            mask[t.index, list(t.classes)] = True
        return mask

    @property
    def full_classes(self) -> bool:
        """Every teacher knows every class (plain Hinton KD per routed teacher)."""
        return bool(self.class_mask.all())

    @property
    def shared_classes(self) -> tuple[int, ...]:
        """The classes whose samples take targets from more than one teacher that knows them (marked in the
        analysis): none in the multi-domain task, where each sample has its one domain teacher."""
        c, g = self._cells()
        knows = self.route(c, g) & self.class_mask.T[c]  # (cells, K): routed teachers that know the class
        return tuple(sorted({int(x) for x in c[knows.sum(axis=-1) > 1]}))

    def route(self, y: np.ndarray, d: np.ndarray) -> np.ndarray:
        """(..., K) bool for labels y and groups d of shape (...): the teachers that give each sample its
        target. ``group``: the teachers of its group; ``label``: those that know its label (and, when they
        have a group, of its group); ``all``: every teacher."""
        y, d = np.asarray(y), np.asarray(d)
        out = np.ones((*y.shape, len(self.teachers)), dtype=bool)
        for t in self.teachers:
            if self.routing in ("group", "label") and t.group is not None:
                out[..., t.index] &= d == t.group
            if self.routing == "label":
                out[..., t.index] &= np.isin(y, t.classes)
        return out

    @property
    def one_teacher_each(self) -> bool:
        """Every (class, group) cell is routed to exactly one teacher."""
        return bool((self.route(*self._cells()).sum(axis=-1) == 1).all())

    def describe(self) -> dict[str, Any]:
        """What the tables record about the task."""
        return {"routing": self.routing, "n_classes": self.n_classes, "n_groups": self.n_groups,
                "shared_classes": list(self.shared_classes), "teachers": [t.describe() for t in self.teachers]}


def check_coverage(task: Task, y_train: np.ndarray, d_train: np.ndarray, y_valid: np.ndarray,
                   d_valid: np.ndarray, min_train: int = 2) -> None:
    """ConfigError (one line) when a teacher has fewer than ``min_train`` training samples (the number of
    inner folds, so that every fold has some) or no holdout sample: it could not be selected or reported."""
    for t in task.teachers:
        if t.checkpoint is None and int(t.trains_on(y_train, d_train).sum()) < min_train:
            raise ConfigError(f"{t.name} (classes {list(t.classes)}) has {int(t.trains_on(y_train, d_train).sum())} "
                              f"training sample(s), fewer than the {min_train} its inner folds need; use more data, "
                              "inner 'split' or --protocol seed")
        if not t.trains_on(y_valid, d_valid).any():
            raise ConfigError(f"{t.name} (classes {list(t.classes)}) has no holdout sample: the holdout (valid set) "
                              "must hold some samples of every teacher's classes")


def resolve(config: TaskConfig, teacher_fit: FitConfig, n_classes: int, n_groups: int,
            cells: np.ndarray | None = None) -> Task:
    """The task ``config`` asks for on data of ``n_classes`` classes and ``n_groups`` groups, or ConfigError
    with one line naming what is wrong: a class the data lacks, a group the data lacks, a class no teacher
    knows, or a (class, group) cell of the data whose samples reach no teacher that knows their class.
    ``cells`` (M, 2): the (class, group) pairs the data holds (default: every pair)."""
    every = tuple(range(n_classes))
    if config.teachers == PER_GROUP:
        # Data of one group: one teacher on all of it (no group to name).
        specs: tuple[TeacherSpec, ...] = tuple(TeacherSpec(group=g if n_groups > 1 else None)
                                                for g in range(n_groups))
    else:
        specs = config.teachers  # type: ignore[assignment]
    teachers = []
    for k, spec in enumerate(specs):
        where = f"task.teachers[{k}]"
        classes = every if spec.classes is None else spec.classes
        extra = sorted(c for c in classes if c >= n_classes)
        if extra:
            raise ConfigError(f"{where} names class(es) {extra}, but the data has classes 0..{n_classes - 1}")
        if len(classes) < 2 and spec.checkpoint is None:
            raise ConfigError(f"{where} knows only class(es) {list(classes)}: a teacher trained on one class "
                              "learns nothing; give it at least two classes")
        if spec.group is not None and spec.group >= n_groups:
            raise ConfigError(f"{where} names group {spec.group}, but the data has groups 0..{n_groups - 1}")
        try:
            fit = spec.fit(teacher_fit)
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"{where}: model: {exc}") from None
        teachers.append(Teacher(k, tuple(classes), spec.group, spec.checkpoint, fit))
    pairs = () if cells is None else tuple(sorted({(int(c), int(g)) for c, g in np.asarray(cells).reshape(-1, 2)}))
    task = Task(tuple(teachers), config.routing, n_classes, n_groups, pairs)
    known = task.class_mask.any(axis=0)
    if not known.all():
        missing = [int(c) for c in np.flatnonzero(~known)]
        raise ConfigError(f"class(es) {missing} have no teacher: every class must be known by at least one teacher "
                          f"(the teachers know {[list(t.classes) for t in teachers]})")
    c, g = task._cells()
    routed = task.route(c, g)  # (cells, K)
    if config.routing == "group":
        lonely = sorted({int(x) for x in g[~routed.any(axis=-1)]})
        if lonely:
            raise ConfigError(f"group(s) {lonely} have no teacher under routing 'group'; give every group one")
    reached = (routed & task.class_mask.T[c]).any(axis=-1)  # some routed teacher knows the sample's class
    if not reached.all():
        i = int(np.flatnonzero(~reached)[0])
        raise ConfigError(f"class {int(c[i])} of group {int(g[i])} reaches no teacher that knows it under routing "
                          f"{config.routing!r}; every class of every group needs one")
    return task
