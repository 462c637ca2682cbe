"""The one base exception of kdcore; the CLI turns any of them into one line on stderr and exit code 2."""


class KDCoreError(Exception):
    """Base of every error a user of kdcore can cause (bad data, bad settings)."""


class ConfigError(KDCoreError, ValueError):
    """A setting is unknown, of the wrong type, or out of range."""


class DataError(KDCoreError, ValueError):
    """A dataset file or array is missing, malformed or unsafe."""


class TrainingError(KDCoreError, RuntimeError):
    """Training diverged (a loss became NaN or infinite)."""
