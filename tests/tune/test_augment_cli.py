"""``kdtune train`` on a CIFAR-10-format folder with the literature's crop-and-flip: it trains, and the
results record the augmentation each network trained with."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.kdcore.test_kdcore_sources import _write_cifar10

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
