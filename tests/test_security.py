"""What Ray listens on, and who may talk to it, measured on real processes (docs/security.md).

- The embedded Ray of ``spikerl train``, run as from a plain shell (none of Ray's ``RAY_*``
  variables; its own empty home folder): every listening socket of the run's processes (the
  driver and its descendants) is on 127.0.0.1; the token file Ray reads is mode 0600; a client
  without the token is refused, one with it gets in.
- A head started as cluster/README.md starts one (``ray start --head
  --node-ip-address=127.0.0.1``, token auth on, every port given): its listening sockets, and
  how each answers a request without the token, are exactly docs/security.md's table.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import ray  # noqa: F401  (puts the psutil that Ray ships on sys.path)

# isort: split
import psutil

from spikerl_ray import session
from tests.fast_start import FAST_START_FLAGS
from tests.test_cluster_jobs import BIN, LoopbackCluster, _free_port

REPO = Path(__file__).resolve().parents[1]
SECURITY_DOC = REPO / "docs" / "security.md"
ALL_INTERFACES, LOOPBACK, MACHINE = "all interfaces", "127.0.0.1", "this machine's address"


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket of a process."""

    role: str
    pid: int
    ip: str
    port: int

    @property
    def where(self) -> str:
        """``127.0.0.1``, ``all interfaces`` or ``this machine's address``."""
        address = ipaddress.ip_address(self.ip)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if address.is_loopback:
            return LOOPBACK
        return ALL_INTERFACES if address.is_unspecified else MACHINE


def _role(proc: psutil.Process, roots: dict[int, str]) -> str:
    """The part a process plays in a Ray node (its name, or what its command line runs)."""
    if proc.pid in roots:
        return roots[proc.pid]
    name, command = proc.name(), " ".join(proc.cmdline())
    if name in ("gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent"):
        return name
    if name.startswith("ray::"):  # ray::IDLE, or an actor's or task's name
        return "worker"
    for part, role in (("ray.util.client.server", "Ray client server"),
                       ("autoscaler/_private/monitor.py", "autoscaler monitor"),
                       ("dashboard/dashboard.py", "dashboard")):
        if part in command:
            return role
    return name


class ProcessTree:
    """Processes started here and all their descendants, remembered as they appear, so that
    their sockets can be listed and every one of them stopped in the end."""

    def __init__(self) -> None:
        self.roots: dict[int, str] = {}
        self.seen: dict[int, psutil.Process] = {}

    def add(self, proc: subprocess.Popen, role: str) -> None:
        """Adds ``proc`` (a root) and, from the next :meth:`listeners` on, its descendants."""
        self.roots[proc.pid] = role
        self.seen[proc.pid] = psutil.Process(proc.pid)

    def listeners(self) -> set[Listener]:
        """The listening TCP sockets of the live processes of the tree, now."""
        for pid in list(self.roots):
            try:
                for child in psutil.Process(pid).children(recursive=True):
                    self.seen.setdefault(child.pid, child)
            except psutil.NoSuchProcess:
                pass
        found = set()
        for proc in self.seen.values():
            try:
                role = _role(proc, self.roots)
                for c in proc.net_connections(kind="inet"):
                    if c.status == psutil.CONN_LISTEN:
                        found.add(Listener(role, proc.pid, c.laddr.ip, c.laddr.port))
            except psutil.Error:  # ended meanwhile
                pass
        return found

    def kill_rest(self) -> None:
        """SIGKILL to every process of the tree still alive (checked by pid and start time)."""
        for proc in self.seen.values():
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


def _watch(tree: ProcessTree, ready: Callable[[set[Listener]], bool],
           timeout_s: float) -> set[Listener]:
    """Lists the tree's sockets every half second until ``ready(all seen so far)``, then for
    3 s more; returns all seen."""
    seen: set[Listener] = set()
    deadline, until = time.monotonic() + timeout_s, None
    while until is None or time.monotonic() < until:
        assert time.monotonic() < deadline, f"not ready after {timeout_s} s: {seen}"
        seen |= tree.listeners()
        if until is None and ready(seen):
            until = time.monotonic() + 3
        time.sleep(0.5)
    return seen


