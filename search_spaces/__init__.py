"""search_spaces: declarative search spaces (YAML) for kdtune, their loader and validator.

A space is ordered knobs (dotted paths of ``kdcore.config.ExperimentConfig``), sampled define-by-run through
any object with Optuna's ``Trial`` methods, on top of fixed settings. Imports neither optuna nor ray.
"""

from search_spaces.errors import SpaceError
from search_spaces.knobs import CategoricalKnob, Condition, FloatKnob, IntKnob, Knob, Trial
from search_spaces.reader import builtin_spaces, load_space, parse_space
from search_spaces.space import Objective, SearchSpace

__all__ = [
    "CategoricalKnob",
    "Condition",
    "FloatKnob",
    "IntKnob",
    "Knob",
    "Objective",
    "SearchSpace",
    "SpaceError",
    "Trial",
    "builtin_spaces",
    "load_space",
    "parse_space",
]
