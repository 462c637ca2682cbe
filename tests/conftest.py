"""Shared fixtures: one torch thread for the session, and the reference pickles (skipped when absent)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

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


@pytest.fixture(scope="session")
def reference_path() -> Callable[[str], Path]:
    """``reference_path("1.0")`` -> path of data_d1.0.pkl; skips the test when the file is not there."""

    def find(distance: str) -> Path:
        path = REFERENCE_DIR / f"data_d{distance}.pkl"
        if not path.is_file():
            pytest.skip(f"reference pickle {path} not found (expected in ../shared/data beside the project)")
        return path

    return find
