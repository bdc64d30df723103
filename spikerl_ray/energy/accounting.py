"""From monitor readings to the energy of a window and of a run: joules per node and device
with their source, watts, kWh, carbon, joules per 1,000 env steps. No Ray.

Every figure keeps its provenance: ``energy_basis`` is ``measured`` (RAPL, NVML), ``estimated``
(``--estimate-cpu-watts``), both, or ``unavailable``; the per-kind sources are in
``energy_cpu_source`` and ``energy_gpu_source``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

# World-average carbon intensity of electricity, 2019 (IEA Global Energy & CO2 Status Report
# 2019; carbontracker's default until its 2024 update; docs/methods.md).
DEFAULT_CARBON_INTENSITY = 475.0
# Named regions, gCO2e/kWh: Ember and Energy Institute via Our World in Data,
# "carbon-intensity-electricity", year 2024 (the EU: 2023, the latest year given), read
# 2026-11-28.
CARBON_REGIONS: dict[str, float] = {
    "world": DEFAULT_CARBON_INTENSITY,
    "us": 384.0,
    "eu": 237.0,
    "uk": 211.0,
    "france": 44.0,
    "germany": 344.0,
    "china": 560.0,
    "india": 708.0,
}

ENERGY_COLUMNS = (
    "energy_j", "energy_cpu_j", "energy_gpu_j", "energy_basis", "energy_cpu_source",
    "energy_gpu_source", "power_w", "energy_kwh", "co2e_kg", "energy_j_per_1k_steps",
    "energy_nodes", "energy_monitor_cpu_s",
)
ENERGY_FILE = "energy.json"
MEASURED_SOURCES = ("rapl", "nvml-counter", "nvml-power")


def carbon_intensity(value: str | float) -> float:
    """gCO2e/kWh from a number or a region name of :data:`CARBON_REGIONS`; ValueError
    otherwise."""
    if isinstance(value, str) and value.strip().lower() in CARBON_REGIONS:
        return CARBON_REGIONS[value.strip().lower()]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"carbon intensity must be gCO2e/kWh (a number >= 0) or one of "
                         f"{', '.join(CARBON_REGIONS)}; got {value!r}") from None
    if not number >= 0 or math.isinf(number):
        raise ValueError(f"carbon intensity must be a number >= 0, got {value!r}")
    return number


def window_devices(start: list[dict[str, Any]], end: list[dict[str, Any]]
                   ) -> list[dict[str, Any]]:
    """Per node and device, the joules between two rounds of monitor readings (one reading per
    node, same order) and their source."""
    devices = []
    for before, after in zip(start, end):
        first = {c["device"]: c for c in before["counters"]}
        for c in after["counters"]:
            b = first.get(c["device"])
            joules = (c["joules"] - b["joules"] if c["joules"] is not None and b is not None
                      and b["joules"] is not None else None)
            devices.append({"node": after["node"], "host": after.get("host", after["node"]),
                            "device": c["device"], "kind": c["kind"],
                            "joules": joules, "source": c["source"]})
    return devices


def monitor_cpu_seconds(start: list[dict[str, Any]], end: list[dict[str, Any]]) -> float:
    """CPU seconds the monitors themselves used between two rounds of readings."""
    return sum(a["monitor_cpu_s"] - b["monitor_cpu_s"] for b, a in zip(start, end))


def _sources(devices: list[dict[str, Any]], kind: str) -> str | None:
    found = sorted({d["source"] for d in devices if d["kind"] == kind})
    return "+".join(found) if found else None


def _basis(devices: list[dict[str, Any]]) -> str:
    have = {("measured" if d["source"] in MEASURED_SOURCES else "estimated")
            for d in devices if d["joules"] is not None}
    return "+".join(sorted(have)) if have else "unavailable"


def summarize(devices: list[dict[str, Any]], seconds: float, env_steps: int,
              intensity: float) -> dict[str, Any]:
    """The energy columns (:data:`ENERGY_COLUMNS`, less the monitors' CPU time) of a window or
    run. Sums cover the devices that have a figure; None where none has."""
    def total(kind: str | None) -> float | None:
        values = [d["joules"] for d in devices
                  if d["joules"] is not None and kind in (None, d["kind"])]
        return float(sum(values)) if values else None

    joules = total(None)
    kwh = joules / 3.6e6 if joules is not None else None
    return {
        "energy_j": joules,
        "energy_cpu_j": total("cpu"),
        "energy_gpu_j": total("gpu"),
        "energy_basis": _basis(devices),
        "energy_cpu_source": _sources(devices, "cpu"),
        "energy_gpu_source": _sources(devices, "gpu"),
        "power_w": joules / seconds if joules is not None and seconds > 0 else None,
        "energy_kwh": kwh,
        "co2e_kg": kwh * intensity / 1000.0 if kwh is not None else None,
        "energy_j_per_1k_steps": (joules * 1000.0 / env_steps
                                  if joules is not None and env_steps > 0 else None),
        "energy_nodes": len({d["node"] for d in devices}),
    }


class EnergyLedger:
    """A run's energy, summed over its iterations, kept in ``DIR/energy.json``."""

    def __init__(self, intensity: float = DEFAULT_CARBON_INTENSITY) -> None:
        self.intensity = intensity
        self.seconds = 0.0
        self.env_steps = 0
        self.iterations = 0
        self.monitor_cpu_s = 0.0
        self.devices: dict[str, dict[str, Any]] = {}

    def add(self, energy: dict[str, Any], env_steps: int) -> None:
        """Adds one iteration: ``energy`` is the ``energy`` entry of its result (its window's
        length in ``window_s``)."""
        self.seconds += energy["window_s"]
        self.env_steps += env_steps
        self.iterations += 1
        self.monitor_cpu_s += energy.get("energy_monitor_cpu_s") or 0.0
        for d in energy["devices"]:
            key = f"{d['node']}/{d['device']}"
            kept = self.devices.setdefault(key, {**d, "joules": None})
            if d["joules"] is not None:
                kept["joules"] = (kept["joules"] or 0.0) + d["joules"]
            if kept["joules"] is None:
                kept["source"] = d["source"]

    def to_dict(self) -> dict[str, Any]:
        devices = list(self.devices.values())
        return {"carbon_intensity_g_per_kwh": self.intensity, "seconds": self.seconds,
                "env_steps": self.env_steps, "iterations": self.iterations,
                **summarize(devices, self.seconds, self.env_steps, self.intensity),
                "energy_monitor_cpu_s": self.monitor_cpu_s, "devices": devices}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EnergyLedger":
        ledger = cls(data["carbon_intensity_g_per_kwh"])
        ledger.seconds, ledger.env_steps = data["seconds"], data["env_steps"]
        ledger.iterations, ledger.monitor_cpu_s = data["iterations"], data["energy_monitor_cpu_s"]
        ledger.devices = {f"{d['node']}/{d['device']}": d for d in data["devices"]}
        return ledger

    def write(self, path: str | Path) -> None:
        """Writes the ledger as JSON, atomically (a temporary file, then a rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(tmp, path)


def load_energy(run_dir: str | Path) -> dict[str, Any] | None:
    """A run folder's ``energy.json``, or None when it has none."""
    path = Path(run_dir) / ENERGY_FILE
    return json.loads(path.read_text()) if path.is_file() else None
