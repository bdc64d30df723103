"""One energy monitor per node a run uses, as small Ray actors, read around every iteration."""

from __future__ import annotations

import time
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from spikerl_ray.energy.accounting import monitor_cpu_seconds, summarize, window_devices
from spikerl_ray.energy.node import NodeMonitor


class EnergyMeter:
    """Starts a :class:`~spikerl_ray.energy.node.NodeMonitor` actor on each node of
    ``node_pids`` (node id -> the run's process ids there), pinned to it, with ``num_cpus=0``
    and ``num_gpus=0`` (NVML sees the node's GPUs regardless of ``CUDA_VISIBLE_DEVICES``)."""

    def __init__(self, node_pids: dict[str, list[int]], estimate_cpu_watts: float | None,
                 intensity: float) -> None:
        remote = ray.remote(num_cpus=0, num_gpus=0, max_restarts=0)(NodeMonitor)
        self.intensity = intensity
        self.nodes = sorted(node_pids)
        self.monitors = [
            remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
                           ).remote(node_pids[node], estimate_cpu_watts, node=node)
            for node in self.nodes]
        self._start: list[dict[str, Any]] | None = None
        self._t0 = 0.0
        self.begin()  # waits for the monitors to start

    def _read(self) -> list[dict[str, Any]]:
        return ray.get([m.read.remote() for m in self.monitors])

    def begin(self) -> None:
        """Reads every node at the start of an iteration."""
        self._start = self._read()
        self._t0 = time.perf_counter()

    def end(self, env_steps: int) -> dict[str, Any]:
        """Reads every node at the end of an iteration; the window's energy columns, with the
        joules per node and device under ``devices``."""
        end = self._read()
        seconds = time.perf_counter() - self._t0
        devices = window_devices(self._start, end)
        return {**summarize(devices, seconds, env_steps, self.intensity),
                "energy_monitor_cpu_s": monitor_cpu_seconds(self._start, end),
                "window_s": seconds, "devices": devices}

    def track(self, places: list[tuple[str, int]]) -> None:
        """Adds processes (node id, pid), e.g. env runners Ray restarted, to the CPU-time
        estimate of their node's monitor. A process on a node without a monitor is not
        estimated (the node's RAPL and NVML readings, where available, include it)."""
        for node, monitor in zip(self.nodes, self.monitors):
            pids = [pid for where, pid in places if where == node]
            if pids:
                ray.get(monitor.track.remote(pids))

    def close(self) -> None:
        for monitor in self.monitors:
            ray.kill(monitor)
        self.monitors = []
