"""Who teaches: the task's settings (``TaskConfig``), its teachers (``TeacherSpec``) and how samples are
routed to them. Checked against the data by ``kdcore.task.resolve`` (docs/design.md, "The tasks it serves")."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kdcore.errors import ConfigError
from kdcore.fields import check_keys, choice, int_tuple, number

if TYPE_CHECKING:
    from kdcore.config import FitConfig

ROUTINGS = ("group", "label", "all")
# The fit settings that name a network's architecture: what a teacher's ``model`` may override.
MODEL_FIELDS = ("model", "hidden", "batch_norm", "channels", "width", "depth")


@dataclass(frozen=True)
class TeacherSpec:
    """One teacher of a task: what it is trained on, which classes it knows, or the checkpoint it is.

    ``classes`` (S_k, in the order of the teacher's own outputs; None: every class) and ``group`` (trained
    on that group's samples only; None: every group) choose its training samples, relabelled 0..|S_k|-1 in
    the order of ``classes``. ``checkpoint`` is a state-dict file (``torch.save(model.state_dict())``) of
    one network of the teacher's architecture (``teacher`` fit settings, with ``model`` overrides of its
    ``MODEL_FIELDS``), loaded with ``torch.load(weights_only=True)`` instead of training; every seed of
    the student then learns from that one network.
    """

    classes: tuple[int, ...] | None = None
    group: int | None = None
    checkpoint: str | None = None
    model: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.classes is not None:
            classes = int_tuple(self.classes, "a teacher's classes")
            twice = sorted({c for c in classes if classes.count(c) > 1})
            if twice:
                raise ConfigError(f"a teacher names class(es) {twice} twice in its classes {list(classes)}; "
                                  "list each class once")
            if min(classes) < 0:
                raise ConfigError(f"a teacher's classes must be >= 0, but got {list(classes)}")
            object.__setattr__(self, "classes", classes)
        if self.group is not None:
            group = number(self.group, "a teacher's group", integer=True)
            if group < 0:
                raise ConfigError(f"a teacher's group must be >= 0, but got {group}")
            object.__setattr__(self, "group", group)
        if self.checkpoint is not None and (not isinstance(self.checkpoint, str) or not self.checkpoint):
            raise ConfigError(f"a teacher's checkpoint must be a file path, but got {self.checkpoint!r}")
        if not isinstance(self.model, Mapping):
            raise ConfigError(f"a teacher's model must be a mapping of {list(MODEL_FIELDS)}, but got {self.model!r}")
        unknown = sorted(str(k) for k in self.model if k not in MODEL_FIELDS)
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} in a teacher's model; valid keys are {list(MODEL_FIELDS)}")
        object.__setattr__(self, "model", dict(self.model))

    def fit(self, base: FitConfig) -> FitConfig:
        """The teacher's fit settings: ``base`` with this teacher's model overrides."""
        return dataclasses.replace(base, **self.model) if self.model else base

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "a teacher") -> TeacherSpec:
        check_keys(cls, data, where)
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return {"classes": None if self.classes is None else list(self.classes), "group": self.group,
                "checkpoint": self.checkpoint, "model": dict(self.model)}


PER_GROUP = "per_group"


@dataclass(frozen=True)
class TaskConfig:
    """Who teaches, and which teachers give each sample its target (docs/design.md, "The tasks it serves").

    ``teachers``: ``"per_group"`` (one teacher per group of the data, each trained on its group and knowing
    every class: the multi-domain task) or a list of ``TeacherSpec``. ``routing``: ``group`` (the teachers
    of the sample's group), ``label`` (the teachers whose classes hold the sample's label) or ``all``.
    Checked against the data by ``kdcore.task.resolve``.
    """

    teachers: str | tuple[TeacherSpec, ...] = PER_GROUP
    routing: str = "group"

    def __post_init__(self) -> None:
        choice(self.routing, "task.routing", ROUTINGS)
        teachers = self.teachers
        if isinstance(teachers, str):
            if teachers != PER_GROUP:
                raise ConfigError(f"task.teachers must be {PER_GROUP!r} or a list of teachers, but got {teachers!r}")
            return
        if not isinstance(teachers, (list, tuple)) or not teachers:
            raise ConfigError(f"task.teachers must be {PER_GROUP!r} or a non-empty list of teachers, "
                              f"but got {teachers!r}")
        specs = tuple(t if isinstance(t, TeacherSpec) else TeacherSpec.from_dict(t, f"task.teachers[{i}]")
                      for i, t in enumerate(teachers))
        if self.routing == "group" and any(t.group is None for t in specs):
            raise ConfigError("task.routing 'group' needs a group on every teacher; give each teacher a group, "
                              "or route by 'label' or to 'all'")
        object.__setattr__(self, "teachers", specs)

    @property
    def is_default(self) -> bool:
        return self == TaskConfig()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "task") -> TaskConfig:
        check_keys(cls, data, where)
        return cls(**dict(data))  # its messages name task.routing / task.teachers[k] already

    def to_dict(self) -> dict[str, Any]:
        teachers = self.teachers if isinstance(self.teachers, str) else [t.to_dict() for t in self.teachers]
        return {"teachers": teachers, "routing": self.routing}

