"""kdtune's ASHA: Ray's asynchronous successive halving, with the rungs kdtune lays out.

Ray's ``AsyncHyperBandScheduler`` places rungs at ``grace * rf**k`` up to ``max_t``, so the last one can sit
just before a trial's end (66 and 198 for 200 evaluations), where stopping saves nothing and throws the
trial's result away. ``RungASHA`` keeps Ray's decision rule (stop a trial whose value at a rung is below the
``1 - 1/rf`` quantile of the values recorded there) and its bookkeeping, over ``results.asha.asha_rungs``:
the first rung, then only rungs after which a surviving trial still has ``rf`` times as far to go.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler

from results.asha import asha_rungs


class RungASHA(AsyncHyperBandScheduler):
    """One ASHA bracket whose rungs are ``asha_rungs(grace_period, reduction_factor, max_t)``."""

    def __init__(self, *, grace_period: int, reduction_factor: int, max_t: int, **kwargs: Any) -> None:
        super().__init__(grace_period=grace_period, reduction_factor=reduction_factor, max_t=max_t, brackets=1,
                         **kwargs)
        rungs = asha_rungs(grace_period, reduction_factor, max_t)
        # Ray keeps a bracket's rungs highest first, each with the values recorded there. Private state
        # (``_brackets``, ``_rungs``): Ray 2.60 has no public way to place rungs, only grace * rf**k.
        self._brackets[0]._rungs = [(milestone, {}) for milestone in sorted(rungs, reverse=True)]

    @property
    def rungs(self) -> list[int]:
        return sorted(int(milestone) for milestone, _ in self._brackets[0]._rungs)
