"""``kdtune analyse``: a study's analysis as ``report.md`` with its plots, and as a JSON-ready dict.

``analyse(study_dir)`` reads only the Parquet tables (and the small ``study.json`` records), so it runs
without Ray on a laptop, while the study runs, after it was interrupted, or once it has finished. It
computes the typed summary (``results.summary``), draws the plots (``results.plots``), writes the Markdown
(``results.markdown``) and returns the summary's JSON.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from kdcore import write_atomic
from results import plots as P
from results.errors import ResultsError
from results.markdown import SIGNATURE, render_report
from results.plots import PLOT_FILES
from results.study_data import load_study
from results.summary import summarise

__all__ = ["ANALYSIS_DIR", "PLOT_FILES", "REPORT_FILE", "analyse"]

REPORT_FILE = "report.md"
ANALYSIS_DIR = "analysis"


def analyse(study_dir: str | os.PathLike[str], *, top_k: int = 5,
            out_dir: str | os.PathLike[str] | None = None, random_state: int = 0) -> dict[str, Any]:
    """Analyse the study at ``study_dir``: write ``report.md`` and PNG plots, return the summary dict.

    Output goes to ``study_dir/analysis/`` unless ``out_dir`` is given; ``random_state`` seeds the
    importance bootstrap (and is written to the summary). The dict is JSON-serialisable (accuracies as
    fractions, None where a value is missing); ``ResultsError`` if ``study_dir`` is not a study with tables.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ResultsError(f"top_k must be an integer >= 1, but got {top_k!r}")
    study = load_study(study_dir)
    out = Path(out_dir).expanduser().resolve() if out_dir is not None else study.root / ANALYSIS_DIR
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(f"cannot write the analysis to {out} ({exc.strerror or exc})") from None

    summary = summarise(study, top_k=top_k, random_state=random_state)
    drawn = P.draw(study, summary, out)
    if _earlier_analysis(out):  # stale plots of an earlier analysis in ``out`` are removed
        for key, name in PLOT_FILES.items():
            if key not in drawn:
                (out / name).unlink(missing_ok=True)
    summary = dataclasses.replace(summary, report=out / REPORT_FILE, plots=tuple(drawn.values()))
    write_atomic(out / REPORT_FILE, render_report(study, summary, drawn).encode("utf-8"))
    return summary.to_json()


def _earlier_analysis(out: Path) -> bool:
    """Whether ``out`` holds a report written by ``analyse`` (so its plot files are ours to replace)."""
    try:
        with open(out / REPORT_FILE, encoding="utf-8") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return head.startswith("# Study `") and SIGNATURE in head
