"""kdcore stays Ray-free and Optuna-free, and does no work at import time (STYLE items 4 and 5)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, logging, os, sys
env_before = dict(os.environ)
handlers_before = list(logging.getLogger().handlers)
import kdcore, kdcore.config, kdcore.data, kdcore.errors, kdcore.losses, kdcore.models
import kdcore.schedules, kdcore.experiment, kdcore.methods
print(json.dumps({
    "heavy": sorted(m for m in sys.modules if m.split(".")[0] in ("ray", "optuna")),
    "torch": "torch" in sys.modules,
    "env_changed": sorted(k for k in set(os.environ) | set(env_before)
                          if os.environ.get(k) != env_before.get(k)),
    "handlers_added": len(logging.getLogger().handlers) - len(handlers_before),
}))
"""


def test_importing_kdcore_leaves_ray_and_optuna_out() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["torch"] is True  # the probe really imported the engine
    assert report["heavy"] == []
    assert report["env_changed"] == []
    assert report["handlers_added"] == 0
