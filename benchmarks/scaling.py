"""Scaling benchmark: env-runner sampling, data-parallel learners, fp32 vs bf16. Prints JSON.

    python benchmarks/scaling.py [--env HalfCheetah-v5] [--policy spikerl] [--json-out F]

- sampling: env steps/s of 1 and 2 remote env runners acting with the policy (no learning);
- learners: TD3 updates/s of 1 and 2 remote learners (2 = DDP, Gloo on CPUs, NCCL on GPUs),
  per learner, with the effective batch (L x per-learner batch) they train on together;
- precision: TD3 updates/s in one process, fp32 vs bf16 autocast, batch 100 and 1024.
Ratios are measured side by side in one run. ``--ray-free`` runs the precision part only
(it needs no Ray: for a GPU machine that has PyTorch only).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, td3_updates_per_s  # noqa: E402


def precision_rates(policy: str, device: str, updates: int) -> dict:
    out = {}
    for batch in (100, 1024):
        for precision in ("fp32", "bf16"):
            out[f"{precision}_batch{batch}"] = td3_updates_per_s(policy, batch, precision,
                                                                 device, updates)
        out[f"bf16_over_fp32_batch{batch}"] = (out[f"bf16_batch{batch}"]
                                               / out[f"fp32_batch{batch}"])
    return out


def sampling_rate(env: str, policy: str, runners: int, seconds: float) -> float:
    from spikerl_ray.algorithms import build_config
    from spikerl_ray.common.fragments import sample_fragments
    from spikerl_ray.settings import RunSettings

    algo = build_config(RunSettings(policy=policy, env=env, env_runners=runners,
                                    warmup_steps=0)).build_algo()
    try:
        sample_fragments(algo, False, by_reference=True)  # warm up: reset envs, first forward passes
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            steps += sum(rows for _, rows, _ in
                         sample_fragments(algo, False, by_reference=True))
        return steps / (time.perf_counter() - t0)
    finally:
        algo.stop()


def learner_rate(env: str, policy: str, learners: int, updates: int) -> dict:
    from spikerl_ray.algorithms import build_config
    from spikerl_ray.settings import RunSettings

    algo = build_config(RunSettings(policy=policy, env=env, learners=learners,
                                    warmup_steps=0)).build_algo()
    try:
        obs_dim = algo.env_runner.env.single_observation_space.shape[0]
        act_dim = algo.env_runner.env.single_action_space.shape[0]

        def fill(learner):
            rng = np.random.default_rng(learner.shard)
            n = 5000
            learner.add_and_train({"obs": rng.normal(size=(n, obs_dim)),
                                   "actions": rng.uniform(-1, 1, (n, act_dim)),
                                   "rewards": rng.normal(size=n),
                                   "next_obs": rng.normal(size=(n, obs_dim)),
                                   "terminateds": np.zeros(n)}, 10)

        algo.learner_group.foreach_learner(fill)
        t0 = time.perf_counter()
        results = algo.learner_group.foreach_learner(
            lambda l, n: l.add_and_train(None, n), n=updates)
        wall = time.perf_counter() - t0
        assert all(r.get()["num_updates"] == updates for r in results)
        batch = algo.config.train_batch_size_per_learner
        return {"updates_per_s_per_learner": updates / wall,
                "effective_batch": learners * batch,
                "samples_per_s": updates * learners * batch / wall}
    finally:
        algo.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--policy", default="spikerl")
    p.add_argument("--seconds", type=float, default=15.0, help="sampling time per setting")
    p.add_argument("--updates", type=int, default=300)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--ray-free", action="store_true", help="only the precision part")
    p.add_argument("--json-out", default=None)
    args = p.parse_args()

    report: dict = {"benchmark": "scaling", "env": args.env, "policy": args.policy,
                    "device": args.device, "cpus": os.cpu_count(),
                    "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda")
                    else None}
    report["precision_updates_per_s"] = precision_rates(args.policy, args.device, args.updates)
    if not args.ray_free:
        from spikerl_ray import session

        session.keep_embedded_on_loopback(None)  # before Ray is imported (docs/security.md)
        session.init_ray(None)
        import ray

        sampling = {f"{r}_runners": sampling_rate(args.env, args.policy, r, args.seconds)
                    for r in (1, 2)}
        sampling["speedup_2_over_1"] = sampling["2_runners"] / sampling["1_runners"]
        report["sampling_env_steps_per_s"] = sampling
        learners = {f"{n}_learners": learner_rate(args.env, args.policy, n, args.updates)
                    for n in (1, 2)}
        learners["samples_per_s_2_over_1"] = (learners["2_learners"]["samples_per_s"]
                                              / learners["1_learners"]["samples_per_s"])
        report["learners"] = learners
        ray.shutdown()
    emit(report, args.json_out)


if __name__ == "__main__":
    main()
