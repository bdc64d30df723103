"""Energy readers, accounting, GPS-UP and operation counts, without Ray.

RAPL is faked by a sysfs tree in a temporary folder, NVML by a stand-in module with
nvidia-ml-py's calls and error classes; the real nvidia-ml-py is also exercised (on a machine
without a GPU it must say why it reads nothing).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from policies import build_actor
from policies.operations import PJ_PER_MAC, PJ_PER_SYNAPTIC_OP, inference_operations
from spikerl_ray.energy import readers
from spikerl_ray.energy.accounting import (
    CARBON_REGIONS,
    EnergyLedger,
    carbon_intensity,
    summarize,
    window_devices,
)
from spikerl_ray.energy.gpsup import CATEGORIES, category, carbon_equivalents, compare
from spikerl_ray.energy.gpsup import describe, plot_quadrant
from spikerl_ray.energy.node import NodeMonitor
from spikerl_ray.energy.readers import NvmlReader, ProcessCpuTime, RaplReader

# --- RAPL -------------------------------------------------------------------------------


def _zone(path: Path, name: str, energy_uj: int, max_uj: int = 1_000_000) -> Path:
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


def _set(zone: Path, energy_uj: int) -> None:
    (zone / "energy_uj").write_text(f"{energy_uj}\n")


def test_rapl_reads_packages_and_dram_skips_psys_and_handles_wraparound(tmp_path):
    pkg = _zone(tmp_path / "intel-rapl:0", "package-0", 900_000)
    dram = _zone(tmp_path / "intel-rapl:0" / "intel-rapl:0:0", "dram", 10)
    core = _zone(tmp_path / "intel-rapl:0" / "intel-rapl:0:1", "core", 10)
    psys = _zone(tmp_path / "intel-rapl:1", "psys", 0)
    reader = RaplReader(tmp_path)
    assert reader.status == "rapl"
    assert sorted(reader.zones) == ["cpu:package-0", "cpu:package-0:dram"]
    _set(pkg, 950_000)
    reader.poll()
    _set(pkg, 100_000)  # wrapped at 1,000,000 uJ: 50,000 to the top, then 100,000
    _set(dram, 2_000_010)
    _set(core, 5_000_000)
    _set(psys, 5_000_000)
    got = {c.device: c for c in reader.read()}
    assert got["cpu:package-0"].joules == pytest.approx(0.2)  # 50,000 + 150,000 uJ
    assert got["cpu:package-0:dram"].joules == pytest.approx(2.0)
    assert {c.source for c in got.values()} == {"rapl"}


def test_rapl_permission_and_absence_are_unavailable_not_zero(tmp_path, monkeypatch):
    assert RaplReader(tmp_path / "none").read() == [
        readers.Counter("cpu:package", "cpu", None, "unavailable: absent")]
    _zone(tmp_path / "intel-rapl:0", "package-0", 5)
    real = Path.read_text

    def root_only(self, *args, **kwargs):  # Linux >= 5.10: energy_uj is root-only
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", root_only)
    reading = RaplReader(tmp_path).read()
    assert [(c.joules, c.source) for c in reading] == [(None, "unavailable: permission")]


# --- NVML -------------------------------------------------------------------------------


def fake_nvml(*, counters: dict[int, list[float]] | None = None,
              powers: dict[int, list[float]] | None = None, init_error: str | None = None,
              ) -> SimpleNamespace:
    """A stand-in for nvidia-ml-py: the calls the reader makes, with its error classes.
    ``counters[i]``: successive energy readings (mJ) of GPU i; ``powers[i]``: successive
    power readings (mW) of a GPU without the counter."""
    class NVMLError(Exception):
        pass

    errors = {name: type(name, (NVMLError,), {}) for name in (
        "NVMLError_NotSupported", "NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded",
        "NVMLError_NoPermission")}
    counters, powers = counters or {}, powers or {}
    gpus = sorted(set(counters) | set(powers))

    def init() -> None:
        if init_error:
            raise errors[init_error]()

    def energy(handle: int) -> float:
        if handle not in counters:
            raise errors["NVMLError_NotSupported"]()
        return counters[handle].pop(0)

    return SimpleNamespace(
        NVMLError=NVMLError, **errors, nvmlInit=init, nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: len(gpus), nvmlDeviceGetHandleByIndex=lambda i: gpus[i],
        nvmlDeviceGetUUID=lambda h: f"GPU-{h:04d}".encode(),
        nvmlDeviceGetTotalEnergyConsumption=energy,
        nvmlDeviceGetPowerUsage=lambda h: powers[h].pop(0))


def test_nvml_counter_per_gpu_by_uuid():
    reader = NvmlReader(fake_nvml(counters={0: [1_000.0, 4_500.0], 1: [0.0, 250.0]}))
    got = [(c.device, c.joules, c.source) for c in reader.read()]
    assert got == [("gpu:GPU-0000", 3.5, "nvml-counter"), ("gpu:GPU-0001", 0.25, "nvml-counter")]
    assert not reader.needs_sampling


def test_nvml_without_counter_integrates_power(monkeypatch):
    clock = iter([0.0, 2.0, 3.0])
    monkeypatch.setattr(readers.time, "monotonic", lambda: next(clock))
    # 100 W at t=0, 200 W at t=2, 200 W at t=3: 300 J + 200 J by the trapezoid rule.
    reader = NvmlReader(fake_nvml(powers={0: [100_000.0, 200_000.0, 200_000.0]}))
    assert reader.needs_sampling
    reader.poll()
    [counter] = reader.read()
    assert (counter.joules, counter.source) == (pytest.approx(500.0), "nvml-power")


@pytest.mark.parametrize("error, reason", [
    ("NVMLError_LibraryNotFound", "unavailable: NVML library not found"),
    ("NVMLError_DriverNotLoaded", "unavailable: NVIDIA driver not loaded"),
    ("NVMLError_NoPermission", "unavailable: permission"),
])
def test_nvml_errors_say_why(error, reason):
    assert [(c.joules, c.source) for c in NvmlReader(fake_nvml(init_error=error)).read()] == [
        (None, reason)]


def test_nvml_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    assert NvmlReader().read()[0].source == "unavailable: nvidia-ml-py not installed"


def test_real_nvidia_ml_py_reads_or_says_why():
    counters = NvmlReader().read()
    assert counters and all(c.kind == "gpu" for c in counters)
    for c in counters:
        assert (c.joules is None) == c.source.startswith("unavailable: ")
        if c.joules is not None:  # a machine with a GPU
            assert c.source in ("nvml-counter", "nvml-power") and c.joules >= 0


# --- CPU time and the estimate ----------------------------------------------------------


_BURNER = ("import sys, time\n"
           "print('ready', flush=True)\n"
           "for line in sys.stdin:\n"
           "    end = time.process_time() + float(line)\n"
           "    while time.process_time() < end: pass\n"
           "    print('done', flush=True)\n")


@pytest.fixture
def burner():
    """A child process that burns as many CPU seconds as it is sent, then reports; a process
    of its own, so the Ray workers and threads of the test process do not count."""
    child = subprocess.Popen([sys.executable, "-c", _BURNER], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"

    def burn(seconds: float) -> None:
        child.stdin.write(f"{seconds}\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"

    burn.pid = child.pid
    yield burn
    child.kill()
    child.wait()


def test_process_cpu_time_counts_the_process_and_its_children(burner):
    clock = ProcessCpuTime([burner.pid])
    assert clock.read() == 0.0
    burner(0.3)
    own = clock.read()
    assert 0.25 <= own <= 0.45
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nt=time.process_time()+0.5\n"
                              "while time.process_time()<t: pass\ntime.sleep(30)"])
    clock = ProcessCpuTime([os.getpid()])  # the test process and its new child
    try:
        deadline = time.monotonic() + 20
        while clock.read() < 0.45 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert clock.read() >= 0.45  # the child's 0.5 s (plus its start-up)
    finally:
        child.kill()
        child.wait()


def test_node_monitor_estimates_only_when_asked_and_rapl_is_unreadable(tmp_path, burner):
    no_gpu = fake_nvml(init_error="NVMLError_LibraryNotFound")
    plain = NodeMonitor([burner.pid], rapl_root=tmp_path, nvml=no_gpu)
    assert [c["source"] for c in plain.read()["counters"] if c["kind"] == "cpu"] == [
        "unavailable: absent"]
    plain.close()
    monitor = NodeMonitor([burner.pid], estimate_cpu_watts=10.0, rapl_root=tmp_path,
                          nvml=no_gpu, node="n1")
    burner(0.3)
    reading = monitor.read()
    monitor.close()
    cpu = [c for c in reading["counters"] if c["kind"] == "cpu"]
    assert [(c["device"], c["source"]) for c in cpu] == [("cpu:processes", "estimate")]
    assert 2.5 <= cpu[0]["joules"] <= 4.5  # 10 W x 0.3 busy core-seconds (clock ticks)
    assert reading["node"] == "n1"
    # With RAPL readable the measurement is used and nothing is estimated.
    _zone(tmp_path / "intel-rapl:0", "package-0", 0)
    measured = NodeMonitor([os.getpid()], estimate_cpu_watts=10.0, rapl_root=tmp_path,
                           nvml=no_gpu)
    assert {c["source"] for c in measured.read()["counters"] if c["kind"] == "cpu"} == {"rapl"}
    measured.close()


def test_monitor_sampling_costs_under_one_percent_of_a_core(tmp_path):
    """The poll thread at its fastest (power sampling every 0.1 s) uses under 1% of a core:
    its CPU time over a quiet second, read from the thread's own clock in /proc."""
    _zone(tmp_path / "intel-rapl:0", "package-0", 0)
    powers = {0: [50_000.0] * 1000}
    monitor = NodeMonitor(rapl_root=tmp_path, nvml=fake_nvml(powers=powers))
    tid = monitor._thread.native_id
    stat = Path(f"/proc/self/task/{tid}/stat")

    def thread_cpu() -> float:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    before, t0 = thread_cpu(), time.monotonic()
    time.sleep(2.0)
    used, wall = thread_cpu() - before, time.monotonic() - t0
    monitor.close()
    assert used / wall < 0.01


