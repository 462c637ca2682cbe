"""Content-addressed cache of trained teachers, shared by every trial (and node) of a study.

Teachers depend only on the dataset, the teacher settings, the split and the seeds, never on the KD knobs,
so a study trains them once per key. An entry is one file ``<key>.pt`` written to a temporary name and
renamed into place (readers never see half a file). A per-key ``flock`` makes a second trial that wants the
same key wait for the first instead of training it again; the lock needs a filesystem with POSIX locks
(local disks, NFSv4, most shared filesystems).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdcore.atomic_file import write_atomic
from kdcore.batching import SeedModel
from kdcore.config import ExperimentConfig
from kdcore.prepared import Prepared, task_of
from kdcore.result import FitResult
from kdcore.supervised import new_model
from kdcore.teachers import train_teachers

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


class TeacherCache:
    """Teachers on disk under ``root``, one file per key."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def get_or_train(self, prep: Prepared, config: ExperimentConfig, fingerprint: str) -> CachedTeachers:
        """Load the teachers for this key, or train and store them while holding the key's lock.

        An entry that cannot be read (damaged on disk) is trained again and replaced: a cache heals.
        """
        key = teacher_key(fingerprint, config)
        self.root.mkdir(parents=True, exist_ok=True)
        cached = self._load(key, prep, config)
        if cached is not None:
            return cached
        with open(self.root / f"{key}.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                cached = self._load(key, prep, config)  # another trial may have trained them while we waited
                if cached is not None:
                    return cached
                results = train_teachers(prep, config)
                self._store(key, results)
                return CachedTeachers(key, [r.model for r in results], [r.summary() for r in results], hit=False)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _store(self, key: str, results: list[FitResult]) -> None:
        payload = {
            "format": CACHE_FORMAT,
            "states": [{k: v.detach().cpu() for k, v in r.model.state_dict().items()} for r in results],
            "summaries": json.dumps([r.summary() for r in results]),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        write_atomic(self.path(key), buffer.getvalue())

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
