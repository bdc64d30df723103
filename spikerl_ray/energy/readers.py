"""Energy readers of one node, without Ray: NVML for GPUs, RAPL for CPUs, and the CPU time of
a set of processes for an estimate the user asks for.

Each reader reports :class:`Counter` values: joules accumulated since the reader was made,
with the source that produced them (docs/energy.md):

- ``nvml-counter``: ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since driver load; Volta+);
- ``nvml-power``: ``nvmlDeviceGetPowerUsage`` samples (mW) integrated by the trapezoid rule,
  for GPUs without the counter (``NVMLError_NotSupported``);
- ``rapl``: ``/sys/class/powercap/intel-rapl:N/energy_uj`` of the ``package-*`` zones and their
  ``dram`` sub-zones, wrap-around at ``max_energy_range_uj`` handled;
- ``unavailable: <reason>`` with no joules, never a zero passed off as a measurement.

Readers with a ``poll`` method want to be polled every fraction of a second (power samples,
RAPL wrap-around); :class:`~spikerl_ray.energy.node.NodeMonitor` does that on one thread.
"""

from __future__ import annotations

import importlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RAPL_ROOT = Path("/sys/class/powercap")


@dataclass(frozen=True)
class Counter:
    """Energy of one device accumulated since its reader started (``joules`` None when the
    device cannot be read; ``source`` then says why)."""

    device: str  # "gpu:<UUID>", "cpu:package-0", "cpu:package-0:dram", "cpu:processes"
    kind: str  # "gpu" or "cpu"
    joules: float | None
    source: str


def unavailable(reason: str) -> str:
    """The source label of a device that cannot be read."""
    return f"unavailable: {reason}"


class RaplReader:
    """CPU package (and DRAM) energy from Linux RAPL sysfs zones under ``root``.

    Top-level ``intel-rapl:N`` zones named ``package-*`` are read (``psys`` is skipped: it
    double-counts the packages), with their ``dram`` sub-zones where present. Since Linux 5.10
    ``energy_uj`` is readable by root only (CVE-2020-8694): then the source says
    ``unavailable: permission``.
    """

    def __init__(self, root: str | Path = RAPL_ROOT) -> None:
        self.zones: dict[str, Path] = {}
        root = Path(root)
        for zone in sorted(root.glob("intel-rapl:*")):
            if zone.name.count(":") != 1 or not _read_text(zone / "name").startswith("package"):
                continue
            package = _read_text(zone / "name")
            self.zones[f"cpu:{package}"] = zone
            for sub in sorted(zone.glob(f"{zone.name}:*")):
                if _read_text(sub / "name") == "dram":
                    self.zones[f"cpu:{package}:dram"] = sub
        self.status = "rapl" if self.zones else unavailable("absent")
        self._last: dict[str, int] = {}
        self._range: dict[str, int] = {}
        self._total_uj: dict[str, int] = {}
        try:
            for name, zone in self.zones.items():
                self._range[name] = int(_read_text(zone / "max_energy_range_uj"))
                self._last[name] = int(_read_text(zone / "energy_uj"))
                self._total_uj[name] = 0
        except PermissionError:
            self.status = unavailable("permission")
        except (OSError, ValueError) as exc:
            self.status = unavailable(f"unreadable ({exc})")

    def poll(self) -> None:
        """Adds each zone's increase since the last poll, across one wrap-around. A counter
        wraps in minutes at full load, so this must run more often than that."""
        if self.status != "rapl":
            return
        for name, zone in self.zones.items():
            now = int(_read_text(zone / "energy_uj"))
            delta = now - self._last[name]
            if delta < 0:  # wrapped at max_energy_range_uj
                delta += self._range[name]
            self._total_uj[name] += delta
            self._last[name] = now

    def read(self) -> list[Counter]:
        if self.status != "rapl":
            return [Counter("cpu:package", "cpu", None, self.status)]
        self.poll()
        return [Counter(name, "cpu", total / 1e6, "rapl")
                for name, total in self._total_uj.items()]


