"""Asking Optuna for a pack: K trials of one shape for one Ray trial (``kdcore.pack``), each its own
Optuna trial.

The first trial of a pack is asked freely; the other K - 1 are asked with the first one's *shape knobs*
fixed (the knobs that are not member settings, ``kdcore.pack.MEMBER_SETTINGS``: in the default space
``kd.method``, ``kd.anneal_epochs``, ``student.batch_size``, ``student.batch_norm``) through Optuna's
``enqueue_trial`` with those parameters only, so that the sampler draws the rest (TPE with the constant
liar, so the K draws differ). Drawn freely, the default space's shapes would leave most packs short
(``bench/pack_trials.py --policy group``).

A trial whose shape does not fit the pack being filled (a re-run that ``tune.outcome.end_stale_trials``
enqueued with its full parameters comes out of Optuna's queue first) never joins it: it waits, and starts
the next pack. So a pack never mixes shapes, and an interrupted configuration re-runs with its own
parameters, alone or at the head of a pack of its shape.

Not yet wired into the searcher (``--pack K`` is the next step; see the branch's report).
"""

from __future__ import annotations

from typing import Any

from kdcore.pack import MEMBER_SETTINGS, shape_of
from search_spaces import SearchSpace


def shape_knobs(space: SearchSpace) -> tuple[str, ...]:
    """The knobs of ``space`` whose values change a pack's shape (every knob that is not a member setting)."""
    def member(path: str) -> bool:
        part, _, key = path.partition(".")
        return key in MEMBER_SETTINGS.get(part, ())

    return tuple(k.path for k in space.knobs if not member(k.path))


class PackAsker:
    """Asks ``study`` for packs of at most ``size`` trials of ``space``, each of one shape."""

    def __init__(self, study: Any, space: SearchSpace, size: int) -> None:
        if size < 1:
            raise ValueError(f"a pack holds at least one configuration, but got size={size}")
        self.study, self.space, self.size = study, space, size
        self._shape_knobs = shape_knobs(space)
        self._waiting: list[tuple[Any, dict[str, Any]]] = []  # asked, of another shape than the pack they met

    def _ask(self) -> tuple[Any, dict[str, Any]]:
        trial = self.study.ask()
        return trial, self.space.sample(trial)

    def _shape(self, params: dict[str, Any]) -> str:
        return shape_of(self.space.experiment(params))

    def ask(self) -> list[tuple[Any, dict[str, Any]]]:
        """One pack: ``(Optuna trial, its parameters)`` for each configuration, all of one shape. It may be
        short when asks keep coming out of another shape (at most ``2 * size`` asks are tried)."""
        first = self._waiting.pop(0) if self._waiting else self._ask()
        shape = self._shape(first[1])
        pack = [first]
        waiting = [w for w in self._waiting if self._shape(w[1]) == shape][: self.size - 1]
        pack += waiting
        self._waiting = [w for w in self._waiting if all(w is not p for p in waiting)]
        fixed = {k: v for k, v in first[1].items() if k in self._shape_knobs}
        for _ in range(2 * self.size):
            if len(pack) >= self.size:
                break
            self.study.enqueue_trial(fixed, skip_if_exists=False)
            asked = self._ask()
            (pack if self._shape(asked[1]) == shape else self._waiting).append(asked)
        return pack

    @property
    def waiting(self) -> int:
        """Trials asked but not yet in a pack (they start the next ones)."""
        return len(self._waiting)
