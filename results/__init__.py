"""Parquet tables of kdtune studies and their analysis; readable without Ray.

``results.schema`` documents every table; ``results.writer`` appends to them atomically;
``results.reader`` loads them. The analysis (``results.report.analyse``, behind ``kdtune analyse``) reads a
study with ``results.study_data``, computes its sections in ``results.summaries`` (ranking, references),
``.classes`` (teachers, per-class accuracy, sizes), ``.methods`` (the ``kd.method`` comparison), ``.sizes``
(accuracy against parameters), ``.importance`` and ``.asha``, with the statistics of ``results.stats``;
``results.summary`` gathers them as typed data with its JSON, ``results.markdown`` and ``results.plots``
render it.
"""

from results.errors import ResultsError

__all__ = ["ResultsError"]
