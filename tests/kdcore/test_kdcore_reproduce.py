"""Slow: the published d = 1.0 result (baseline and Hinton student near 99.5 %) on the reference pickle."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from kdcore import sources
from kdcore.config import PUBLISHED_FIT, ExperimentConfig
from kdcore.experiment import run_experiment

# The published runs used 30,000 full-batch epochs. 1,500 leave the student at about 98.5 % on this machine
# (the baseline is ahead of it), right at the bar, so 2,000 epochs: about 40 s on one CPU thread.
EPOCHS = 2000


@pytest.mark.slow
def test_published_protocol_reaches_the_published_accuracy(reference_path: Callable[[str], Path]) -> None:
    data = sources.load_pickle(reference_path("1.0"))
    fit = {**PUBLISHED_FIT, "epochs": EPOCHS}
    config = ExperimentConfig.from_dict({
        "protocol": "seed", "eval_every": EPOCHS // 10,
        "baseline": fit, "teacher": fit, "student": fit,
        "kd": {"method": "hinton", "alpha": 0.5, "temperature": 9.0},
    })
    assert config.seeds == (0, 10, 1234, 99, 2021)
    result = run_experiment(data, config)
    for name in ("baseline", "student"):
        r = result.methods[name]
        assert r.epochs_run == EPOCHS and (r.best_epoch == EPOCHS).all()  # final weights, as published
        assert r.holdout_acc.mean() >= 0.985, (name, r.holdout_acc)
        assert r.holdout_acc.min() >= 0.96, (name, r.holdout_acc)
    # teachers see one domain each and are near perfect on it
    for k in range(3):
        assert np.mean(result.methods[f"teacher_{k}"].holdout_acc) >= 0.97
