"""Learning benchmark: trains policies on one environment over several seeds, prints JSON.

    python benchmarks/learning.py --policies spikerl ann --env HalfCheetah-v5 \
        --steps 50000 --seeds 0 1

Each (policy, seed) is a real ``spikerl train`` run (same code path) in one local Ray session;
the return is the final noise-free evaluation (10 episodes by default).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from spikerl_ray.run import RunSettings
from spikerl_ray.training import init_ray, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402


def run_one(policy: str, env: str, steps: int, seed: int, out: Path, warmup: int,
            eval_every: int, eval_episodes: int, **fast: Any) -> dict:
    """One run; ``fast``: the speed options of RunSettings (spiking_backend, compile,
    precision)."""
    settings = RunSettings(policy=policy, env=env, seed=seed, warmup_steps=warmup,
                           eval_every=eval_every, eval_episodes=eval_episodes, **fast)
    t0 = time.perf_counter()
    train(settings, out, steps, force=True, progress=False)
    wall = time.perf_counter() - t0
    with (out / "progress.csv").open() as f:
        rows = list(csv.DictReader(f))
    final = float(rows[-1]["eval_return_mean"])
    return {"seed": seed, "final_eval_return": final, "wall_s": wall,
            "env_steps": int(rows[-1]["env_steps"]),
            "env_steps_per_s": int(rows[-1]["env_steps"]) / wall,
            "evals": [(int(r["env_steps"]), float(r["eval_return_mean"])) for r in rows
                      if r["eval_return_mean"]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policies", nargs="+", default=["spikerl", "ann"])
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--steps", type=int, default=50_000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--warmup-steps", type=int, default=10_000)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--spiking-backend", choices=("fused", "torch"), default="fused")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--out", default=None, help="folder for the runs (default: a temp dir)")
    p.add_argument("--json-out", default=None, help="also write the JSON to this file")
    args = p.parse_args()

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    init_ray(None)
    root = Path(args.out or tempfile.mkdtemp(prefix="spikerl-bench-"))
    fast = {"spiking_backend": args.spiking_backend, "compile": args.compile,
            "precision": args.precision}
    report = {"benchmark": "learning", "env": args.env, "steps": args.steps, **fast,
              "warmup_steps": args.warmup_steps, "cpus": os.cpu_count(), "policies": {}}
    for policy in args.policies:
        runs = [run_one(policy, args.env, args.steps, seed, root / f"{policy}_s{seed}",
                        args.warmup_steps, args.eval_every, args.eval_episodes, **fast)
                for seed in args.seeds]
        finals = [r["final_eval_return"] for r in runs]
        report["policies"][policy] = {
            "runs": runs,
            "return_mean": statistics.mean(finals),
            "return_std": statistics.pstdev(finals),
            "wall_s_mean": statistics.mean(r["wall_s"] for r in runs),
            "env_steps_per_s_mean": statistics.mean(r["env_steps_per_s"] for r in runs),
        }
    emit(report, args.json_out)


if __name__ == "__main__":
    main()
