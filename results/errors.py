"""The base exception of the results package (the CLI prints it as one line and exits 2)."""


class ResultsError(Exception):
    """A study folder without readable tables, or rows that do not fit a table's schema."""
