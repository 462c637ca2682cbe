"""Starting (or joining) Ray quietly, on loopback, writing nothing into the user's home directory.

The environment must be in place before ``import ray``: some of it is read at import time.
- ``RAY_AUTH_TOKEN`` in the environment keeps Ray's token authentication on without Ray writing
  ``~/.ray/auth_token``; processes that join a cluster need the same token in their environment.
- The temp dir (sockets, logs, object spilling) is a fresh short folder under the system temp dir
  (Unix socket paths must stay under 108 characters: a longer TMPDIR is refused with one line), removed
  when kdtune stops; what a SIGKILLed driver left behind is reaped by the next start (``reap_stale_sessions``).
- Joining a cluster (``--address``) is checked before ``ray.init`` (``check_cluster``): nobody listening,
  a port that is not a Ray head, or a wrong or missing token each give one line within seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdcore import one_line
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
    # Ray starts its workers at niceness 15: beside any normal-priority job they get a sliver of a core
    # (bench/reference_phase.py: the references took 36x longer with two busy processes on two cores).
    # Trials and references are the work here; set 15 again to make a study yield to everything else.
    "RAY_worker_niceness": "0",
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
OWNER_FILE = "kdtune.pid"  # in each temp dir: the PID of the kdtune driver that made it
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL
PROBE_TIMEOUT_S = 5.0


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
    that driver's ``kdt-ray-*`` temp dir, so only leftovers of dead kdtune drivers are touched. A temp dir
    is the dead driver's when every PID it names is gone: its ``kdtune.pid`` and its Ray session folders'
    (``session_<date>_<pid>``); one that names no PID is left alone. A driver that joined a cluster leaves
    only its temp dir (Tune's lock files), with no process to stop.
    """
    root = Path(tempfile.gettempdir())
    stopped = 0
    for temp in root.glob(f"{TEMP_PREFIX}*"):
        sessions = [p for p in temp.glob("session_*") if p.is_dir() and not p.is_symlink()]
        pids = [int(p.name.rsplit("_", 1)[-1]) for p in sessions if p.name.rsplit("_", 1)[-1].isdigit()]
        try:
            pids.append(int((temp / OWNER_FILE).read_text()))
        except (OSError, ValueError):
            pass  # made before kdtune wrote owner files, or this instant (mkdtemp, then the file)
        if not pids or any(_pid_alive(pid) for pid in pids):
            continue
        stopped += _kill_holders(temp)
        shutil.rmtree(temp, ignore_errors=True)
    return stopped


def _kill_holders(temp: Path) -> int:
    """SIGKILL every other process with a file open inside ``temp``; returns how many."""
    prefix = str(temp) + os.sep
    stopped = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
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
            if self.started:
                _skip_graceful_kill()
            ray.shutdown()
        if self.started and self.temp_dir:
            _kill_holders(Path(self.temp_dir))  # the agents a SIGKILLed raylet leaves (they hold files here)
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def _temp_root(local: bool) -> Path:
    """The folder kdtune's Ray temp dirs go in (TMPDIR); refused at once if Ray's socket paths would not fit.

    A local Ray puts its unix sockets at ``<temp dir>/session_<date>_<time>_<usec>_<driver pid>/sockets/``;
    a driver that joins a cluster keeps only Tune's lock files in its temp dir.
    """
    root = Path(tempfile.gettempdir())
    if local:
        tail = f"/{TEMP_PREFIX}XXXXXXXX/session_2026-01-01_00-00-00_000000_{os.getpid()}/sockets/plasma_store"
        over = len(str(root)) + len(tail) - SOCKET_PATH_MAX
        if over > 0:
            raise KDTuneError(f"the temp dir {root} is too long for Ray's unix socket paths ({len(str(root))} "
                              f"characters, at most {len(str(root)) - over}): set TMPDIR to a shorter folder")
    return root


