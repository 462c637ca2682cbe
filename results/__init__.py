"""Parquet tables of kdtune studies and their analysis; readable without Ray.

``results.schema`` documents every table; ``results.writer`` appends to them atomically;
``results.reader`` loads them.
"""

from results.errors import ResultsError

__all__ = ["ResultsError"]
