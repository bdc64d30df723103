"""Job submission for real: a two-node Ray cluster started with ``ray start`` on 127.0.0.1,
``ray job submit --working-dir`` of a short ``spikerl train`` and of the smoke experiment, their
outputs checked, and the cluster stopped by the processes this test started.

Token authentication is on (``RAY_AUTH_MODE=token`` on every node and for ``ray job submit``,
which sends the token only then); the token is this cluster's own, given in ``RAY_AUTH_TOKEN``
(cluster/README.md says how a token reaches a submitting machine).
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
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_ports() -> list[str]:
    """Ports of the per-node agents, distinct for each node sharing this host."""
    return [f"--dashboard-agent-listen-port={_free_port()}",
            f"--dashboard-agent-grpc-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}"]


class LoopbackCluster:
    """A head and a worker node started with ``ray start --block`` in their own process
    groups, so that stopping them touches nothing else on the machine."""

    def __init__(self, tmp: Path) -> None:
        self.gcs, self.dashboard = _free_port(), _free_port()
        # A job's entrypoint runs with the PATH of the `ray start` that made the head.
        # Token authentication with a token of this cluster's own, passed in the environment
        # (Ray reads RAY_AUTH_TOKEN before ~/.ray/auth_token), so no file of the user's changes.
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.env.pop("RAY_ADDRESS", None)
        self.env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        self.procs: list[subprocess.Popen] = []
        self.logs = tmp
        try:
            self._start_nodes()
        except BaseException:
            self.stop()
            raise

    def _start_nodes(self) -> None:
        # Both nodes take --node-ip-address=127.0.0.1. RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
        # cannot be used here: `ray start --address` refuses to join with it ("multi-node
        # clusters are not supported"), and with it only on the head the worker cannot reach
        # the head. Without it Ray rewrites a bootstrap address of 127.0.0.1 to this machine's
        # own interface address, so the GCS is reached there: on this machine, never beyond.
        # Each node gets a temporary folder of its own (short: it holds Unix sockets). The
        # head's keeps its `ray_current_cluster` file away from /tmp/ray, where a later
        # `ray.init()` of this machine would find it and try to join this cluster; the
        # worker's keeps its runtime-env agent from cleaning up the head's unpacked working
        # dir in a shared session folder.
        self.temp_dirs = [tempfile.mkdtemp(prefix="rt", dir="/tmp") for _ in range(2)]
        self._start("head", {}, ["--head", f"--temp-dir={self.temp_dirs[0]}",
                                 f"--port={self.gcs}", "--dashboard-host=127.0.0.1",
                                 f"--dashboard-port={self.dashboard}", "--num-cpus=1",
                                 f"--ray-client-server-port={_free_port()}"])
        self._wait_for_dashboard()
        self._start("worker", {}, [f"--address=127.0.0.1:{self.gcs}", "--num-cpus=1",
                                   f"--temp-dir={self.temp_dirs[1]}"])
        self._wait_for_nodes(2)

    def _start(self, name: str, env: dict[str, str], args: list[str]) -> None:
        log = (self.logs / f"{name}.log").open("w")
        self.procs.append(subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1",
             "--disable-usage-stats", *_node_ports(), *args],
            env=self.env | env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def _wait_for_dashboard(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.dashboard), timeout=1).close()
                return
            except OSError:
                time.sleep(1)
        raise AssertionError(f"the head's dashboard did not come up: "
                             f"{(self.logs / 'head.log').read_text()[-2000:]}")

    def _wait_for_nodes(self, n: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.ray("list", "nodes", "--format=json", check=False)
            try:  # before a node registers, it prints "No resource in the cluster"
                nodes = json.loads(out.stdout) if out.returncode == 0 else []
            except ValueError:
                nodes = []
            if sum(node.get("state") == "ALIVE" for node in nodes) >= n:
                return
            time.sleep(2)
        raise AssertionError(f"fewer than {n} nodes came up")

    def ray(self, *args: str, check: bool = True, timeout: float = 900
            ) -> subprocess.CompletedProcess:
        """``ray ARGS --address DASHBOARD`` (before a ``--`` that starts an entrypoint)."""
        cut = args.index("--") if "--" in args else len(args)
        argv = [str(BIN / "ray"), *args[:cut], "--address",
                f"http://127.0.0.1:{self.dashboard}", *args[cut:]]
        return subprocess.run(argv, env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=check)

    def submit(self, entrypoint: list[str]) -> str:
        """Submits a job from this repository's folder, waits for it; returns its status."""
        submitted = self.ray("job", "submit", "--no-wait", "--working-dir", str(REPO),
                             "--submission-id", f"spikerl-{time.monotonic_ns()}", "--",
                             *entrypoint)
        job_id = next(line.split("'")[1] for line in submitted.stdout.splitlines()
                      if "submitted successfully" in line)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            status = self.ray("job", "status", job_id)
            # Terminal states print "Job 'ID' succeeded", "... failed", "... was stopped".
            done = re.search(r"Job '[^']+' (succeeded|failed|was stopped)",
                             status.stdout + status.stderr)
            if done:
                self.last_logs = self.ray("job", "logs", job_id).stdout
                return {"succeeded": "SUCCEEDED", "failed": "FAILED",
                        "was stopped": "STOPPED"}[done[1]]
            time.sleep(3)
        raise AssertionError(f"job {job_id} did not finish")

    def stop(self) -> None:
        """SIGTERM to each `ray start --block` (its reaper stops the node's processes), then
        whatever is left of the process groups this cluster started."""
        for proc in reversed(self.procs):
            proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for folder in getattr(self, "temp_dirs", []):
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LoopbackCluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


@pytest.mark.slow
def test_submitted_training_job_succeeds_and_writes_its_outputs(cluster, tmp_path):
    out = tmp_path / "run"
    state = cluster.submit(["spikerl", "train", "--method", "ann", "--env", "Pendulum-v1",
                            "--steps", "2000", "--warmup-steps", "500", "--eval-every", "1",
                            "--eval-episodes", "1", "--no-progress", "--out", str(out)])
    assert state == "SUCCEEDED", cluster.last_logs[-3000:]
    rows = (out / "progress.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2
    assert sorted(p.name for p in (out / "checkpoints").iterdir())[-1] == "iter_000002"
    assert (out / "checkpoints" / "iter_000002" / "spikerl_run.json").is_file()


@pytest.mark.slow
def test_submitted_tune_job_runs_the_smoke_experiment(cluster, tmp_path):
    state = cluster.submit(["spikerl", "tune", "tune_configs/smoke.yaml", "--out",
                            str(tmp_path)])
    assert state == "SUCCEEDED", cluster.last_logs[-3000:]
    trials = [p for p in (tmp_path / "smoke").iterdir() if (p / "result.json").is_file()]
    assert len(trials) == 4
    for trial in trials:
        last = json.loads((trial / "result.json").read_text().strip().splitlines()[-1])
        assert last["num_env_steps_sampled_lifetime"] >= 3000
