"""Shared fixtures: one local Ray session (on loopback) for every test that needs Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Callable

import pytest

# Keep every Ray process on 127.0.0.1 (Ray on Linux then uses loopback as the node address).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray cluster with 2 CPUs, started once for the whole test session."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def spikerl_cmd() -> list[str]:
    """The ``spikerl`` command, run as a module of this interpreter."""
    return [sys.executable, "-m", "spikerl_ray.cli"]


def kill_when(driver: subprocess.Popen, ready: Callable[[], bool], timeout_s: float,
              interrupt: bool = False) -> None:
    """Waits until ``ready()`` while ``driver`` runs, then SIGKILLs its process group (the
    driver and the Ray it started; start it with ``start_new_session=True``), or with
    ``interrupt`` sends the driver SIGINT (Ctrl-C) and waits for it to end, killing the group
    only if it has not within 120 s. Fails if the driver ended first."""
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and driver.poll() is None and not ready():
            time.sleep(0.5)
        assert driver.poll() is None, "the run ended before it could be killed"
        if interrupt:
            driver.send_signal(signal.SIGINT)
            driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()


@pytest.fixture(scope="session")
def halfcheetah_observations():
    """Raw HalfCheetah observations along random-action episodes (tests/nir_cases.py)."""
    from nir_cases import halfcheetah_observations

    return halfcheetah_observations()