def _plain_env(**extra: str) -> dict[str, str]:
    """This environment without any of Ray's ``RAY_*`` variables, plus ``extra``."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | extra


# The ports of the metrics servers of Ray's autoscaler monitor and dashboard (44217 and 44227
# unless set), read by them from the environment.
METRIC_PORT_VARS = ("AUTOSCALER_METRIC_PORT", "DASHBOARD_METRIC_PORT")


def _metric_ports() -> dict[str, str]:
    """Ports of their own for those metrics servers (another Ray of this machine may hold the
    default ones)."""
    return {name: str(_free_port()) for name in METRIC_PORT_VARS}


def _table(heading: str) -> list[list[str]]:
    """The rows (cells without backticks) of the first table after ``heading`` in
    docs/security.md."""
    text = SECURITY_DOC.read_text()
    after = text[text.index(heading):]
    rows = []
    for line in after.splitlines()[1:]:
        if line.startswith("|"):
            rows.append([c.strip().replace("`", "") for c in line.strip("|").split("|")])
        elif rows:
            break
    return [r for r in rows[1:] if not set("".join(r)) <= set("-: ")]


# --- the embedded Ray of `spikerl train` -------------------------------------------------


_CONNECT = ("import ray; ray.init(address='127.0.0.1:{port}', log_to_driver=False); "
            "print('CPUs', ray.cluster_resources()['CPU'])")


def _clients(port: int, home: Path, stranger_home: Path) -> dict[str, tuple[str, str, int]]:
    """Drivers of local users trying to join the cluster at ``port``, at once: one whose home
    holds no token; the run's own user without ``RAY_AUTH_MODE=token`` (Ray then sends no
    token) and with it. All keep 127.0.0.1 as the address given, where the cluster listens;
    a refused one gives up after 3 tries. Returns each one's (stdout, stderr, exit status)."""
    code = _CONNECT.format(port=port)
    clients = {name: subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_plain_env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_NUM_REDIS_GET_RETRIES="3",
                       **env))
        for name, env in (("stranger", {"HOME": str(stranger_home)}),
                          ("owner, no token mode", {"HOME": str(home)}),
                          ("owner", {"HOME": str(home), "RAY_AUTH_MODE": "token"}))}
    return {name: (*c.communicate(timeout=120), c.returncode) for name, c in clients.items()}


