"""kdcore stays Ray-free and Optuna-free, and does no work at import time (STYLE items 4 and 5)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, logging, os, sys
env_before = dict(os.environ)
handlers_before = list(logging.getLogger().handlers)
import importlib, pkgutil
import kdcore
for module in pkgutil.iter_modules(kdcore.__path__):
    importlib.import_module(f"kdcore.{module.name}")
for name in kdcore.__all__:
    getattr(kdcore, name)
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
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["torch"] is True  # the probe really imported the engine
    assert report["heavy"] == []
    assert report["env_changed"] == []
    assert report["handlers_added"] == 0


LIGHT = """
import json, sys
import kdcore
kdcore.safe_load, kdcore.ExperimentConfig, kdcore.KD_METHODS, kdcore.ConfigError, kdcore.one_line
print(json.dumps(sorted(m for m in ("torch", "numpy", "ray", "optuna", "pandas") if m in sys.modules)))
"""


def test_kdcore_public_api_is_lazy_so_the_cli_stays_light() -> None:
    """``import kdcore`` and its settings, errors and YAML names cost no torch (the CLI parses and checks its
    arguments before any heavy import)."""
    proc = subprocess.run([sys.executable, "-c", LIGHT], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_every_public_name_resolves_to_the_module_that_defines_it() -> None:
    import importlib

    import kdcore

    for name, (module, attribute) in kdcore.PUBLIC.items():
        value = getattr(importlib.import_module(module), attribute)
        assert getattr(kdcore, name) is value, name
        defined_in = getattr(value, "__module__", module)
        assert defined_in == module or not callable(value), f"{name}: {module} only imports it from {defined_in}"
