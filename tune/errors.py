"""The base exception of the tune package (the CLI prints it as one line and exits 2)."""


class KDTuneError(Exception):
    """A user-caused problem in a search, a study folder, a cluster address or a command-line argument."""
