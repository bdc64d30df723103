"""``benchmarks/floor.py --dry-run``: every configuration runs the floor loop and our
end-to-end iterations on tiny sizes, prints valid JSON, and every breakdown sums to the time
it splits (no wall-clock assertions)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "floor.py"
CONFIGS = {"spikerl", "spikerl_bf16", "ann"}
FLOOR_PARTS = {"act", "env", "store", "update", "other"}
E2E_PARTS = {"sampling", "transfer", "update", "evaluation", "metrics", "checkpoint", "idle"}


def sums_to(parts: dict[str, float], total: float) -> bool:
    return math.isclose(sum(parts.values()), total, rel_tol=1e-9, abs_tol=1e-9)


def test_floor_dry_run_reports_each_configuration_with_breakdowns_that_add_up(tmp_path):
    out = tmp_path / "floor.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--json-out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == report
    assert report["benchmark"] == "floor" and report["dry_run"] and report["rounds"] == 1
    assert report["command"].startswith("python ") and report["date"]
    assert len(report["load_average_before"]) == len(report["load_average_after"]) == 3
    assert set(report["configs"]) == CONFIGS
    assert len(report["order"]) == len(CONFIGS)  # one side-by-side run each
    steps = report["sizes"]["steps"]
    chunks = steps // report["sizes"]["iteration_steps"]
    assert chunks >= 2  # the floor and ours alternate, chunk by chunk

    for name, c in report["configs"].items():
        assert c["settings"]["compile"] is False  # --dry-run compiles nothing
        assert c["settings"]["precision"] == ("bf16" if name == "spikerl_bf16" else "fp32")
        for key in ("floor_env_steps_per_s", "e2e_env_steps_per_s", "update_alone_per_s",
                    "env_alone_steps_per_s"):
            assert c[key] > 0, (name, key)
        assert c["e2e_over_floor"]["median"] > 0

        (floor,) = c["floor_rounds"]
        assert floor["measured_env_steps"] == steps
        assert set(floor["ms_per_env_step"]) == FLOOR_PARTS
        assert sums_to(floor["ms_per_env_step"], 1e3 / floor["env_steps_per_s"])

        (e2e,) = c["e2e_rounds"]
        assert e2e["measured_env_steps"] >= steps and len(e2e["iterations"]) == chunks
        assert e2e["updates_per_env_step"] == 1.0
        assert e2e["checkpoint_s"] > 0 and e2e["checkpoint_mb"] > 0
        for iteration in e2e["iterations"]:
            assert set(iteration["parts_s"]) == E2E_PARTS
            assert sums_to(iteration["parts_s"], iteration["wall_s"])
            assert iteration["parts_s"]["sampling"] > 0 and iteration["parts_s"]["update"] > 0
            assert iteration["timers"]["training_iteration"] <= iteration["wall_s"]
        assert sums_to(e2e["ms_per_env_step"], 1e3 / e2e["env_steps_per_s"])
        assert sums_to(e2e["ms_per_iteration"],
                       1e3 * e2e["wall_s"] / len(e2e["iterations"]))

        assert sum(chunk["env_steps"] for chunk in floor["chunks"]) == steps
        assert len(floor["chunks"]) == chunks

        # the summary: the median round's breakdowns, and ours beyond the floor in it
        assert c["breakdown_round"] == 0
        assert c["e2e_ms_per_env_step"] == e2e["ms_per_env_step"]
        assert c["floor_ms_per_env_step"] == floor["ms_per_env_step"]
        extra = c["extra_ms_per_env_step"]
        assert math.isclose(extra["total"], 1e3 / c["breakdown_round_e2e_env_steps_per_s"]
                            - 1e3 / c["breakdown_round_floor_env_steps_per_s"],
                            rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(sum(v for k, v in extra.items() if k != "total"), extra["total"],
                            rel_tol=1e-9, abs_tol=1e-9)