class NvmlReader:
    """Every GPU of the node through nvidia-ml-py (module ``pynvml``), by UUID.

    NVML ignores ``CUDA_VISIBLE_DEVICES``, so a monitor sees all GPUs of its node even inside
    a Ray actor with ``num_gpus=0``. ``nvml`` replaces the module (tests use a stand-in with
    the same calls and error classes).
    """

    def __init__(self, nvml: Any = None) -> None:
        self.devices: list[dict[str, Any]] = []
        self.status = "ok"
        try:
            self.nvml = nvml if nvml is not None else importlib.import_module("pynvml")
        except ImportError:
            self.nvml, self.status = None, unavailable("nvidia-ml-py not installed")
            return
        try:
            self.nvml.nvmlInit()
            count = self.nvml.nvmlDeviceGetCount()
        except self.nvml.NVMLError as exc:
            self.status = unavailable(_nvml_reason(self.nvml, exc))
            return
        if count == 0:
            self.status = unavailable("no GPU")
        for index in range(count):
            self.devices.append(self._open(index))

    def _open(self, index: int) -> dict[str, Any]:
        nvml = self.nvml
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        uuid = nvml.nvmlDeviceGetUUID(handle)
        uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
        device: dict[str, Any] = {"name": f"gpu:{uuid}", "handle": handle, "joules": 0.0}
        try:
            device["base_mj"] = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            device["source"] = "nvml-counter"
        except nvml.NVMLError_NotSupported:
            try:
                device["last"] = (time.monotonic(), nvml.nvmlDeviceGetPowerUsage(handle) / 1e3)
                device["source"] = "nvml-power"
            except nvml.NVMLError as exc:
                device["source"] = unavailable(_nvml_reason(nvml, exc))
        except nvml.NVMLError as exc:
            device["source"] = unavailable(_nvml_reason(nvml, exc))
        return device

    @property
    def needs_sampling(self) -> bool:
        """Whether a GPU's power must be sampled (no energy counter)."""
        return any(d["source"] == "nvml-power" for d in self.devices)

    def poll(self) -> None:
        """Integrates the power of GPUs without an energy counter since the last poll."""
        for device in self.devices:
            if device["source"] != "nvml-power":
                continue
            watts = self.nvml.nvmlDeviceGetPowerUsage(device["handle"]) / 1e3
            now = time.monotonic()
            then, last_watts = device["last"]
            device["joules"] += 0.5 * (watts + last_watts) * (now - then)
            device["last"] = (now, watts)

    def read(self) -> list[Counter]:
        if not self.devices:
            return [Counter("gpu", "gpu", None, self.status)]
        out = []
        for device in self.devices:
            source = device["source"]
            if source == "nvml-counter":
                now_mj = self.nvml.nvmlDeviceGetTotalEnergyConsumption(device["handle"])
                out.append(Counter(device["name"], "gpu", (now_mj - device["base_mj"]) / 1e3,
                                   source))
            elif source == "nvml-power":
                self.poll()
                out.append(Counter(device["name"], "gpu", device["joules"], source))
            else:
                out.append(Counter(device["name"], "gpu", None, source))
        return out

    def close(self) -> None:
        if self.nvml is not None and self.status == "ok":
            self.nvml.nvmlShutdown()


def _nvml_reason(nvml: Any, exc: Exception) -> str:
    """A short reason for an NVML error (the classes of nvidia-ml-py)."""
    for name, reason in (("NVMLError_LibraryNotFound", "NVML library not found"),
                         ("NVMLError_DriverNotLoaded", "NVIDIA driver not loaded"),
                         ("NVMLError_NoPermission", "permission"),
                         ("NVMLError_NotSupported", "not supported")):
        cls = getattr(nvml, name, None)
        if cls is not None and isinstance(exc, cls):
            return reason
    return f"NVML error ({exc})"


class ProcessCpuTime:
    """CPU seconds (user + system) used by a set of processes and their descendants, from
    ``/proc`` (Linux). Only increases are counted, per process, so a process that exits
    between readings loses at most its last window."""

    def __init__(self, pids: list[int] | tuple[int, ...] = (), proc: str | Path = "/proc"
                 ) -> None:
        self.proc = Path(proc)
        self.pids = list(pids)
        self._tick = os.sysconf("SC_CLK_TCK")
        self._last: dict[int, float] | None = None
        self.total_s = 0.0
        self.read()  # the baseline: CPU time used before now is not counted

    def _tree(self) -> dict[int, float]:
        """CPU seconds of every process under ``self.pids`` (one scan of /proc)."""
        children: dict[int, list[int]] = {}
        cpu: dict[int, float] = {}
        for entry in self.proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / self._tick
        wanted, frontier = set(), [p for p in self.pids if p in cpu]
        while frontier:
            pid = frontier.pop()
            if pid in wanted:
                continue
            wanted.add(pid)
            frontier += children.get(pid, [])
        return {pid: cpu[pid] for pid in wanted}

    def read(self) -> float:
        """CPU seconds used since this object was made (by processes started since then, all
        of theirs)."""
        tree = self._tree()
        if self._last is None:
            self._last = tree
        for pid, seconds in tree.items():
            self.total_s += max(0.0, seconds - self._last.get(pid, 0.0))
            self._last[pid] = seconds
        return self.total_s


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""
