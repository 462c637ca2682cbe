"""One study on a two-node Ray cluster started with ``ray start`` (head + worker, both on 127.0.0.1).

Token authentication stays on: ``RAY_AUTH_MODE=token`` and one ``RAY_AUTH_TOKEN`` are handed to the head, the
worker and the kdtune driver (``ray start`` reads the token from the environment; nothing is written to
``~/.ray``). Each node has one CPU, so two concurrent trials must use both nodes. Every process is started in
its own session with ``ray start --block`` and stopped by its process group and PIDs, never ``ray stop``
(which would stop other people's Ray on this machine).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cli_errors import assert_one_line_error

from tests.study_runs import child_env

pytestmark = pytest.mark.slow

# A trial must outlast the start of a worker process on the second node: Tune keeps one trial pending and
# hands it to the first node's actor again if that actor frees up first.
SPACE = """\
name: multinode-test
description: two seeds, tiny teachers, student epochs 200-250 (longer than a worker takes to start)
fixed:
  seeds: [0, 10]
  eval_every: 1
  teacher: {batch_size: 256, epochs: 5, patience: null}
  baseline: {batch_size: 256, epochs: 5, patience: null}
  student: {batch_size: 64, patience: null}
objective: {metric: inner_acc, mode: max}
knobs:
  kd.alpha: {type: float, low: 0.0, high: 1.0}
  kd.temperature: {type: float, low: 1.0, high: 20.0, log: true}
  student.epochs: {type: int, low: 200, high: 250}
