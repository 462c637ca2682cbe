"""A small progress line on stderr: rewritten in place on a terminal, a line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


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
