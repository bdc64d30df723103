"""Profiles of the two hot paths (issue: performance round 2, part 2), as JSON: their top
entries by self time.

    python benchmarks/profiles.py --part update [--policy spikerl] [--no-compile] \
        [--precision auto] [--batch 100] [--updates 200]
    python benchmarks/profiles.py --part iteration [--policy spikerl] [--env HalfCheetah-v5]

``update``: one TD3 gradient update on HalfCheetah's shapes (sampling from the replay
included) under ``torch.profiler``, the ops by self CPU time per update. ``iteration``: one
``train()`` call of the defaults (1,000 env steps acting with the policy, 1,000 updates, in
the driver) under ``cProfile``, the Python functions by their own time. Both run at the
defaults unless told otherwise.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HALFCHEETAH_DIMS, emit, make_td3  # noqa: E402

from policies.spiking import resolve_backend  # noqa: E402
from spikerl_ray.core.platform import PRECISION_CHOICES, resolve_precision  # noqa: E402

TOP = 15


def profile_update(policy: str, batch: int, updates: int, compile: bool, precision: str
                   ) -> dict:
    """The ops of ``updates`` TD3 updates by self CPU time (after 20 warm-up updates)."""
    precision = resolve_precision(precision, "cpu")
    td3, replay = make_td3(policy, *HALFCHEETAH_DIMS, device="cpu", precision=precision,
                           spiking_backend=resolve_backend("auto", compile), compile=compile)
    for _ in range(20):
        td3.step(replay.sample(batch))
    t0 = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(updates):
            td3.step(replay.sample(batch))
    wall = time.perf_counter() - t0
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return {"policy": policy, "batch": batch, "compile": compile, "precision": precision,
            "updates": updates, "profiled_ms_per_update": wall / updates * 1e3,
            "top": [{"op": e.key, "calls_per_update": e.count / updates,
                     "self_ms_per_update": e.self_cpu_time_total / updates / 1e3,
                     "share": e.self_cpu_time_total / total} for e in events[:TOP]]}


def profile_iteration(policy: str, env: str) -> dict:
    """One ``train()`` of the defaults past the warm-up, by Python functions' own time."""
    from spikerl_ray import session
    from spikerl_ray.algorithms import build_config
    from spikerl_ray.settings import RunSettings

    session.keep_embedded_on_loopback(None)  # before Ray is imported (docs/security.md)
    session.init_ray(None)
    import ray

    algo = (build_config(RunSettings(policy=policy, env=env, warmup_steps=1000))
            .evaluation(evaluation_interval=None).build_algo())
    try:
        for _ in range(3):  # warm-up, the first updates and the first actions (compiling)
            algo.train()
        profiler = cProfile.Profile()
        t0 = time.perf_counter()
        profiler.runcall(algo.train)
        wall = time.perf_counter() - t0
    finally:
        algo.stop()
        ray.shutdown()
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # tottime
    return {"policy": policy, "env": env, "iteration_s": wall,
            "top": [{"function": f"{Path(file).name}:{line}({name})", "calls": calls,
                     "own_s": own, "share": own / wall}
                    for (file, line, name), (_, calls, own, _, _) in rows[:TOP]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("update", "iteration"), required=True)
    p.add_argument("--policy", default="spikerl")
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--updates", type=int, default=200)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="auto")
    p.add_argument("--json-out", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)  # as the driver of a run (its one reserved CPU)
    report = {"benchmark": "profile", "date": time.strftime("%Y-%m-%d"),
              "command": " ".join(sys.argv), "torch": torch.__version__}
    if args.part == "update":
        report["update"] = profile_update(args.policy, args.batch, args.updates, args.compile,
                                          args.precision)
    else:
        report["iteration"] = profile_iteration(args.policy, args.env)
    emit(report, args.json_out, pretty=True)


if __name__ == "__main__":
    main()
