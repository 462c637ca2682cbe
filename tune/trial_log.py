"""A trial's own log, kept in the study folder: ``DIR/NAME/t_<trial id>/trial.log``.

Ray discards worker output here (``log_to_driver=False``) and keeps nothing in a trial's folder, so the
trainable writes its own: where it ran, its parameters, one line per evaluation, how it ended, and the
traceback of an exception. Lines start with a UTC timestamp; a retried or resumed trial appends.
"""

from __future__ import annotations

import datetime as dt
import traceback
from pathlib import Path
from typing import Any, TextIO

LOG_NAME = "trial.log"


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TrialLog:
    """Line-buffered, append-only; a log that cannot be written never fails the trial."""

    def __init__(self, trial_dir: Path) -> None:
        self.path = trial_dir / LOG_NAME
        self._fh: TextIO | None = None
        try:
            trial_dir.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - held for the trial's life
        except OSError:
            self._fh = None

    def line(self, text: str) -> None:
        if self._fh is not None:
            try:
                self._fh.write(f"{utc_now()} {text}\n")
            except OSError:
                self._fh = None

    def evaluation(self, metrics: dict[str, Any]) -> None:
        parts = [f"evaluation {metrics.get('evaluation')}", f"epoch {metrics.get('epoch')}"]
        parts += [f"{k} {metrics[k]:.6g}" for k in ("inner_acc", "inner_loss", "holdout_acc", "holdout_loss")
                  if isinstance(metrics.get(k), float)]
        self.line(", ".join(parts))

    def failure(self, exc: BaseException) -> None:
        if isinstance(exc, SystemExit):  # how Tune ends a function trainable it stops (ASHA, experiment end)
            self.line("stopped by Ray Tune (the scheduler, or the experiment ended)")
            return
        self.line(f"ended by {type(exc).__name__}: {exc}")
        if self._fh is not None:
            try:
                self._fh.write("".join(traceback.format_exception(exc)))
            except OSError:
                self._fh = None

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()  # on NFS a delayed write error surfaces here: never the trial's failure
            except OSError:
                pass
            self._fh = None