@dataclass
class EmbeddedRun:
    """What a ``spikerl train`` run showed: its home folder, the sockets its processes
    listened on, the drivers that tried to join it, and whether it still ran after them."""

    home: Path
    listeners: set[Listener]
    clients: dict[str, tuple[str, str, int]]
    ran_on: bool


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> EmbeddedRun:
    """``spikerl train`` from a plain shell: its sockets listed from the start until it has
    written its first progress row, then drivers trying to join it; then stopped (Ctrl-C, then
    SIGKILL to whatever of it is left)."""
    tmp = tmp_path_factory.mktemp("embedded")
    home, out, log = tmp / "home", tmp / "run", tmp / "driver.log"
    home.mkdir()
    (tmp / "stranger").mkdir()
    tree = ProcessTree()
    with log.open("w") as err:
        driver = subprocess.Popen(
            [sys.executable, "-m", "spikerl_ray.cli", "train", "--method", "ann", "--env",
             "Pendulum-v1", "--steps", "1000000", "--warmup-steps", "500", "--eval-every",
             "100", "--eval-episodes", "1", "--no-progress", *FAST_START_FLAGS, "--out",
             str(out)],
            env=_plain_env(HOME=str(home), **_metric_ports()), cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    tree.add(driver, "driver")
    try:
        listeners = _watch(tree, lambda _: (out / "progress.csv").exists()
                           or driver.poll() is not None, 180)
        assert driver.poll() is None, log.read_text()[-3000:]
        gcs = next(s.port for s in listeners if s.role == "gcs_server")
        clients = _clients(gcs, home, tmp / "stranger")
        return EmbeddedRun(home, listeners, clients, driver.poll() is None)
    finally:
        driver.send_signal(signal.SIGINT)
        try:
            driver.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        tree.kill_rest()


def test_embedded_ray_listens_on_loopback_only(embedded):
    exposed = sorted((s.role, s.ip, s.port) for s in embedded.listeners if s.where != LOOPBACK)
    assert not exposed, f"listening beyond 127.0.0.1: {exposed}"
    documented = {row[0] for row in _table("### The embedded Ray")}
    assert {s.role for s in embedded.listeners} == documented


def test_embedded_ray_token_file_is_readable_by_its_owner_only(embedded):
    token = embedded.home / ".ray" / "auth_token"
    assert token.stat().st_mode & 0o777 == 0o600
    assert re.fullmatch(r"[0-9a-f]{64}", token.read_text())


def test_a_client_without_the_token_is_refused_and_one_with_it_gets_in(embedded):
    clients = dict(embedded.clients)
    out, err, status = clients.pop("owner")
    assert status == 0 and "CPUs" in out, err[-2000:]
    for name, (out, err, status) in clients.items():
        assert status != 0 and "InvalidAuthToken" in err, (name, err[-2000:])
    assert embedded.ran_on


def test_an_existing_token_file_is_kept_and_made_owner_only(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    token = tmp_path / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("a" * 64)
    token.chmod(0o644)
    session.protect_token(create=True)
    assert token.stat().st_mode & 0o777 == 0o600 and token.read_text() == "a" * 64


def test_embedded_ray_refuses_to_start_off_loopback():
    """Ray imported before ``keep_embedded_on_loopback``: ``init_ray`` refuses instead of
    starting a cluster on this machine's address."""
    code = "import ray; from spikerl_ray import session; session.init_ray(None)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=_plain_env(), cwd=REPO, timeout=120, check=False)
    assert result.returncode != 0
    assert "RuntimeError: Ray was imported before" in result.stderr, result.stderr[-2000:]


def test_loopback_is_asked_for_the_embedded_ray_only(monkeypatch):
    """Not when joining (``--address``, or ``RAY_ADDRESS`` as in a Ray job's entrypoint): a
    driver on 127.0.0.1 could not work with nodes on this machine's address."""
    for address, ray_address, expected in ((None, None, True), ("10.0.0.1:6379", None, False),
                                           (None, "10.0.0.1:6379", False)):
        monkeypatch.delenv(session.CLUSTER_ENV_VAR, raising=False)
        if ray_address:
            monkeypatch.setenv("RAY_ADDRESS", ray_address)
        else:
            monkeypatch.delenv("RAY_ADDRESS", raising=False)
        session.keep_embedded_on_loopback(address)
        assert (os.environ.get(session.CLUSTER_ENV_VAR) == "0") is expected


# --- a head started with `ray start` -----------------------------------------------------

# Each port the head is given, by the process and the name of the port in docs/security.md.
HEAD_PORTS = {
    "port": ("gcs_server", "GCS"),
    "node-manager-port": ("raylet", "node manager"),
    "object-manager-port": ("raylet", "object manager"),
    "dashboard-agent-listen-port": ("ray::DashboardAgent", "HTTP"),
    "dashboard-agent-grpc-port": ("ray::DashboardAgent", "gRPC"),
    "metrics-export-port": ("ray::DashboardAgent", "metrics"),
    "runtime-env-agent-port": ("ray::RuntimeEnvAgent", "HTTP"),
    "ray-client-server-port": ("Ray client server", "gRPC"),
    "dashboard-port": ("dashboard", "dashboard and job server"),
    "DASHBOARD_METRIC_PORT": ("dashboard", "metrics"),
    "AUTOSCALER_METRIC_PORT": ("autoscaler monitor", "metrics"),
}
# How a port is asked something without the token: a gRPC method of its server, or an HTTP
# path that is not one of Ray's public ones.
GRPC_PROBES = {
    ("gcs_server", "GCS"): "/ray.rpc.NodeInfoGcsService/GetAllNodeInfo",
    ("raylet", "node manager"): "/ray.rpc.NodeManagerService/GetNodeStats",
    ("raylet", "object manager"): "/ray.rpc.ObjectManagerService/Pull",
    ("ray::DashboardAgent", "gRPC"): "/ray.rpc.ReporterService/HealthCheck",
    ("Ray client server", "gRPC"): "/ray.rpc.RayletDriver/ClusterInfo",
    ("worker", "core worker"): "/ray.rpc.CoreWorkerService/GetCoreWorkerStats",
    ("driver", "core worker"): "/ray.rpc.CoreWorkerService/GetCoreWorkerStats",
}
HTTP_PROBES = {"metrics": "/metrics", "dashboard and job server": "/api/jobs/"}


class LoopbackHead(LoopbackCluster):
    """The head of cluster/README.md's cluster on one machine, alone, with every port given
    (so that each listening socket is known by its port), its processes in a tree."""

    def _start_nodes(self) -> None:
        self.tree = ProcessTree()
        self.ports = {name: _free_port() for name in HEAD_PORTS}
        self.ports.update(port=self.gcs, **{"dashboard-port": self.dashboard})
        self.env |= {name: str(self.ports[name]) for name in METRIC_PORT_VARS}
        self.temp_dirs = [tempfile.mkdtemp(prefix="rt", dir="/tmp")]
        flags = [f"--{name}={port}" for name, port in self.ports.items()
                 if name not in METRIC_PORT_VARS]
        head = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
             "--dashboard-host=127.0.0.1", "--num-cpus=1", "--disable-usage-stats",
             f"--temp-dir={self.temp_dirs[0]}", *flags],
            env=self.env, stdout=(self.logs / "head.log").open("w"), stderr=subprocess.STDOUT,
            start_new_session=True)
        self.procs.append(head)
        self.tree.add(head, "ray start")
        self._wait_for_dashboard()

    def port_of(self, s: Listener) -> tuple[str, str]:
        """(process, port) of a socket, as docs/security.md names them."""
        if s.role in ("worker", "driver"):
            return s.role, "core worker"
        named = [HEAD_PORTS[name] for name, port in self.ports.items() if port == s.port]
        assert named and named[0][0] == s.role, f"an unexpected socket: {s}"
        return named[0]

    def stop(self) -> None:
        """Stops the head (``LoopbackCluster.stop``), then whatever of its tree is left."""
        try:
            super().stop()
        finally:
            if hasattr(self, "tree"):
                self.tree.kill_rest()


