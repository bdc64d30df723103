"""``benchmarks/gpu_check.py --dry-run`` on the CPU: every part of the GPU check runs on tiny
sizes (CUDA graphs recorded as skipped, NVML as unreadable), prints valid JSON, and the fast
paths match their references."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
MODES = {"eager", "eager_cuda_graph", "compiled", "compiled_cuda_graph"}


def test_gpu_check_dry_run_covers_every_part(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--device", "cpu",
                           "--json-out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == report
    assert report["dry_run"] and report["device"] == "cpu"

    checks = report["equivalence"]["checks"]
    assert {(c["path"], c["policy"], c["precision"]) for c in checks} == {
        (path, policy, precision) for path, policy in
        (("fused", "spikerl"), ("fused", "dsrl"), ("compiled", "spikerl"))
        for precision in ("fp32", "bf16")}
    assert report["equivalence"]["passed"], checks
    assert all(c["graphs"] > 0 for c in checks if c["path"] == "compiled")

    updates = report["updates"]
    assert set(updates) == {"batch100"}
    for policy in ("spikerl", "ann"):
        for precision in ("fp32", "bf16"):
            modes = updates["batch100"][policy][precision]
            assert set(modes) == MODES
            for mode in ("eager", "compiled"):
                figures = modes[mode]
                assert figures["updates_per_s"] > 0 and figures["updates"] > 0
                for device in figures["energy"]:  # a number, or none and the reason
                    assert (device["joules"] is not None
                            or device["source"].startswith("unavailable: "))
                assert modes[f"{mode}_cuda_graph"] == {
                    "skipped": "CUDA graphs need a CUDA device"}
            # Nothing in an update reads back from the device (so a GPU never waits on it
            # and the update can be captured as a CUDA graph).
            assert modes["eager"]["host_syncs_per_2_updates"] == {}
    assert report["energy"]["idle"]
    target = report["target"]
    assert target["best"] and target["best_updates_per_s"] > 0
    assert target["met"] is (target["best_updates_per_s"] >= 1000)
