"""Shared fixtures: one torch thread for the session, the reference pickles (skipped when absent), and one
finished smoke study for the slow tests that only read a study (``smoke_study``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from cli_errors import changes, snapshot
from study_runs import FinishedStudy, finished_smoke_study

# tests/ lives in the project (/work/main); the reference pickles live beside it in ../shared/data and are
# never copied into the project.
REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
REFERENCE_DISTANCES = ("0.25", "0.5", "0.75", "1.0")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tests share two cores with other work; one intra-op thread keeps timings and results steady."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def _logging_as_main_sets_it() -> None:
    """Library code sets no logging; ``kdtune``'s ``main()`` does. Tests that call the library directly
    (create a study, tell Optuna a trial's end) run with the same settings, so Optuna does not log a line
    per study and trial."""
    from tune.cli import configure_logging

    configure_logging()


@pytest.fixture(scope="session")
def reference_path() -> Callable[[str], Path]:
    """``reference_path("1.0")`` -> path of data_d1.0.pkl; skips the test when the file is not there."""

    def find(distance: str) -> Path:
        path = REFERENCE_DIR / f"data_d{distance}.pkl"
        if not path.is_file():
            pytest.skip(f"reference pickle {path} not found (expected in ../shared/data beside the project)")
        return path

    return find


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FinishedStudy]:
    """One real finished study (``study_runs.SMOKE_ARGS``: 3 smoke trials, their references and a 2-trial
    tuned baseline), made once per session for the tests that only read it (test_train_from,
    test_references). Read-only: a test that changes a study copies this one first or makes its own; the
    session fails at teardown if anything in the folder changed."""
    study = finished_smoke_study(tmp_path_factory.mktemp("smoke-study") / "studies")
    before = snapshot(study.root)
    yield study
    changed = changes(before, snapshot(study.root))
    assert not changed, f"a test changed the shared smoke study (copy it first): {changed}"
