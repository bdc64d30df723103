"""Shared fixtures: one local Ray session (on loopback) for every test that needs Ray."""

from __future__ import annotations

import os
import sys

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
