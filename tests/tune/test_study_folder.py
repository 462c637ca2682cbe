"""A study folder is born whole (``tune.study.create_study``), and its Optuna study says what it is."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from tune.errors import KDTuneError
from tune.plan import SearchSettings, plan_study
from tune.study import (
    LOCK_FILE,
    StudyMeta,
    StudyPaths,
    create_study,
    driver_lock,
    is_unborn,
    load_optuna_study,
)


def _planned(storage: Path, name: str = "s") -> tuple[StudyPaths, StudyMeta]:
    return plan_study(SearchSettings(data="builtin:d0.5", space="smoke", name=name, storage=storage, num_samples=3))


def test_the_folder_appears_with_its_record_and_optuna_study(tmp_path: Path) -> None:
    paths, meta = _planned(tmp_path)
    with create_study(paths, meta, "maximize"):
        # Inside: the folder is in place, whole, and its driver lock is held (another driver is refused).
        assert StudyMeta.read(paths) == meta
        with pytest.raises(KDTuneError, match="being run by another kdtune process"), driver_lock(paths):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"], "the hidden staging folder is gone"
    study = load_optuna_study(paths)
    assert study.study_name == "s"
    attrs = study.user_attrs
    assert attrs["data"] == "builtin:d0.5" and attrs["fingerprint"] == meta.fingerprint
    assert attrs["protocol"] == "honest" and attrs["inner"] == "folds"
    assert attrs["space_name"] == "smoke" and attrs["objective"] == {"metric": "inner_acc", "mode": "max"}
    assert attrs["seeds"] == [0, 10] and attrs["num_samples"] == 3
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE


def test_a_folder_holding_only_a_lock_is_no_study_and_is_replaced(tmp_path: Path) -> None:
    paths, meta = _planned(tmp_path)
    paths.root.mkdir()
    (paths.root / LOCK_FILE).touch()
    assert is_unborn(paths)
    paths, meta = _planned(tmp_path)  # plan_study accepts it
    with create_study(paths, meta, "maximize"):
        pass
    assert not is_unborn(paths) and paths.meta.is_file()


def test_an_existing_study_is_never_replaced(tmp_path: Path) -> None:
    paths, meta = _planned(tmp_path)
    with create_study(paths, meta, "maximize"):
        pass
    before = paths.meta.read_bytes()
    with pytest.raises(KDTuneError, match="already exists"):
        _planned(tmp_path)
    with pytest.raises(KDTuneError, match="already exists"), create_study(paths, meta, "maximize"):
        pass
    assert paths.meta.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"], "no staging folder left behind"