def _grpc_refuses(host: str, port: int, method: str, token: str) -> bool:
    """Whether the gRPC server refuses ``method`` without the token (and takes it with)."""
    def call(metadata: tuple) -> grpc.StatusCode:
        with grpc.insecure_channel(f"{host}:{port}") as channel:
            stub = channel.unary_unary(method, request_serializer=lambda x: x,
                                       response_deserializer=lambda x: x)
            try:
                stub(b"", timeout=10, metadata=metadata)
                return grpc.StatusCode.OK
            except grpc.RpcError as exc:
                return exc.code()

    with_token = call((("authorization", f"Bearer {token}"),))
    assert with_token != grpc.StatusCode.UNAUTHENTICATED, (port, method)
    assert with_token != grpc.StatusCode.UNAVAILABLE, (port, method)
    return call(()) == grpc.StatusCode.UNAUTHENTICATED


def _http_refuses(host: str, port: int, path: str, token: str) -> bool:
    """Whether the HTTP server answers ``path`` with 401 without the token (and not with)."""
    def status(headers: dict[str, str]) -> int:
        request = urllib.request.Request(f"http://{host}:{port}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert status({"Authorization": f"Bearer {token}"}) != 401, (port, path)
    return status({}) == 401


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """The head, and a driver of the same user (token in its environment) that ran a task, so
    that workers listen too; ready when that task ran and every port given listens."""
    tmp = tmp_path_factory.mktemp("head")
    h, ran = LoopbackHead(tmp), tmp / "ran"
    try:
        driver = subprocess.Popen(
            [sys.executable, "-c",
             (f"import sys, ray; ray.init(address='127.0.0.1:{h.gcs}'); "
              "ray.get(ray.remote(lambda: None).remote()); "
              f"open({str(ran)!r}, 'w').close(); sys.stdin.read()")],
            env=h.env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        h.procs.append(driver)
        h.tree.add(driver, "driver")
        given = set(h.ports.values())
        h.listeners = _watch(
            h.tree, lambda seen: ran.exists() and given <= {s.port for s in seen}, 120)
        yield h
        driver.stdin.close()
    finally:
        h.stop()


def test_head_listens_beyond_loopback_exactly_as_documented(head):
    token = head.env["RAY_AUTH_TOKEN"]
    # Sockets on all interfaces are asked at the node's address, which Ray took instead of
    # the 127.0.0.1 it was given (its client server listens there).
    node = next(s.ip for s in head.listeners if s.where == MACHINE).removeprefix("::ffff:")
    found: dict[tuple[str, str], set[str]] = {}
    refused: dict[tuple[str, str], set[bool]] = {}
    for s in head.listeners:
        key = head.port_of(s)
        found.setdefault(key, set()).add(s.where)
        host = {LOOPBACK: "127.0.0.1", ALL_INTERFACES: node}.get(
            s.where, s.ip.removeprefix("::ffff:"))
        probe = (_grpc_refuses(host, s.port, GRPC_PROBES[key], token) if key in GRPC_PROBES
                 else _http_refuses(host, s.port, HTTP_PROBES.get(key[1], "/api/probe"),
                                    token))
        refused.setdefault(key, set()).add(probe)
    measured = {(process, port, " and ".join(sorted(where)),
                 "refused" if refused[process, port] == {True} else "answered")
                for (process, port), where in found.items()}
    documented = {tuple(row[:4]) for row in _table("### A head started with `ray start`")}
    assert measured == documented, (f"measured, not documented: {measured - documented}; "
                                    f"documented, not measured: {documented - measured}")
