"""Progress on stderr: a small status line (rewritten in place on a terminal, a line every few seconds
otherwise), and the Tune callback that keeps one for a running study.

Light: ``kdtune train`` uses the line alone, so Ray is imported only when a study's callback is made.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from tune.plan import RunOptions


class ProgressLine:
    """Throttled status output that never floods a log file and never writes to stdout."""

    def __init__(self, stream: TextIO | None = None, *, interval: float = 0.2, log_interval: float = 10.0,
                 enabled: bool = True) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if self.tty else log_interval
        self.enabled = enabled
        self._last = 0.0
        self._width = 0
        self._text = ""

    def update(self, text: str, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        if not self.tty and text == self._text:
            return  # a log file gets a line only when something changed
        self._last, self._text = now, text
        if self.tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """A line of its own above the status line (which the next ``update`` redraws)."""
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(text + "\n")
        self.stream.flush()
        self._last = 0.0  # redraw the status line at the next update

    def done(self, text: str | None = None) -> None:
        """End the line (and print ``text`` on it, if given)."""
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        if text:
            self.stream.write(text + "\n")
        self.stream.flush()


def clock(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``: a duration as a person reads it."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def describe_trial(trial: Any, status: str, result: dict[str, Any], knobs: list[str], number: int | None,
                   metric: str) -> str:
    """The ``--verbose`` line of a finished trial: number, state, score, seconds, key parameters."""
    value = result.get(metric)
    score = f"inner acc {100 * value:.2f} %" if isinstance(value, float) and math.isfinite(value) else "no score"
    holdout = result.get("holdout_acc")
    if status == "COMPLETE" and isinstance(holdout, float):
        score += f", holdout {100 * holdout:.2f} %"
    seconds = result.get("trial_seconds", result.get("time_total_s"))
    took = f"{seconds:.0f} s" if isinstance(seconds, (int, float)) else "-"
    config = trial.config or {}
    params = ", ".join(f"{k}={config[k]:.3g}" if isinstance(config[k], float) else f"{k}={config[k]}"
                       for k in knobs if k in config)
    label = f"trial {number}" if number is not None else f"trial {trial.trial_id}"
    return f"{label} {status}: {score}; {took}; {params}"


def study_progress(total: int, options: RunOptions, knobs: list[str], number_of: Any, metric: str,
                   best: float | None = None) -> Any:
    """A Tune callback for a study of ``total`` trials: one status line (trials done / running / pruned /
    failed, the study's best ``metric`` so far, time and ETA) and, with ``--verbose``, a line per finished
    trial (``number_of`` turns a Tune trial id into its Optuna number). ``best``: the study's best before this
    run (``kdtune resume``), so the line shows the study's best, not this run's."""
    earlier = best
    from ray import tune

    from tune.searcher import trial_status

    class Progress(tune.Callback):
        def __init__(self) -> None:
            self.line = ProgressLine(options.stream, enabled=not options.quiet)
            self.ends: Counter[str] = Counter()
            self.best: float | None = earlier
            self.start = time.monotonic()

        def _show(self, trials: list[Any], force: bool = False, ended: Any = None) -> None:
            # A trial that is ending may still say RUNNING while its callbacks run: not counted.
            running = sum(1 for t in trials if t.status == "RUNNING" and t is not ended)
            best = f"{100 * self.best:.2f} %" if self.best is not None else "-"
            done, elapsed = sum(self.ends.values()), time.monotonic() - self.start
            # Wall time per finished trial so far (concurrency included) times the trials left.
            eta = f", ETA {clock(elapsed / done * (total - done))}" if 0 < done < total else ""
            self.line.update(
                f"trials {done}/{total} done: {self.ends['complete']} complete, "
                f"{self.ends['pruned']} pruned, {self.ends['error']} error; {running} running; "
                f"best inner acc {best}; {clock(elapsed)}{eta}", force=force)

        def _ended(self, trials: list[Any], trial: Any, status: str) -> None:
            self.ends[status.lower()] += 1
            if options.verbose:
                self.line.note(describe_trial(trial, status, trial.last_result or {}, knobs,
                                              number_of(trial.trial_id), metric))
            self._show(trials, force=True, ended=trial)

        def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any) -> None:
            self._show(trials)

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            # The same rule the searcher tells Optuna by: a NaN loss ends the trial without raising, as ERROR.
            result = trial.last_result or {}
            status = trial_status(result, False, metric)
            value = result.get(metric)
            if status == "COMPLETE" and value is not None and (self.best is None or value > self.best):
                self.best = float(value)
            self._ended(trials, trial, status)

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self._ended(trials, trial, "ERROR")

        def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
            self._show(trials, force=True)
            self.line.done()

    return Progress()
