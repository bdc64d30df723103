"""Learning benchmark: trains methods on one environment over several seeds, prints JSON.

    python benchmarks/learning.py --methods spikerl popsan ann --env Hopper-v5 \
        --steps 50000 --seeds 0 1 2
    python benchmarks/learning.py --algo sac --methods spikerl --env HalfCheetah-v5

``--algo sac`` or ``ppo`` trains each method's network with RLlib's SAC or PPO instead of TD3
(the method then gives its network only).

Each (method, seed) is a real ``spikerl train`` run (same code path) in one local Ray session;
the return is the final noise-free evaluation (10 episodes by default). Each run also reports
the actor's health at the end (action spread, saturated fraction of the output population)
and whether it collapsed to a constant action (:mod:`policies.diagnostics`).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from policies.diagnostics import output_saturation, statistic_names
from policies.spiking import BACKEND_CHOICES
from spikerl_ray.core.distributed import DATA_PARALLEL_REGIMES
from spikerl_ray.core.platform import PRECISION_CHOICES
from spikerl_ray.methods import METHODS
from spikerl_ray.report.tables import bootstrap_ci, iqm
from spikerl_ray.algorithms import ALGORITHMS
from spikerl_ray.settings import RunSettings
from spikerl_ray.session import init_ray, keep_embedded_on_loopback
from spikerl_ray.training import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402


# A run counts as collapsed when its actions barely vary over observations at the end: an
# action spread under 0.01 (collapsed runs measured 0.000; healthy ones 0.1-0.3). The env
# steps of every iteration that ended below it are listed too (a collapse can be temporary).
COLLAPSED_ACTION_STD = 0.01


def run_one(method: str, env: str, steps: int, seed: int, out: Path, warmup: int,
            eval_every: int, eval_episodes: int, **options: Any) -> dict:
    """One run; ``options``: more RunSettings (spiking_backend, compile, precision,
    pre_tanh_penalty, learners, ...)."""
    settings = RunSettings(policy=METHODS[method].policy, method=method, env=env, seed=seed,
                           warmup_steps=warmup, eval_every=eval_every,
                           eval_episodes=eval_episodes, **options)
    t0 = time.perf_counter()
    train(settings, out, steps, force=True, progress=False)
    wall = time.perf_counter() - t0
    with (out / "progress.csv").open() as f:
        rows = list(csv.DictReader(f))
    final = float(rows[-1]["eval_return_mean"])
    health = {k: float(v) for k, v in rows[-1].items() if k in statistic_names() and v}
    saturation = output_saturation(health)
    action_std = health.get("action_std")  # TD3's learner measures it; SAC's and PPO's do not
    return {"seed": seed, "final_eval_return": final, "wall_s": wall,
            "final_action_std": action_std,
            "final_output_saturation": None if math.isnan(saturation) else saturation,
            "collapsed": None if action_std is None else action_std < COLLAPSED_ACTION_STD,
            "collapsed_iterations": [int(r["env_steps"]) for r in rows if r["action_std"]
                                     and float(r["action_std"]) < COLLAPSED_ACTION_STD],
            "env_steps": int(rows[-1]["env_steps"]),
            "env_steps_per_s": int(rows[-1]["env_steps"]) / wall,
            "evals": [(int(r["env_steps"]), float(r["eval_return_mean"])) for r in rows
                      if r["eval_return_mean"]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=["spikerl", "ann"])
    p.add_argument("--algo", choices=list(ALGORITHMS), default="td3")
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--steps", type=int, default=50_000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--warmup-steps", type=int, default=10_000)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--spiking-backend", choices=BACKEND_CHOICES, default=None,
                   help="default: auto (torch when compiled, else fused)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the networks (default: on where it can run)")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default=None,
                   help="default: each method's own (spikerl bf16, others auto)")
    p.add_argument("--pre-tanh-penalty", type=float, default=None,
                   help="override the methods' pre-tanh penalty (0: plain TD3 actor loss)")
    p.add_argument("--learners", type=int, default=0,
                   help="data-parallel learners of the spikerl method (0: one local learner)")
    p.add_argument("--cpus-per-learner", type=float, default=1.0)
    p.add_argument("--data-parallel", choices=DATA_PARALLEL_REGIMES, default=None,
                   help="with --learners >= 2: same_steps (the spikerl recipe's) or same_samples")
    p.add_argument("--actor-kwargs", type=json.loads, default={},
                   help='actor constructor overrides as JSON, e.g. \'{"surrogate": "atan"}\'')
    p.add_argument("--out", default=None, help="folder for the runs (default: a temp dir)")
    p.add_argument("--json-out", default=None, help="also write the JSON to this file")
    args = p.parse_args()

    keep_embedded_on_loopback(None)  # before Ray is imported (docs/security.md)
    init_ray(None)
    root = Path(args.out or tempfile.mkdtemp(prefix="spikerl-bench-"))
    options = {"algo": args.algo, "spiking_backend": args.spiking_backend,
               "compile": args.compile,
               "precision": args.precision, "pre_tanh_penalty": args.pre_tanh_penalty,
               "actor_kwargs": args.actor_kwargs, "learners": args.learners,
               "cpus_per_learner": args.cpus_per_learner, "data_parallel": args.data_parallel}
    report = {"benchmark": "learning", "env": args.env, "steps": args.steps, **options,
              "warmup_steps": args.warmup_steps, "cpus": os.cpu_count(),
              "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
              "methods": {}}
    for method in args.methods:
        runs = [run_one(method, args.env, args.steps, seed, root / f"{method}_s{seed}",
                        args.warmup_steps, args.eval_every, args.eval_episodes, **options)
                for seed in args.seeds]
        finals = [r["final_eval_return"] for r in runs]
        low, high = bootstrap_ci((np.array(finals),), iqm) if len(finals) > 1 else (None, None)
        report["methods"][method] = {
            "runs": runs,
            "return_mean": statistics.mean(finals),
            "return_std": statistics.pstdev(finals),
            "return_iqm": iqm(np.array(finals)), "return_iqm_ci95": [low, high],
            "wall_s_mean": statistics.mean(r["wall_s"] for r in runs),
            "env_steps_per_s_mean": statistics.mean(r["env_steps_per_s"] for r in runs),
            "collapsed_runs": sum(bool(r["collapsed"]) for r in runs),
        }
    emit(report, args.json_out)


if __name__ == "__main__":
    main()