# --- accounting -------------------------------------------------------------------------


def _reading(node: str, counters: list[tuple[str, str, float | None, str]], cpu_s: float
             ) -> dict:
    return {"node": node, "monitor_cpu_s": cpu_s, "counters": [
        {"device": d, "kind": k, "joules": j, "source": s} for d, k, j, s in counters]}


def test_window_and_summary_by_hand():
    start = [_reading("a", [("cpu:package-0", "cpu", 100.0, "rapl"),
                            ("gpu:G1", "gpu", 10.0, "nvml-counter")], 1.0),
             _reading("b", [("cpu:processes", "cpu", 0.0, "estimate"),
                            ("gpu", "gpu", None, "unavailable: no GPU")], 2.0)]
    end = [_reading("a", [("cpu:package-0", "cpu", 400.0, "rapl"),
                          ("gpu:G1", "gpu", 710.0, "nvml-counter")], 1.5),
           _reading("b", [("cpu:processes", "cpu", 600.0, "estimate"),
                          ("gpu", "gpu", None, "unavailable: no GPU")], 2.25)]
    devices = window_devices(start, end)
    assert [(d["node"], d["device"], d["joules"]) for d in devices] == [
        ("a", "cpu:package-0", 300.0), ("a", "gpu:G1", 700.0), ("b", "cpu:processes", 600.0),
        ("b", "gpu", None)]
    s = summarize(devices, seconds=10.0, env_steps=2000, intensity=500.0)
    assert s["energy_j"] == 1600.0 and s["energy_cpu_j"] == 900.0 and s["energy_gpu_j"] == 700.0
    assert s["energy_basis"] == "estimated+measured"
    assert s["energy_cpu_source"] == "estimate+rapl"
    assert s["energy_gpu_source"] == "nvml-counter+unavailable: no GPU"
    assert s["power_w"] == 160.0 and s["energy_j_per_1k_steps"] == 800.0
    assert s["energy_kwh"] == pytest.approx(1600 / 3.6e6)
    assert s["co2e_kg"] == pytest.approx(1600 / 3.6e6 * 0.5)
    assert s["energy_nodes"] == 2
    nothing = summarize([devices[-1]], 10.0, 2000, 500.0)
    assert nothing["energy_j"] is None and nothing["energy_basis"] == "unavailable"


