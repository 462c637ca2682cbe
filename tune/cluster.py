"""Starting (or joining) Ray quietly, on loopback, writing nothing into the user's home directory.

The environment must be in place before ``import ray``: some of it is read at import time.
- ``RAY_AUTH_TOKEN`` in the environment keeps Ray's token authentication on without Ray writing
  ``~/.ray/auth_token``; processes that join a cluster need the same token in their environment.
- The temp dir (sockets, logs, object spilling) is a fresh short folder under the system temp dir
  (Unix socket paths must stay under 108 characters), removed when kdtune stops the Ray it started;
  what a SIGKILLed driver left behind is reaped by the next local start (``reap_stale_sessions``).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tune.errors import KDTuneError

RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "token",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no CSV/JSON/TensorBoard logger files per trial
    "RAY_CHDIR_TO_TRIAL_DIR": "0",  # trials keep the driver's working directory
    "RAY_AIR_NEW_OUTPUT": "0",  # with verbose=0 the old output engine prints nothing
    "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",  # one line per failed trial from our callback, not a traceback
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "PYTHONWARNINGS": "ignore::DeprecationWarning",
}


def prepare_environment(local: bool) -> None:
    """Set Ray's environment for this process and its workers (call before importing ray).

    ``local``: Ray will be started here, bound to 127.0.0.1 only. On Linux ``ray.init(_node_ip_address=...)``
    is overridden by the machine's address and Ray's servers then listen on every interface;
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is what makes Ray take 127.0.0.1 and bind only there. It is
    not set when joining a cluster, whose nodes must reach each other.
    """
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))


TEMP_PREFIX = "kdt-ray-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale_sessions() -> int:
    """Stop what a killed kdtune left of its local Ray, and remove its temp dir; returns processes stopped.

    A driver killed with SIGKILL cannot stop the Ray it started; its agents (``ray::DashboardAgent``,
    ``ray::RuntimeEnvAgent``) outlive it, re-parented to init. They are found by their open files inside
    that driver's ``kdt-ray-*`` temp dir (whose session folder is named after the driver's PID), so only
    leftovers of dead kdtune drivers are touched.
    """
    root = Path(tempfile.gettempdir())
    stopped = 0
    for temp in root.glob(f"{TEMP_PREFIX}*"):
        sessions = [p for p in temp.glob("session_*") if p.is_dir() and not p.is_symlink()]
        pids = [int(p.name.rsplit("_", 1)[-1]) for p in sessions if p.name.rsplit("_", 1)[-1].isdigit()]
        if not pids or any(_pid_alive(pid) for pid in pids):
            continue
        prefix = str(temp) + os.sep
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                links = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
            except OSError:
                continue
            if any(link.startswith(prefix) for link in links):
                try:
                    os.kill(int(proc.name), signal.SIGKILL)
                    stopped += 1
                except OSError:
                    pass
        shutil.rmtree(temp, ignore_errors=True)
    return stopped


@dataclass
class RayHandle:
    """The Ray kdtune is using; ``stop()`` shuts down and cleans up only what kdtune started."""

    started: bool
    temp_dir: str | None
    cpus: float
    gpus: float

    def stop(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def start(address: str | None, *, num_cpus: int | None = None, num_gpus: int | None = None) -> RayHandle:
    """Start a local Ray bound to 127.0.0.1 (``address=None``) or join the cluster at ``address``."""
    prepare_environment(local=address is None)
    if address is None:
        reap_stale_sessions()
    # Tune keeps lock files under RAY_TMPDIR (default /tmp/_ray_lockfiles): keep them in our temp dir too.
    temp_dir = tempfile.mkdtemp(prefix=TEMP_PREFIX)
    os.environ["RAY_TMPDIR"] = temp_dir
    import ray

    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "logging_level": logging.ERROR, "configure_logging": True}
    if address is None:
        try:
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus, _temp_dir=temp_dir, **kwargs)
        except Exception as exc:  # noqa: BLE001 - ray.init fails in many ways; each is one line to the user
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise KDTuneError(f"could not start a local Ray: {exc}") from None
    else:
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            shutil.rmtree(temp_dir, ignore_errors=True)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            hint = ("" if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                    else "; if the cluster uses token authentication, set RAY_AUTH_TOKEN to its token")
            raise KDTuneError(f"could not join the Ray cluster at {address}: {first}{hint}") from None
    resources = ray.cluster_resources()
    return RayHandle(started=address is None, temp_dir=temp_dir,
                     cpus=float(resources.get("CPU", 0)), gpus=float(resources.get("GPU", 0)))
