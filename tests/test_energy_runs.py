"""Energy end to end on a real local Ray: monitors during real trainings, ``energy.json``,
labelled ``progress.csv`` columns, spike statistics from ``spikerl evaluate --json``, and
``spikerl energy`` comparing two real runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from spikerl_ray.cli import main
from spikerl_ray.energy.readers import RaplReader
from tests.fast_start import FAST_START_FLAGS

TRAIN = ["train", "--env", "Pendulum-v1", "--warmup-steps", "500", "--eval-every", "2",
         "--eval-episodes", "1", "--no-progress", *FAST_START_FLAGS]
# What the CPU figures rest on here: RAPL where readable (root on bare metal), else the
# estimate the runs ask for.
CPU_SOURCE = "rapl" if RaplReader().status == "rapl" else "estimate"


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "progress.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ray_session) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("energy")
    out = {"spikerl": root / "spikerl", "ann": root / "ann", "plain": root / "plain"}
    for name in ("spikerl", "ann"):
        assert main([*TRAIN, "--method", name, "--steps", "2000", "--estimate-cpu-watts", "10",
                     "--carbon-intensity", "france", "--out", str(out[name])]) == 0
    assert main([*TRAIN, "--method", "ann", "--steps", "1000", "--out", str(out["plain"])]) == 0
    return out


@pytest.mark.slow
def test_training_writes_labelled_energy_columns_and_energy_json(runs):
    rows = _rows(runs["spikerl"])
    for row in rows:
        assert row["energy_cpu_source"] == CPU_SOURCE
        assert row["energy_gpu_source"].startswith("unavailable: ") or "nvml" in \
            row["energy_gpu_source"]
        assert row["energy_basis"] == ("measured" if CPU_SOURCE == "rapl" else "estimated")
        joules, power = float(row["energy_j"]), float(row["power_w"])
        assert joules > 0 and 0 < power < 10 * 64  # at most 10 W on each of 64 cores
        assert float(row["energy_j_per_1k_steps"]) == pytest.approx(joules, rel=1e-6)
        assert float(row["co2e_kg"]) == pytest.approx(float(row["energy_kwh"]) * 0.044)
        assert int(row["energy_nodes"]) == 1
        assert float(row["energy_monitor_cpu_s"]) >= 0
        # Operation counts of the spiking actor, every iteration.
        assert float(row["synaptic_ops"]) > 0 and float(row["inference_energy_pj"]) > 0
    energy = json.loads((runs["spikerl"] / "energy.json").read_text())
    assert energy["env_steps"] == 2000 and energy["iterations"] == len(rows)
    assert energy["energy_j"] == pytest.approx(sum(float(r["energy_j"]) for r in rows))
    assert energy["carbon_intensity_g_per_kwh"] == 44.0
    # Without the estimate, an unreadable CPU is reported as such, never as zero joules.
    plain = _rows(runs["plain"])
    if CPU_SOURCE == "estimate":
        assert {r["energy_cpu_source"] for r in plain} == {"unavailable: absent"} or all(
            r["energy_cpu_source"].startswith("unavailable: ") for r in plain)
        assert {r["energy_j"] for r in plain} == {""}
        assert {r["energy_basis"] for r in plain} == {"unavailable"}


@pytest.mark.slow
def test_evaluate_json_reports_spike_statistics(runs, capsys):
    checkpoint = sorted((runs["spikerl"] / "checkpoints").iterdir())[-1]
    assert main(["evaluate", str(checkpoint), "--episodes", "1", "--json"]) == 0
    spikes = json.loads(capsys.readouterr().out)["spikes"]
    assert 0 < spikes["rate_hidden0"] < 1 and spikes["synaptic_ops"] > 0
    assert spikes["inference_energy_pj"] == pytest.approx(
        0.9 * spikes["synaptic_ops"] + 4.6 * spikes["macs"])
    assert spikes["inference_energy_basis"].startswith("estimate")
    assert spikes["observations"] == 200  # one Pendulum episode
    checkpoint = sorted((runs["ann"] / "checkpoints").iterdir())[-1]
    assert main(["evaluate", str(checkpoint), "--episodes", "1", "--json"]) == 0
    ann = json.loads(capsys.readouterr().out)["spikes"]
    assert ann["synaptic_ops"] == 0 and ann["macs"] == 3 * 256 + 256 * 256 + 256 * 1


@pytest.mark.slow
def test_spikerl_energy_compares_two_real_runs(runs, capsys, tmp_path):
    plot = tmp_path / "quadrant.png"
    assert main(["energy", str(runs["ann"]), str(runs["spikerl"]), "--plot", str(plot)]) == 0
    text = capsys.readouterr().out
    basis = "measured" if CPU_SOURCE == "rapl" else "estimated"
    for word in ("Speedup", "Powerup", "Greenup", "GPS-UP", "Carbon saved"):
        line = next(line for line in text.splitlines() if line.startswith(word))
        assert line.endswith("]") and ("time measured" in line or f"energy {basis}" in line)
    assert plot.stat().st_size > 1000
    assert main(["energy", str(runs["ann"]), str(runs["spikerl"]), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    base = json.loads((runs["ann"] / "energy.json").read_text())
    new = json.loads((runs["spikerl"] / "energy.json").read_text())
    assert result["greenup"] == pytest.approx(base["energy_j"] / new["energy_j"])
    assert result["speedup"] == pytest.approx(base["seconds"] / new["seconds"])
    assert result["greenup"] == pytest.approx(result["speedup"] / result["powerup"])
    assert result["category"] in range(1, 9) or result["category"] is None


@pytest.mark.slow
def test_spikerl_energy_refuses_runs_without_energy(runs, capsys, tmp_path):
    for args in ([str(runs["ann"]), str(tmp_path)],  # no energy.json
                 [str(runs["ann"]), str(tmp_path / "missing")]):
        assert main(["energy", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("spikerl energy: error:")
    if CPU_SOURCE == "estimate":  # the plain run measured nothing here
        assert main(["energy", str(runs["ann"]), str(runs["plain"])]) == 2
        assert "no energy figures" in capsys.readouterr().err
