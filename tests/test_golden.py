"""The figures of the code as it was when ``tests/golden/`` was written, held to 1e-9: a change that must not
change any result (a move, a rename, a new seam) keeps these green. Regenerate the files only for a change
that means to change results, and say so in its commit (``python tests/golden/make_golden.py``)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.golden.cases import STUDY_ARGS, TRAIN_CASES, analyse_json, kdtune, study_tables, train_json
from tests.golden.compare import differences

GOLDEN = Path(__file__).resolve().parent / "golden"


def _golden(name: str) -> Any:
    return json.loads((GOLDEN / f"{name}.json").read_text())


def _same(want: Any, got: Any) -> None:
    diffs = differences(want, got)
    assert not diffs, f"{len(diffs)} figure(s) differ from the golden file:\n" + "\n".join(diffs[:40])


def test_compare_sees_a_changed_figure_and_skips_only_volatile_keys() -> None:
    want = {"acc": 0.5, "seconds": 1.0, "rows": [{"loss": 0.25}], "path": "/a/b"}
    assert differences(want, {"acc": 0.5, "seconds": 9.0, "rows": [{"loss": 0.25}], "path": "/c/d"}) == []
    assert differences(want, {"acc": 0.5 + 2e-9, "seconds": 1.0, "rows": [{"loss": 0.25}], "path": "/a/b"})
    assert differences(want, {"acc": 0.5, "seconds": 1.0, "rows": [{"loss": 0.3}], "path": "/a/b"})
    assert differences(want, {"acc": 0.5, "seconds": 1.0, "rows": [], "path": "/a/b"})


def test_analyse_of_the_golden_study_gives_the_golden_figures() -> None:
    _same(_golden("analyse"), analyse_json(GOLDEN / "study"))


def test_golden_study_tables_read_back_as_recorded() -> None:
    _same(_golden("tables"), study_tables(GOLDEN / "study"))


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_train_gives_the_golden_figures(case: str, tmp_path: Path) -> None:
    _same(_golden("train")[case], train_json(TRAIN_CASES[case], tmp_path))


@pytest.mark.slow
def test_the_golden_study_run_again_gives_the_same_trials_seeds_references_and_analysis() -> None:
    storage = Path(tempfile.mkdtemp(prefix="kdg-", dir="/tmp"))
    try:
        kdtune("search", *STUDY_ARGS, "--name", "g", "--storage", str(storage), "--quiet")
        _same(_golden("tables"), study_tables(storage / "g"))
        again = analyse_json(storage / "g")
        # A study made now records its holdout size, which the committed one (made before) did not: the size
        # is the same (300), only where the report read it from differs.
        assert again["header"]["holdout"]["n"] == _golden("analyse")["header"]["holdout"]["n"]
        for key in ("source", "note"):
            again["header"]["holdout"][key] = _golden("analyse")["header"]["holdout"][key]
        _same(_golden("analyse"), again)
    finally:
        shutil.rmtree(storage, ignore_errors=True)
