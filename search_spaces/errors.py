"""The one base exception of search_spaces; the CLI turns it into one line on stderr and exit code 2."""

from kdcore import KDCoreError


class SpaceError(KDCoreError, ValueError):
    """A search-space file is missing, malformed, or names settings that cannot build an experiment."""