def test_ledger_sums_iterations_and_round_trips(tmp_path):
    ledger = EnergyLedger(intensity=100.0)
    device = {"node": "a", "host": "h", "device": "cpu:processes", "kind": "cpu",
              "source": "estimate"}
    for joules in (10.0, 30.0):
        ledger.add({"window_s": 2.0, "energy_monitor_cpu_s": 0.01,
                    "devices": [{**device, "joules": joules}]}, env_steps=1000)
    ledger.write(tmp_path / "energy.json")
    data = json.loads((tmp_path / "energy.json").read_text())
    assert (data["energy_j"], data["seconds"], data["env_steps"]) == (40.0, 4.0, 2000)
    assert data["power_w"] == 10.0 and data["energy_basis"] == "estimated"
    again = EnergyLedger.from_dict(data)
    again.add({"window_s": 1.0, "devices": [{**device, "joules": 5.0}]}, env_steps=500)
    assert again.to_dict()["energy_j"] == 45.0 and again.iterations == 3


def test_carbon_intensity_numbers_regions_and_bad_values():
    assert carbon_intensity("475") == 475.0 and carbon_intensity(0) == 0.0
    assert carbon_intensity("France") == CARBON_REGIONS["france"]
    for bad in ("-1", "mars", "nan", "inf"):
        with pytest.raises(ValueError, match="carbon intensity"):
            carbon_intensity(bad)


