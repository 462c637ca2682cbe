"""Content-addressed cache of trained teachers, shared by every trial (and node) of a study.

Teachers depend only on the dataset, the teacher settings, the split and the seeds, never on the KD knobs,
so a study trains them once per key. An entry is one file ``<key>.pt`` written to a temporary name and
renamed into place (readers never see half a file). A per-key ``flock`` makes a second trial that wants the
same key wait for the first instead of training it again; the lock needs a filesystem with POSIX locks
(local disks, NFSv4, most shared filesystems).

Teacher k is built as a *part* first, ``<key>.teacher_<k>.part`` (written atomically, under its own lock
``<key>.teacher_<k>.lock``), so that the teachers of one key can train in parallel, each in its own process
(``train_parts``: one Ray task per teacher in ``tune.reference``); whoever finds every part there assembles
the entry under the key's lock and removes the parts. ``get_or_train`` (a trial, or anything that wants all
teachers at once) goes the same way one teacher after another, keeping parts another process left, so a
study stopped after some of its teachers trains only the rest. Locks are taken key first, then part, never
the other way round. The entry is the one every kdtune wrote: old caches serve as they are.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdcore.atomic_file import write_atomic
from kdcore.batching import SeedModel
from kdcore.config import ExperimentConfig
from kdcore.prepared import Prepared, task_of
from kdcore.supervised import new_model
from kdcore.task import Teacher
from kdcore.teachers import train_teacher

CACHE_FORMAT = 1


def _file_digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "missing"


def teacher_key(fingerprint: str, config: ExperimentConfig) -> str:
    """sha256 of everything teachers depend on: data, teacher settings, task, split, protocol and seeds.

    Settings added after the multi-domain task (model fields, an explicit teacher list) enter only when they
    differ from their defaults, so the keys of studies made before them stay valid; a checkpoint enters by
    its content; the routing does not enter (it changes the student's targets, not the teachers).
    """
    task: dict[str, Any] = {}
    if not isinstance(config.task.teachers, str):  # routing is not in it: teachers never depend on it
        specs = config.task.teachers
        task = {"teachers": [t.to_dict() for t in specs],
                "checkpoints": [_file_digest(t.checkpoint) for t in specs if t.checkpoint is not None]}
    parts = {
        "format": CACHE_FORMAT,
        "data": fingerprint,
        "teacher": config.teacher.key_dict(),
        **task,
        "seeds": list(config.seeds),
        "protocol": config.protocol,
        "inner_fraction": config.inner_fraction if config.protocol == "honest" else None,
        "split_seed": config.split_seed if config.protocol == "honest" else None,
        # the folds a seed fits on (both only matter under folds; old keys stay valid for split)
        **({"inner": "folds", "fold_start": config.fold_start}
           if config.protocol == "honest" and config.inner == "folds" else {}),
        "eval_every": config.eval_every,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@dataclass
class CachedTeachers:
    """The task's teachers (one seed-batched model each) with their summaries, and whether the cache had them."""

    key: str
    models: list[SeedModel]
    summaries: list[dict[str, Any]]
    hit: bool


@dataclass(frozen=True)
class TeacherPart:
    """Teacher ``index`` of a key: its summary and whether this call trained (or evaluated) it, rather than
    finding it in the cache (its part, or the assembled entry)."""

    index: int
    summary: dict[str, Any]
    trained: bool


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing) for the duration."""
    with open(path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _payload(value: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


class TeacherCache:
    """Teachers on disk under ``root``, one file per key (and, while a key is being built, one per teacher)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def part_path(self, key: str, index: int) -> Path:
        return self.root / f"{key}.teacher_{index}.part"

    def get_or_train(self, prep: Prepared, config: ExperimentConfig, fingerprint: str) -> CachedTeachers:
        """Load the teachers for this key, or train and store them while holding the key's lock.

        An entry that cannot be read (damaged on disk) is trained again and replaced: a cache heals.
        """
        key = teacher_key(fingerprint, config)
        self.root.mkdir(parents=True, exist_ok=True)
        cached = self._load(key, prep, config)
        if cached is not None:
            return cached
        with _locked(self.root / f"{key}.lock"):
            cached = self._load(key, prep, config)  # another trial may have trained them while we waited
            if cached is not None:
                return cached
            self.path(key).unlink(missing_ok=True)  # damaged, or absent: parts and a new entry replace it
            teachers = task_of(prep, config).teachers
            built = [self._part(key, prep, config, t) for t in teachers]
            self._assemble(key, [state for _, state in built], [part.summary for part, _ in built], teachers)
        cached = self._load(key, prep, config)
        if cached is None:
            raise OSError(f"the teacher cache entry {self.path(key)} was written but cannot be read back")
        cached.hit = False
        return cached

    def train_parts(self, prep: Prepared, config: ExperimentConfig, fingerprint: str,
                    indices: Sequence[int]) -> list[TeacherPart]:
        """Teachers ``indices`` of this key, each trained (or evaluated, for a checkpoint) unless its part or
        the entry is already there; then, if every part is there, the entry assembled (under the key's lock)."""
        key = teacher_key(fingerprint, config)
        self.root.mkdir(parents=True, exist_ok=True)
        teachers = task_of(prep, config).teachers
        bad = [k for k in indices if not 0 <= k < len(teachers)]
        if bad:
            raise IndexError(f"teacher index(es) {bad} out of range: the task has {len(teachers)} teachers")
        summaries = self._summaries(key)
        if summaries is not None and len(summaries) == len(teachers):
            return [TeacherPart(k, summaries[k], trained=False) for k in indices]
        parts = [self._part(key, prep, config, teachers[k])[0] for k in indices]
        with _locked(self.root / f"{key}.lock"):
            if self._read(self.path(key)) is None:
                states, found = [], []
                for k in range(len(teachers)):
                    part = self._read(self.part_path(key, k))
                    if part is None:
                        break  # another teacher is still training: whoever finishes it assembles
                    states.append(part["state"])
                    found.append(json.loads(part["summary"]))
                else:
                    self._assemble(key, states, found, teachers)
        return parts

    def _part(self, key: str, prep: Prepared, config: ExperimentConfig,
              teacher: Teacher) -> tuple[TeacherPart, dict[str, torch.Tensor]]:
        """Teacher ``teacher`` of ``key`` from its part or the entry, else trained and stored as its part."""
        k = teacher.index
        with _locked(self.root / f"{key}.teacher_{k}.lock"):
            # The entry is checked under the part's lock: the parts are removed (under their locks) only once
            # the entry is in place, so a part missing here while the entry is absent was never made.
            entry = self._read(self.path(key))
            if entry is not None and len(entry["states"]) > k:
                return TeacherPart(k, json.loads(entry["summaries"])[k], trained=False), entry["states"][k]
            part = self._read(self.part_path(key, k))
            if part is not None:
                return TeacherPart(k, json.loads(part["summary"]), trained=False), part["state"]
            result = train_teacher(prep, config, teacher)
            state, summary = _cpu_state(result.model), result.summary()
            write_atomic(self.part_path(key, k), _payload(
                {"format": CACHE_FORMAT, "index": k, "state": state, "summary": json.dumps(summary)}))
            return TeacherPart(k, summary, trained=True), state

    def _assemble(self, key: str, states: list[dict[str, torch.Tensor]], summaries: list[dict[str, Any]],
                  teachers: Sequence[Teacher]) -> None:
        """Write the entry (the caller holds the key's lock), then remove the parts it was made of."""
        write_atomic(self.path(key), _payload(
            {"format": CACHE_FORMAT, "states": states, "summaries": json.dumps(summaries)}))
        for teacher in teachers:
            with _locked(self.root / f"{key}.teacher_{teacher.index}.lock"):
                self.part_path(key, teacher.index).unlink(missing_ok=True)

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        """A file of this cache (entry or part) as saved, on the CPU; None if it is missing or unreadable."""
        try:
            payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
            return payload
        except Exception:  # noqa: BLE001 - missing, or damaged in one of many ways: rebuilt
            return None

    def _summaries(self, key: str) -> list[dict[str, Any]] | None:
        """The entry's summaries without reading its weights (memory-mapped), or None."""
        try:
            payload = torch.load(self.path(key), map_location="cpu", weights_only=True, mmap=True)
            out: list[dict[str, Any]] = json.loads(payload["summaries"])
            return out
        except Exception:  # noqa: BLE001 - missing or damaged: the teachers are looked at one by one
            return None

    def _load(self, key: str, prep: Prepared, config: ExperimentConfig) -> CachedTeachers | None:
        """The cached teachers, or None if the entry is missing or unreadable."""
        try:
            payload = torch.load(self.path(key), map_location=prep.device, weights_only=True)
            models = []
            teachers = task_of(prep, config).teachers
            if len(teachers) != len(payload["states"]):
                return None
            for teacher, state in zip(teachers, payload["states"]):
                model = new_model(prep, teacher.fit, config.seeds, len(teacher.classes))
                model.load_state_dict(state)
                models.append(model)
            return CachedTeachers(key, models, json.loads(payload["summaries"]), hit=True)
        except FileNotFoundError:
            return None
        except Exception:  # noqa: BLE001 - a damaged entry fails in many ways; it is retrained
            return None
