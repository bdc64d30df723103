"""The energy monitor of one node, without Ray: its readers and the thread that polls them.

:class:`~spikerl_ray.energy.meter.EnergyMeter` runs one of these per node as a small Ray actor
(``num_cpus=0, num_gpus=0``); it runs as well in a plain process (``benchmarks/energy_check.py``).
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from spikerl_ray.energy.readers import (
    RAPL_ROOT,
    Counter,
    NvmlReader,
    ProcessCpuTime,
    RaplReader,
)

# Poll periods. NVML refreshes power and its energy counter about every 100 ms (NVML's docs),
# so sampling power faster adds nothing; a RAPL package counter (range ~262 kJ) takes minutes
# to wrap even at a few hundred watts, so once a second is ample.
POWER_POLL_S = 0.1
RAPL_POLL_S = 1.0


class NodeMonitor:
    """Reads this node's GPUs (NVML) and CPU packages (RAPL). With ``estimate_cpu_watts`` and
    no readable RAPL, charges that many watts per busy core of the processes ``pids`` (and
    their children), labelled ``estimate``; nothing is estimated otherwise. ``node`` labels
    the readings (the Ray node id under Ray; the host name by default)."""

    def __init__(self, pids: list[int] | tuple[int, ...] = (),
                 estimate_cpu_watts: float | None = None, rapl_root: str | Path = RAPL_ROOT,
                 nvml: Any = None, node: str | None = None) -> None:
        self.node = node or socket.gethostname()
        self.host = socket.gethostname()
        self.rapl = RaplReader(rapl_root)
        self.nvml = NvmlReader(nvml)
        self.estimate_cpu_watts = estimate_cpu_watts
        self.processes = (ProcessCpuTime(pids) if estimate_cpu_watts and
                          self.rapl.status != "rapl" else None)
        self._own_cpu_s = 0.0  # CPU time of polling and reading, per thread (thread_time)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        period = POWER_POLL_S if self.nvml.needs_sampling else RAPL_POLL_S
        self._thread = None
        if self.nvml.needs_sampling or self.rapl.status == "rapl":
            self._thread = threading.Thread(target=self._poll, args=(period,), daemon=True,
                                            name="energy-poll")
            self._thread.start()

    def _poll(self, period: float) -> None:
        while not self._stop.wait(period):
            t0 = time.thread_time()
            with self._lock:
                self.rapl.poll()
                self.nvml.poll()
                self._own_cpu_s += time.thread_time() - t0

    def track(self, pids: list[int]) -> None:
        """Adds processes to those whose CPU time is estimated (all their CPU time so far
        counts in the next reading); nothing without an estimate."""
        if self.processes is not None:
            with self._lock:
                self.processes.pids += pids

    def read(self) -> dict[str, Any]:
        """Every device's accumulated joules and source, and the CPU seconds this monitor has
        used (polling and reading)."""
        t0 = time.thread_time()
        with self._lock:
            counters = self.rapl.read() + self.nvml.read()
            if self.processes is not None:
                cpu_s = self.processes.read()
                counters = [c for c in counters if c.kind != "cpu"] + [Counter(
                    "cpu:processes", "cpu", cpu_s * self.estimate_cpu_watts, "estimate")]
            self._own_cpu_s += time.thread_time() - t0
            own = self._own_cpu_s
        return {"node": self.node, "host": self.host, "counters": [asdict(c) for c in counters],
                "monitor_cpu_s": own}

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.nvml.close()