# --- GPS-UP -----------------------------------------------------------------------------


def test_spikerl_published_speedup_and_powerup_are_green():
    # SpikeRL (ICONS 2025): 1.48x Speedup at 0.98x Powerup.
    assert 1.48 / 0.98 == pytest.approx(1.51, abs=0.005)
    assert category(1.48, 0.98) == 1 and CATEGORIES[1][0] == "green"


@pytest.mark.parametrize("speedup, powerup, expected", [
    (1.5, 0.8, 1), (1.5, 1.005, 2), (2.0, 1.5, 3), (0.9, 0.5, 4), (1.0, 0.5, 4),
    (1.2, 1.5, 5), (1.0, 1.5, 8), (0.5, 0.8, 6), (0.8, 1.0, 7), (0.8, 1.2, 8),
    (1.005, 0.995, None)])
def test_every_gpsup_category(speedup, powerup, expected):
    assert category(speedup, powerup) == expected
    if expected:
        assert CATEGORIES[expected][0] == ("green" if speedup / powerup > 1 else "red")


def test_carbon_equivalents_use_the_epa_factors():
    eq = carbon_equivalents(8.887)
    assert eq["gallons"] == pytest.approx(1.0)
    assert eq["miles"] == pytest.approx(8.887 / 0.393)
    assert eq["household_years"] == pytest.approx(8.887 / 4798.0)


def _run(seconds: float, joules: float | None, steps: int, basis: str = "measured") -> dict:
    kwh = joules / 3.6e6 if joules is not None else None
    return {"seconds": seconds, "energy_j": joules, "env_steps": steps, "energy_basis": basis,
            "co2e_kg": kwh * 0.475 if kwh is not None else None,
            "carbon_intensity_g_per_kwh": 475.0}


