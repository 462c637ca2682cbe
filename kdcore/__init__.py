"""kdcore: the PyTorch engine of kdtune (data, batched models, losses, schedules, training).

Imports neither ray nor optuna. The public names live in their modules: ``kdcore.data``,
``kdcore.models``, ``kdcore.losses``, ``kdcore.schedules``, ``kdcore.train``, ``kdcore.config``.
"""

from kdcore.errors import ConfigError, DataError, KDCoreError, TrainingError

__version__ = "0.1.0"
__all__ = ["ConfigError", "DataError", "KDCoreError", "TrainingError", "__version__"]