def _make_temp_dir(local: bool) -> str:
    temp_dir = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=_temp_root(local))
    # Owner's PID: a temp dir of a driver that joined a cluster has no session folder to tell it by.
    Path(temp_dir, OWNER_FILE).write_text(str(os.getpid()))
    return temp_dir


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as a pair; anything else is refused with one line."""
    if "://" in address:
        raise KDTuneError(f"--address must be HOST:PORT of the cluster head's GCS (as `ray start --head` printed); "
                          f"Ray Client addresses (ray://) are not supported, but got {address!r}")
    host, sep, port = address.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise KDTuneError(f"--address must be HOST:PORT of the cluster's head (the address `ray start --head` "
                          f"printed, e.g. 10.0.0.1:6379), but got {address!r}")
    return host, int(port)


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send this process's file descriptor 2 (where Ray's C++ core logs) to ``path`` for a while."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with path.open("wb") as sink:
            os.dup2(sink.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_cluster(address: str, temp_dir: str) -> None:
    """Fail in seconds, with one line, where ``ray.init(address=...)`` would retry for minutes.

    1. Token authentication on and no usable token: Ray's C++ core aborts the process when it looks for one.
    2. Nobody listening: a TCP connect fails at once (Ray would retry the GCS ~20 times for ~40 s each);
       an unknown host or a silent one (a firewall) is said as such.
    3. Something listening that is not a Ray head, or a head that refuses our token: a GCS client with a
       short timeout says which (its C++ warnings are kept off the terminal).
    """
    where = f"could not join the Ray cluster at {address}"
    host, port = split_address(address)
    # Private Ray (ray._raylet): Ray 2.60 offers no public token lookup nor a GCS client with a timeout; the
    # public way (ray.init) retries for minutes or aborts the process.
    from ray._raylet import AuthenticationTokenLoader, InnerGcsClient  # type: ignore[attr-defined]
    from ray.exceptions import AuthenticationError

    if os.environ.get("RAY_AUTH_MODE", "disabled").lower() == "token":
        # Ray's own lookup (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token), asked before its C++ core
        # is: that one aborts the process when it finds no token.
        try:
            found, problem = bool(AuthenticationTokenLoader.instance().has_token()), ""
        except AuthenticationError as exc:
            found, problem = False, one_line(exc).split(". ")[0]
        if not found and "RAY_AUTH_TOKEN_PATH" in problem:
            raise KDTuneError(f"{where}: {problem}; set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the "
                              "cluster's token")
        if not found:
            raise KDTuneError(f"{where}: no token: set RAY_AUTH_TOKEN to the cluster's token (kdtune keeps Ray's "
                              "token authentication on; RAY_AUTH_MODE=disabled joins a cluster that has none)")
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except socket.gaierror as exc:
        raise KDTuneError(f"{where}: cannot resolve the host {host!r} ({exc.strerror or exc})") from None
    except TimeoutError:
        raise KDTuneError(f"{where}: no answer within {PROBE_TIMEOUT_S:g} s (a firewall, or the wrong host?)") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise KDTuneError(f"{where}: nobody answers there ({reason.lower()}); is the head running "
                          "(`ray start --head`) and is the port its GCS port?") from None

    log = Path(temp_dir) / "probe.log"
    asked = time.monotonic()
    gcs = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        with _stderr_to(log):
            # Ray 2.60 tries a few times within this timeout each; about 15 s in all for a silent port.
            InnerGcsClient.standalone(gcs, None, int(PROBE_TIMEOUT_S * 1000))
    except AuthenticationError:
        raise KDTuneError(f"{where}: the cluster refused our token: set RAY_AUTH_TOKEN to the token "
                          "the cluster was started with") from None
    except Exception as exc:  # noqa: BLE001 - what the GCS client raises is the answer; each is one line
        if "Timed out" in str(exc):
            raise KDTuneError(f"{where}: something answers there, but no Ray head replied within "
                              f"{time.monotonic() - asked:.0f} s; is this the GCS port of the head?") from None
        raise KDTuneError(f"{where}: {one_line(exc)}") from None
    finally:
        log.unlink(missing_ok=True)


def _skip_graceful_kill() -> None:
    """Make ``ray.shutdown`` SIGKILL the local Ray's processes at once: they were started with SIGTERM
    blocked (``start``), so its graceful SIGTERM would only wait a second per process (4 s a stop here).
    Private Ray API, hence guarded: without it, shutdown is just slower."""
    import ray

    node = getattr(getattr(ray, "_private", None) and ray._private.worker, "_global_node", None)
    kill = getattr(node, "kill_all_processes", None)
    if node is None or kill is None:
        return

    def kill_at_once(*args: Any, **kwargs: Any) -> Any:
        return kill(*args, **{**kwargs, "allow_graceful": False})

    node.kill_all_processes = kill_at_once


@contextlib.contextmanager
def _sigterm_blocked(main_thread: bool) -> Iterator[None]:
    """SIGTERM blocked in this thread (and so in every process started meanwhile), unblocked after."""
    if not main_thread:
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


@dataclass(frozen=True)
class ClusterSpec:
    """Where a study's Ray work runs: a local Ray of ``num_cpus`` CPUs (default every core) bound to
    127.0.0.1, or the cluster at ``address`` (whose own size counts)."""

    address: str | None = None
    num_cpus: int | None = None

    def __post_init__(self) -> None:
        if self.num_cpus is not None and self.num_cpus < 1:
            raise KDTuneError(f"--num-cpus must be >= 1, but got {self.num_cpus}")
        if self.num_cpus is not None and self.address is not None:
            raise KDTuneError("--num-cpus sizes the local Ray kdtune starts; with --address the cluster's own "
                              "size counts")
        if self.address is not None:
            split_address(self.address)


def start(spec: ClusterSpec, *, num_gpus: int | None = None) -> RayHandle:
    """Start a local Ray bound to 127.0.0.1 (``spec.address`` None) or join the cluster at ``spec.address``.

    Joining is checked first (``check_cluster``), so an unreachable head, a port that is not a Ray head or
    a wrong token costs seconds and one line, not minutes of Ray's retries. ``ray.init`` installs its own
    SIGTERM handler (``sys.exit`` at whatever line the driver is on); the caller's is put back after it.
    """
    address = spec.address
    prepare_environment(local=address is None)
    reap_stale_sessions()
    # Tune keeps lock files under RAY_TMPDIR (default /tmp/_ray_lockfiles): keep them in our temp dir too.
    temp_dir = _make_temp_dir(local=address is None)
    main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
        if address is not None:
            check_cluster(address, temp_dir)
        os.environ["RAY_TMPDIR"] = temp_dir
        import ray

        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": logging.ERROR, "configure_logging": True}
        try:
            if address is None:
                # The local Ray's processes inherit a blocked SIGTERM (as Ray blocks SIGINT in them): a
                # SIGTERM to the whole process group (Slurm, a terminal's job control) then stops only this
                # driver, which ends the study cleanly and shuts them down; killed with them, it would hang
                # on a dead GCS for a minute and die without a word.
                with _sigterm_blocked(main_thread):
                    # _temp_dir: private, but ray.init has no public way to place a local Ray's session.
                    ray.init(num_cpus=spec.num_cpus, num_gpus=num_gpus, _temp_dir=temp_dir, **kwargs)
                    if sigterm is not None:  # ours back before a SIGTERM that came meanwhile is delivered
                        signal.signal(signal.SIGTERM, sigterm)
            else:
                ray.init(address=address, **kwargs)
        except Exception as exc:  # noqa: BLE001 - ray.init fails in many ways; each is one line to the user
            what = "could not start a local Ray" if address is None else f"could not join the Ray cluster at {address}"
            raise KDTuneError(f"{what}: {one_line(exc)}") from None
    except BaseException:
        import ray

        if ray.is_initialized():  # stopped (Ctrl-C, SIGTERM) just after Ray came up: it must not outlive us
            ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    finally:
        if main_thread and sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)
    resources = ray.cluster_resources()
    return RayHandle(started=address is None, temp_dir=temp_dir,
                     cpus=float(resources.get("CPU", 0)), gpus=float(resources.get("GPU", 0)))