def test_compare_two_runs_per_env_step(tmp_path):
    # The new run did twice the steps in 1.5x the time at (2000/150)/(1000/100) = 1.33x power.
    result = compare(_run(100.0, 1000.0, 1000), _run(150.0, 2000.0, 2000))
    assert result["speedup"] == pytest.approx(100 / 75)
    assert result["powerup"] == pytest.approx((2000 / 150) / (1000 / 100))
    assert result["greenup"] == pytest.approx(1.0)  # 1 J per step each
    assert result["carbon_saved_percent"] == pytest.approx(0.0, abs=1e-9)
    lines = describe(result)
    assert all("[" in line for line in lines) and "energy measured" in lines[1]
    png = plot_quadrant(result, tmp_path / "q.png", ("base", "new"))
    assert png.stat().st_size > 1000
    with pytest.raises(ValueError, match="no energy figures"):
        compare(_run(100.0, None, 1000, "unavailable"), _run(1.0, 1.0, 1))


# --- operations per inference -----------------------------------------------------------


def test_synaptic_operations_of_a_tiny_network_by_hand():
    """obs 1 -> encoder 2 -> hidden 3 -> output 2 (1 action x 2) -> decoder, T = 2."""
    actor = build_actor("popsan", 1, 1, hidden=(3,), encoder_pop=2, decoder_pop=2, timesteps=2)
    obs = torch.zeros(4, 1)
    with torch.no_grad():
        actor.encoder.mean.zero_()  # each encoder neuron's activation is exp(0) = 1
        actor.encoder.std.fill_(1.0)
        for layer in actor.layers:
            layer.fc.weight.zero_()
            layer.fc.bias.fill_(10.0)  # far above threshold: every neuron fires every step
    _, counts = actor(obs, return_spikes=True)
    ops = inference_operations(actor, counts, batch=4)
    # Per inference and timestep: 2 encoder spikes x 3 synapses, 3 hidden spikes x 2, and
    # 2 output spikes into the decoder x 1; over T = 2. The decoder weighs 2 rates: 2 MACs.
    assert ops["synaptic_ops"] == 2 * (2 * 3 + 3 * 2 + 2 * 1)
    assert ops["macs"] == 2
    assert ops["inference_energy_pj"] == pytest.approx(28 * PJ_PER_SYNAPTIC_OP + 2 * PJ_PER_MAC)
    with torch.no_grad():
        for layer in actor.layers:
            layer.fc.bias.fill_(-10.0)  # silent: only the encoder's spikes reach synapses
    _, counts = actor(obs, return_spikes=True)
    assert inference_operations(actor, counts, batch=4)["synaptic_ops"] == 2 * (2 * 3)


def test_macs_of_the_ann_and_of_dsrls_current_input_layer():
    ann = build_actor("ann", 3, 2, hidden=(4,))
    assert inference_operations(ann, {}, batch=1) == {
        "synaptic_ops": 0.0, "macs": 3 * 4 + 4 * 2, "inference_energy_pj": 20 * PJ_PER_MAC}
    dsrl = build_actor("dsrl", 3, 2, hidden=(4, 5), timesteps=2)
    with torch.no_grad():
        for layer in dsrl.layers:
            layer.fc.weight.zero_()
            layer.fc.bias.fill_(-10.0)  # silent hidden layers
    _, counts = dsrl(torch.ones(1, 3), return_spikes=True)
    ops = inference_operations(dsrl, counts, batch=1)
    # Two-neuron coding presents 6 currents at each of 2 timesteps to 4 neurons: dense MACs.
    assert ops == {"synaptic_ops": 0.0, "macs": 2 * 6 * 4,
                   "inference_energy_pj": 48 * PJ_PER_MAC}
    assert not math.isnan(ops["macs"])