"""
BIN = Path(sys.executable).parent


_TAKEN: set[int] = set()  # ports handed out by this module: never twice, though the kernel may reuse them


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports, none handed out before: their sockets are all held until the last is
    bound (ports asked for one at a time can come back equal, and Ray refuses two components on one port)."""
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            sock = socket.socket()
            socks.append(sock)
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port not in _TAKEN:
                ports.append(port)
    finally:
        for sock in socks:
            sock.close()
    _TAKEN.update(ports)
    return ports


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _processes() -> dict[int, tuple[int, str]]:
    """{pid: (ppid, cmdline)} of every live process, from /proc."""
    out: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _read(entry / "stat").decode(errors="replace")
            if ")" in stat and stat.rsplit(")", 1)[1].split()[0] != "Z":
                cmd = _read(entry / "cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
                out[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmd)
    return out


def _descendants(root: int) -> set[int]:
    procs = _processes()
    found: set[int] = set()
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        children = {pid for pid, (ppid, _) in procs.items() if ppid == parent} - found
        found |= children
        frontier.extend(children)
    return found


class TwoNodeCluster:
    """A head and a worker started with ``ray start --block``, each in its own session."""

    def __init__(self) -> None:
        # Short temp dirs: Ray's unix sockets live under them and need paths below 108 characters.
        self.base = Path(tempfile.mkdtemp(prefix="kmn-"))
        self.home = self.base / "home"
        self.home.mkdir()
        self.token = secrets.token_hex(32)
        self.env = child_env()
        self.tmp = self.base / "t"  # TMPDIR of the kdtune driver: where its kdt-ray-* temp dir goes
        self.tmp.mkdir()
        self.env.update(HOME=str(self.home), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token,
                        RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", TMPDIR=str(self.tmp))
        self.port = _free_ports(1)[0]
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[subprocess.Popen[bytes]] = []
        self.pids: set[int] = set()  # every process of the cluster seen so far

    def command(self, name: str, head: bool) -> list[str]:
        ports = iter(_free_ports(6))
        args = [str(BIN / "ray"), "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                "--memory", str(1024**3), "--object-store-memory", str(100 * 1024**2), "--disable-usage-stats",
                "--temp-dir", str(self.base / name),
                # Fixed, distinct free ports: two nodes on one machine must not both take Ray's default ports.
                "--node-manager-port", str(next(ports)), "--object-manager-port", str(next(ports)),
                "--dashboard-agent-listen-port", str(next(ports)),
                "--dashboard-agent-grpc-port", str(next(ports)),
                "--runtime-env-agent-port", str(next(ports)), "--metrics-export-port", str(next(ports)),
                "--min-worker-port", "0", "--max-worker-port", "0"]
        if head:
            return [*args, "--head", "--port", str(self.port), "--include-dashboard=false"]
        return [*args, "--address", self.address]

    def start_node(self, name: str, head: bool) -> None:
        log = self.base / f"{name}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(self.command(name, head), env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=self.base)
        self.nodes.append(proc)
        self.pids.add(proc.pid)
        deadline = time.monotonic() + 90
        while b"Ray runtime started" not in _read(log):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start ({name}) did not come up:\n{_read(log).decode()[-3000:]}")
            time.sleep(0.2)
        self.remember()

    def node_id(self, name: str) -> str:
        """The node id the raylet of node ``name`` logged when it started."""
        for log in (self.base / name).glob("session_*/logs/raylet.out"):
            found = re.search(r"Setting node ID node_id=([0-9a-f]+)", log.read_text(errors="replace"))
            if found:
                return found.group(1)
        raise AssertionError(f"no node id in the raylet log of node {name}")

    def remember(self) -> None:
        for proc in self.nodes:
            self.pids |= _descendants(proc.pid)

    def mine(self) -> set[int]:
        """Live processes of this cluster: recorded PIDs, and any process carrying this cluster's token."""
        needle = f"RAY_AUTH_TOKEN={self.token}".encode()
        live = _processes()
        return {pid for pid in live
                if pid in self.pids or needle in _read(Path(f"/proc/{pid}/environ")).split(b"\0")}

    def stop(self) -> set[int]:
        """SIGTERM each node's process group (worker first), SIGKILL what remains; return PIDs still alive."""
        self.remember()
        for proc in reversed(self.nodes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    # A worker drains in a second; a head left alone waits out a 30 s drain, so not for long.
                    proc.wait(10 if proc is not self.nodes[0] else 3)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(15)
        for pid in self.mine():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while self.mine() and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.mine()


@pytest.fixture(scope="module")
def cluster() -> Iterator[TwoNodeCluster]:
    c = TwoNodeCluster()
    try:
        c.start_node("h", head=True)
        c.start_node("w", head=False)
        yield c
    finally:
        c.stop()
        shutil.rmtree(c.base, ignore_errors=True)


def _kdtune(cluster: TwoNodeCluster, cwd: Path, *args: str, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "kdtune"), *args], check=False, env=env or cluster.env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def test_study_runs_on_both_nodes_of_a_ray_start_cluster(cluster: TwoNodeCluster, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    storage = tmp_path / "studies"  # one filesystem: every node of this cluster sees the study folder
    proc = _kdtune(cluster, tmp_path, "search", "--address", cluster.address, "--space", str(space), "--name", "mn",
                   "--storage", str(storage), "--num-samples", "4", "--no-pruning", "--json")
    cluster.remember()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome["trials"] == {"total": 4, "COMPLETE": 4}, outcome

    rows = pq.read_table(storage / "mn" / "results" / "trials.parquet").to_pylist()
    assert len(rows) == 4 and len({r["trial_id"] for r in rows}) == 4
    nodes = {r["node"] for r in rows}
    assert len(nodes) == 2, f"trials ran on {nodes}, expected both nodes of the cluster"
    # ... and they are the head and the worker started here (node id prefixes, as their raylets logged them).
    assert nodes == {cluster.node_id("h")[:12], cluster.node_id("w")[:12]}
    assert list(cluster.home.iterdir()) == [], "something wrote into HOME (e.g. ~/.ray/auth_token)"
    assert list(cluster.tmp.glob("kdt-ray-*")) == [], "the driver left its Ray temp dir"


def test_wrong_token_is_refused_with_one_line(cluster: TwoNodeCluster, tmp_path: Path) -> None:
    """Token authentication is really on: a driver with another token is turned away, clearly."""
    env = {**cluster.env, "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    proc = _kdtune(cluster, tmp_path, "search", "--address", cluster.address, "--space", "smoke", "--name", "x",
                   "--storage", str(tmp_path / "studies"), "--num-samples", "1", env=env, timeout=120)
    assert_one_line_error("search", proc.returncode, proc.stderr, "token")
    assert not (tmp_path / "studies").exists()


def test_cluster_stops_by_pid_leaving_nothing(cluster: TwoNodeCluster) -> None:
    left = cluster.stop()
    assert not left, f"processes of the cluster still running: {sorted(left)}"
