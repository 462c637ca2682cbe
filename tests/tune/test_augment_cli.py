"""``kdtune train`` on a CIFAR-10-format folder with the literature's crop-and-flip: it trains, and the
results record the augmentation each network trained with and the folder's normalisation; a bad
normalisation is one line; a study records the folder with its normalisation named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_errors import assert_one_line_error

from tests.kdcore.test_kdcore_sources import _write_cifar10
from tune.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_train_on_a_cifar10_folder_with_crop_and_flip_records_it(tmp_path: Path) -> None:
    _write_cifar10(tmp_path / "cifar")
    net = {"model": "cnn", "channels": [4, 8], "epochs": 1, "batch_size": 16, "augment": "crop_flip"}
    config = {"seeds": [0, 10], "protocol": "seed", "teacher": net, "baseline": net, "student": net,
              "kd": {"method": "hinton", "alpha": 0.5, "temperature": 4.0}}
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(config))
    proc = subprocess.run([sys.executable, "-m", "tune.cli", "train", "--data", str(tmp_path / "cifar"),
                           "--config", str(path), "--json", "--quiet"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert {result["config"][role]["augment"] for role in ("baseline", "teacher", "student")} == {"crop_flip"}
    assert set(result["methods"]) == {"baseline", "teacher_0", "student"}
    assert all(0.0 <= m["holdout_acc_mean"] <= 1.0 for m in result["methods"].values())
    assert result["data"]["source"] == f"{(tmp_path / 'cifar').resolve()}:normalise=standard"


def test_a_bad_normalisation_of_a_cifar_folder_is_one_line_and_exit_2(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    _write_cifar10(tmp_path / "cifar")
    rc = main(["train", "--data", f"{tmp_path / 'cifar'}:normalise=per-image", "--epochs", "1", "--seeds", "0"])
    captured = capsys.readouterr()
    assert_one_line_error("train", rc, captured.err, "normalise must be one of ['standard', 'computed']",
                          "'per-image'", out=captured.out)


def test_a_study_on_a_cifar_folder_records_its_normalisation(tmp_path: Path) -> None:
    from tune.plan import SearchSettings, plan_study

    _write_cifar10(tmp_path / "cifar")
    folder = (tmp_path / "cifar").resolve()
    metas = {}
    for name, spec in (("standard", str(tmp_path / "cifar")), ("computed", f"{tmp_path / 'cifar'}:normalise=computed")):
        _, metas[name] = plan_study(SearchSettings(data=spec, space="smoke", name=name, storage=tmp_path / "s",
                                                   num_samples=1))
    assert metas["standard"].data == f"{folder}:normalise=standard"  # the default, named: a resume loads the same
    assert metas["computed"].data == f"{folder}:normalise=computed"
    assert metas["standard"].fingerprint != metas["computed"].fingerprint  # so teacher-cache keys differ too


def test_a_cifar_study_of_an_older_kdtune_still_loads_what_its_trials_trained_on(tmp_path: Path) -> None:
    """Before the literature's constants became the default, a study recorded a CIFAR folder as its bare path
    and kdtune standardised it with the training images' statistics: reading such a record gives the spec
    that loads those arrays again, so a resume or `train --from` never mixes in other inputs."""
    import json as _json

    import kdcore
    from tune.plan import SearchSettings, plan_study
    from tune.study import StudyMeta

    _write_cifar10(tmp_path / "cifar")
    folder = (tmp_path / "cifar").resolve()
    paths, meta = plan_study(SearchSettings(data=f"{folder}:normalise=computed", space="smoke", name="old",
                                            storage=tmp_path / "s", num_samples=1))
    paths.root.mkdir(parents=True)
    meta.write(paths)
    assert StudyMeta.read(paths) == meta  # a record of this kdtune reads as written
    record = _json.loads(paths.meta.read_text())
    record["data"] = str(folder)  # as an older kdtune wrote it
    paths.meta.write_text(_json.dumps(record))
    old = StudyMeta.read(paths)
    assert old.data == f"{folder}:normalise=computed"
    assert kdcore.load_data(old.data).fingerprint() == old.fingerprint
