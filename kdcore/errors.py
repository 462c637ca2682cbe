"""The one base exception of kdcore; the CLI turns any of them into one line on stderr and exit code 2."""


class KDCoreError(Exception):
    """Base of every error a user of kdcore can cause (bad data, bad settings)."""


class ConfigError(KDCoreError, ValueError):
    """A setting is unknown, of the wrong type, or out of range."""


class DataError(KDCoreError, ValueError):
    """A dataset file or array is missing, malformed or unsafe."""


class TrainingError(KDCoreError, RuntimeError):
    """Training diverged (a loss became NaN or infinite)."""


def one_line(exc: BaseException) -> str:
    """An exception's message as the one line the CLI prints: its first non-empty line, whitespace collapsed
    (a library's message may run on with a traceback or a dump), or the exception's type when it says
    nothing."""
    for line in str(exc).splitlines():
        if line.strip():
            return " ".join(line.split())
    return type(exc).__name__
