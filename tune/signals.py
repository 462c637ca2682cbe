"""SIGTERM handled like Ctrl-C: what Slurm, Kubernetes and ``kill`` send stops a study cleanly.

``handle_sigterm`` (called by the CLI's ``main`` only) makes SIGTERM run whatever SIGINT would run at
that moment: inside ``Tuner.fit`` that is Ray Tune's handler (end the experiment, trials stopped, the
searcher told), elsewhere Python's (``KeyboardInterrupt``), which the runner turns into an interrupted,
resumable study. ``exit_code`` then says 143 (128 + SIGTERM) instead of 130, as a shell would.
Without this, ``ray.init``'s handler calls ``sys.exit`` at any line of the driver and Ray's C++ side
aborts on the way out (exit 134, a core dump, no resume hint).
"""

from __future__ import annotations

import signal
from types import FrameType

_received: set[int] = set()


def _forward(signum: int, frame: FrameType | None) -> None:
    _received.add(signum)
    current = signal.getsignal(signal.SIGINT)
    if callable(current):
        current(signal.SIGINT, frame)
    else:  # SIG_IGN or SIG_DFL: still stop, as Ctrl-C would have before anything took it over
        raise KeyboardInterrupt


def handle_sigterm() -> None:
    """Route SIGTERM through the current SIGINT handler from now on (main thread only)."""
    signal.signal(signal.SIGTERM, _forward)


def terminated() -> bool:
    """Whether SIGTERM has come (a stop Ray Tune may have taken for its own and finished the run anyway)."""
    return signal.SIGTERM in _received


def exit_code(interrupted: int = 130) -> int:
    """The exit status of a stopped run: 143 if SIGTERM stopped it, else ``interrupted`` (Ctrl-C's 130)."""
    return 128 + signal.SIGTERM if signal.SIGTERM in _received else interrupted
