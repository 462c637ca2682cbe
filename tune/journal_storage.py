"""The study's Optuna journal storage, writing a block of a trial's values in one append.

Optuna's ``JournalStorage`` appends each operation on its own: the file lock taken (a symlink made and
removed), the file opened, one line written and fsynced, then the file read again for what is new. A trial
of the default space reports 200 intermediate values and ~25 user attributes, so each trial cost ~230 such
appends: 62 % of the driver's CPU time (``bench/driver_scale.py``) and an fsync each, which is what a shared
filesystem would have made slowest. ``BatchedJournalStorage.batch()`` keeps the intermediate values and user
attributes set inside it and appends them as one write (one lock, one fsync) when the block ends, or as soon
as any other operation or any read comes, in the order they were made: what is written, and what a reader
of the storage sees, is what Optuna's own storage writes and shows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from optuna.storages import JournalStorage

# Optuna's JournalOperation codes (optuna.storages.journal._storage) of the writes a block may hold back: the
# ones that read nothing back and on which nothing else that the storage does depends.
_HELD_BACK = frozenset({7, 8})  # SET_TRIAL_INTERMEDIATE_VALUE, SET_TRIAL_USER_ATTR


class BatchedJournalStorage(JournalStorage):
    """``JournalStorage`` whose ``batch()`` appends a trial's intermediate values and user attributes at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._depth = 0
        self._pending: list[dict[str, Any]] = []
        self._just_held = False
        super().__init__(*args, **kwargs)

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._depth, self._pending, self._just_held = 0, [], False

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Hold back intermediate values and user attributes until the block ends (nests)."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                with self._thread_lock:
                    self._flush()
                    super()._sync_with_backend()

    def _flush(self) -> None:
        if self._pending:
            logs, self._pending = self._pending, []
            self._backend.append_logs(logs)

    def _write_log(self, op_code: int, extra_fields: dict[str, Any]) -> None:
        if self._depth and int(op_code) in _HELD_BACK:
            self._pending.append({"op_code": int(op_code), "worker_id": self._replay_result.worker_id,
                                  **extra_fields})
            self._just_held = True  # the read-back that follows this write in JournalStorage is skipped
            return
        self._flush()
        super()._write_log(op_code, extra_fields)

    def _sync_with_backend(self) -> None:
        if self._just_held:
            self._just_held = False
            return
        self._flush()  # any read sees every write made before it
        super()._sync_with_backend()
