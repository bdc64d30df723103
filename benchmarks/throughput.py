"""Throughput at fixed work, side by side in one run, against the peers users would pick.

    python benchmarks/throughput.py --json [--steps 5000] [--repeats 3] \
        [--parts e2e actor sampling memory shared]

Work: HalfCheetah-v5, actor and critics 256-256, batch 100, one gradient update per env step
on average, measured over ``--steps`` env steps after 1,000 uniform warm-up steps. Done by
spikerl-ray (spiking ``spikerl`` actor at the defaults, compiled networks and bf16 where
native, and eager in fp32, the defaults before; and ``ann``; the spiking actor under SAC at
the same schedule, and under PPO at its own recipe), Stable-Baselines3 TD3 (``pip
install .[bench]``), RLlib's SAC (new API stack) and a reference loop in the style of the
PopSAN / SpikeRL code (one process, numpy replay, acting every step, 50 updates every 50
steps, spiking layers as plain per-timestep PyTorch). With ``--repeats N`` the peers run N
times, interleaved, and the report gives every figure, the median, and the median of the
per-round ratios. ``shared`` trains beside one busy single-threaded process. Each peer starts
with PyTorch's default thread count (spikerl-ray then sets its own from Ray's CPUs). Prints
JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.reference
from common import emit  # noqa: E402

ENV = "HalfCheetah-v5"
WARMUP = 1000


# --------------------------------------------------------------------- end to end, each peer
def _measure(algo, counters, steps: int) -> tuple[int, int, float, float]:
    """Trains ``algo`` past the warm-up and one iteration acting with its policy (where
    compiled networks compile), then times ``steps`` more env steps. ``counters`` maps a
    result to (env steps sampled, work counter); returns both deltas, the wall, and the wall of
    that first policy iteration."""
    steps0, work0 = counters(algo.train())
    while steps0 < WARMUP:
        steps0, work0 = counters(algo.train())
    t0 = time.perf_counter()
    steps0, work0 = counters(algo.train())
    first_policy_iteration_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    steps1, work1 = steps0, work0
    while steps1 < steps0 + steps:
        steps1, work1 = counters(algo.train())
    return steps1 - steps0, work1 - work0, time.perf_counter() - t0, first_policy_iteration_s


# spikerl-ray's configurations: the defaults (compiled, bf16 where native) and the eager fp32
# path that was the default before (fused backend).
EAGER_FP32 = {"policy": "spikerl", "compile": False, "precision": "fp32"}
SPIKERL_RAY_RUNS: dict[str, dict] = {
    "spikerl_ray_spikerl": {"policy": "spikerl"},
    "spikerl_ray_spikerl_eager_fp32": EAGER_FP32,
    "spikerl_ray_ann": {"policy": "ann"},
    # The spiking actor under SAC (batch 100 and one update per env step, as TD3's) and PPO
    # (its own on-policy recipe: 2,048 steps per update, 10 epochs of minibatches of 64), at
    # their defaults otherwise (compiled, fp32), docs/algorithms.md.
    "spikerl_ray_spikerl_sac": {"policy": "spikerl", "algo": "sac", "batch_size": 100},
    "spikerl_ray_spikerl_ppo": {"policy": "spikerl", "algo": "ppo"},
}
# Not in the default set: each precision named, overlapped sampling with one remote env
# runner (pays off only where the runner has cores of its own; see docs/performance.md), two
# remote env runners (transitions reach the learner through the object store), and the
# driver reserving 2 CPUs, so running 2 torch threads (PyTorch's default here).
ASYNC = {"env_runners": 1, "async_sampling": True}
OPTIONAL_RUNS: dict[str, dict] = {
    "spikerl_ray_spikerl_compiled_fp32": {"policy": "spikerl", "precision": "fp32"},
    "spikerl_ray_spikerl_compiled_bf16": {"policy": "spikerl", "precision": "bf16"},
    "spikerl_ray_spikerl_async": {"policy": "spikerl"} | ASYNC,
    "spikerl_ray_spikerl_2_runners": {"policy": "spikerl", "env_runners": 2},
    "spikerl_ray_spikerl_driver_2_cpus": {"policy": "spikerl", "driver_cpus": 2},
    "spikerl_ray_ann_driver_2_cpus": {"policy": "ann", "driver_cpus": 2},
    # SAC and PPO as they ran before performance round 3 would run them: eager, fp32.
    "spikerl_ray_spikerl_sac_eager_fp32": {"policy": "spikerl", "algo": "sac",
                                           "batch_size": 100, "compile": False},
    "spikerl_ray_spikerl_ppo_eager_fp32": {"policy": "spikerl", "algo": "ppo",
                                           "compile": False},
}
PEERS = ("sb3_td3", "rllib_sac", "reference_loop")
TD3_BASELINE = "spikerl_ray_spikerl"  # what the SAC and PPO runs are also compared with


def spikerl_ray_rate(steps: int, **settings) -> dict:
    """``settings``: :class:`~spikerl_ray.settings.RunSettings` fields (algo, policy, compile,
    driver_cpus: the CPUs RLlib reserves for the driver, its torch threads; default as
    ``spikerl train``'s, ...). Off-policy algorithms (TD3, SAC) act at random for the
    benchmark's warm-up and keep 100,000 transitions; PPO runs its own recipe."""
    from spikerl_ray.algorithms import build_config
    from spikerl_ray.settings import RunSettings
    from spikerl_ray.training import gradient_updates

    # Each configuration compiles afresh, as in its own process (compiled code of an earlier
    # configuration would count against torch.compile's recompilation limit).
    torch._dynamo.reset()
    on_policy = settings.get("algo") == "ppo"
    config = build_config(RunSettings(env=ENV, **settings,
                                      **({} if on_policy else {"warmup_steps": WARMUP})))
    if not on_policy:
        config.training(num_steps_sampled_before_learning_starts=WARMUP,
                        replay_capacity=100_000)
    algo = config.evaluation(evaluation_interval=None).build_algo()
    try:
        def counters(result: dict) -> tuple[int, int]:
            learner = result.get("learners", {}).get("default_policy", {})
            return int(result["num_env_steps_sampled_lifetime"]), gradient_updates(learner)

        measured, updates, wall, first = _measure(algo, counters, steps)
    finally:
        algo.stop()
    return {"env_steps_per_s": measured / wall, "updates_per_env_step": updates / measured,
            "measured_env_steps": measured, "first_policy_iteration_s": first,
            "torch_threads": torch.get_num_threads()}


def sb3_td3_rate(steps: int) -> dict:
    from stable_baselines3 import TD3 as SB3TD3
    from stable_baselines3.common.noise import NormalActionNoise

    env = gym.make(ENV)
    act_dim = env.action_space.shape[0]
    model = SB3TD3("MlpPolicy", env, learning_starts=WARMUP, train_freq=1, gradient_steps=1,
                   batch_size=100, buffer_size=100_000, policy_kwargs={"net_arch": [256, 256]},
                   action_noise=NormalActionNoise(np.zeros(act_dim), 0.1 * np.ones(act_dim)),
                   device="cpu", seed=0, verbose=0)
    model.learn(WARMUP)
    t0 = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    wall = time.perf_counter() - t0
    return {"env_steps_per_s": steps / wall, "updates_per_env_step": 1.0,
            "measured_env_steps": steps, "torch_threads": torch.get_num_threads()}


def rllib_sac_rate(steps: int) -> dict:
    from ray.rllib.algorithms.sac import SACConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    # Configured for throughput as RLlib's docs allow: sampling in the driver, long fragments,
    # training_intensity 100 = one update of batch 100 per env step (weights count the driver).
    config = (SACConfig().environment(ENV)
              .env_runners(num_env_runners=0, rollout_fragment_length=500)
              .training(train_batch_size_per_learner=100, training_intensity=100,
                        num_steps_sampled_before_learning_starts=WARMUP,
                        replay_buffer_config={"type": "PrioritizedEpisodeReplayBuffer",
                                              "capacity": 100_000, "alpha": 0.6, "beta": 0.4})
              .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[256, 256]))
              .debugging(seed=0))
    algo = config.build_algo()
    try:
        def counters(result: dict) -> tuple[int, int]:
            trained = result.get("learners", {}).get("__all_modules__", {}).get(
                "num_env_steps_trained_lifetime", 0)
            return int(result["num_env_steps_sampled_lifetime"]), int(trained)

        measured, trained, wall, first = _measure(algo, counters, steps)
    finally:
        algo.stop()
    return {"env_steps_per_s": measured / wall, "updates_per_env_step": trained / 100 / measured,
            "measured_env_steps": measured, "first_policy_iteration_s": first}


def reference_loop_rate(steps: int) -> dict:
    """PopSAN/SpikeRL-style TD3: one process, numpy replay, per-timestep spiking actor."""
    from policies import RunningNormalizer, TwinQCritic, build_actor
    from spikerl_ray.core.replay import Batch
    from spikerl_ray.core.td3 import TD3Hyperparams, TD3Update
    from tests.reference import ReferenceActor

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    env = gym.make(ENV)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    actor = ReferenceActor(build_actor("popsan", obs_dim, act_dim, backend="torch"))
    critic = TwinQCritic(obs_dim, act_dim)
    targets = [copy.deepcopy(actor), copy.deepcopy(critic)]
    for net in targets:
        net.requires_grad_(False)
    norm = RunningNormalizer(obs_dim)
    td3 = TD3Update(actor, critic, *targets, norm, torch.optim.Adam(actor.parameters(), 1e-4),
                    torch.optim.Adam(critic.parameters(), 1e-3), TD3Hyperparams())
    cap = 100_000
    buf = {"obs": np.zeros((cap, obs_dim), np.float32), "actions": np.zeros((cap, act_dim),
           np.float32), "rewards": np.zeros(cap, np.float32),
           "next_obs": np.zeros((cap, obs_dim), np.float32),
           "terminateds": np.zeros(cap, np.float32)}
    obs, _ = env.reset(seed=0)
    size, t0 = 0, 0.0
    for t in range(WARMUP + steps):
        if t == WARMUP:
            t0 = time.perf_counter()
        if t < WARMUP:
            action = rng.uniform(-1, 1, act_dim)
        else:
            with torch.no_grad():
                action = actor(norm(torch.as_tensor(obs, dtype=torch.float32)[None]))[0].numpy()
            action = np.clip(action + 0.1 * rng.standard_normal(act_dim), -1, 1)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        i = size % cap
        for key, value in (("obs", obs), ("actions", action), ("rewards", reward),
                           ("next_obs", next_obs), ("terminateds", terminated)):
            buf[key][i] = value
        size += 1
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
        if (t + 1) % 50 == 0:  # PopSAN: statistics every 50 observations, 50 updates every 50
            norm.update(torch.as_tensor(buf["obs"][max(0, i - 49):i + 1]))
            if t + 1 >= WARMUP:
                for _ in range(50):
                    idx = rng.integers(0, min(size, cap), 100)
                    td3.step(Batch(**{k: torch.as_tensor(v[idx]) for k, v in buf.items()}))
    wall = time.perf_counter() - t0
    return {"env_steps_per_s": steps / wall, "updates_per_env_step": 1.0,
            "measured_env_steps": steps}


def end_to_end(names: list[str], steps: int, repeats: int) -> dict:
    """Each named run ``repeats`` times, interleaved round by round, each from PyTorch's
    default thread count: every round's figures, the median env steps/s, and each spikerl-ray
    run over each peer (and each SAC or PPO run over spiking TD3, :data:`TD3_BASELINE`) per
    round with the median of those ratios."""
    peers = {"sb3_td3": sb3_td3_rate, "rllib_sac": rllib_sac_rate,
             "reference_loop": reference_loop_rate}
    configs = SPIKERL_RAY_RUNS | OPTIONAL_RUNS
    threads = torch.get_num_threads()
    rounds = []
    for _ in range(repeats):
        figures = {}
        for name in names:
            torch.set_num_threads(threads)
            figures[name] = (spikerl_ray_rate(steps, **configs[name]) if name in configs
                             else peers[name](steps))
        rounds.append(figures)
    torch.set_num_threads(threads)
    out: dict = {name: {"rounds": [r[name] for r in rounds], "median_env_steps_per_s":
                        statistics.median(r[name]["env_steps_per_s"] for r in rounds)}
                 for name in names}
    ratios = {}
    for ours in (n for n in names if n in configs):
        # SAC and PPO runs are also compared with spiking TD3 at the defaults (issue:
        # performance round 3, target >= 0.8x).
        baseline = [TD3_BASELINE] if configs[ours].get("algo") and TD3_BASELINE in names else []
        for peer in [*(n for n in names if n in peers), *baseline]:
            per_round = [r[ours]["env_steps_per_s"] / r[peer]["env_steps_per_s"]
                         for r in rounds]
            ratios[f"{ours}_over_{peer}"] = {"rounds": per_round,
                                             "median": statistics.median(per_round)}
    out["ratios"] = ratios
    return out


def shared_cores(steps: int) -> dict:
    """spikerl-ray at its defaults alone, then beside one busy single-threaded process (a
    pure-Python loop), at its defaults and with the driver reserving every CPU (as many torch
    threads): env steps/s and slowdowns against alone. Target (issue: performance round 2, part 6): a
    slowdown no worse than the share of cores lost, cpus / (cpus - 1)."""
    import subprocess

    cpus = os.cpu_count() or 1
    threads = torch.get_num_threads()
    alone = spikerl_ray_rate(steps, policy="spikerl")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        torch.set_num_threads(threads)
        beside = spikerl_ray_rate(steps, policy="spikerl")
        torch.set_num_threads(threads)
        beside_all = spikerl_ray_rate(steps, driver_cpus=cpus, policy="spikerl")
    finally:
        busy.kill()
        busy.wait()
    torch.set_num_threads(threads)
    rate = "env_steps_per_s"
    return {"alone": alone, "beside_busy": beside, "beside_busy_all_cpus": beside_all,
            "slowdown": alone[rate] / beside[rate],
            "slowdown_all_cpus": alone[rate] / beside_all[rate],
            "target_slowdown": cpus / max(cpus - 1, 1)}


# ------------------------------------------------------------------ actor forward + backward
def actor_fwd_bwd_ms(batches: tuple[int, ...] = (100, 4096)) -> dict:
    """Spiking actor forward + backward: per-timestep reference, batched timesteps (torch
    backend), fused BPTT, and torch.compile of the torch backend (fp32, and bf16 autocast)."""
    from policies import build_actor
    from tests.reference import ReferenceActor

    out: dict = {}
    for batch in batches:
        obs = torch.randn(batch, 17, generator=torch.Generator().manual_seed(0))
        torch.manual_seed(0)
        compiled = build_actor("spikerl", 17, 6, backend="torch")
        compiled.compile(dynamic=False)
        nets = {"reference_per_timestep": (ReferenceActor(build_actor("spikerl", 17, 6)),
                                           False),
                "torch_batched_timesteps": (build_actor("spikerl", 17, 6, backend="torch"),
                                            False),
                "fused": (build_actor("spikerl", 17, 6, backend="fused"), False),
                "compiled": (compiled, False), "compiled_bf16": (compiled, True)}
        reps = 50 if batch <= 100 else 5
        for name, (net, bf16) in nets.items():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                for _ in range(3):  # warm-up (and compilation)
                    net(obs).float().sum().backward()
                t0 = time.perf_counter()
                for _ in range(reps):
                    net(obs).float().sum().backward()
            out[f"{name}_batch{batch}_ms"] = (time.perf_counter() - t0) / reps * 1000
        for name in ("fused", "compiled", "compiled_bf16"):
            out[f"{name}_speedup_batch{batch}"] = (
                out[f"reference_per_timestep_batch{batch}_ms"] / out[f"{name}_batch{batch}_ms"])
    return out


# --------------------------------------------------------------------------------- sampling
def sampling_vs_raw(num_envs: int, seconds: float, compile: bool) -> dict:
    """One remote env runner acting with the spiking actor vs random stepping of the same
    vector env; ``compile``: the runner's actor compiled (torch backend; the default) or
    eager (fused backend)."""
    from spikerl_ray.algorithms import build_config
    from spikerl_ray.common.fragments import sample_fragments
    from spikerl_ray.settings import RunSettings

    algo = build_config(RunSettings(policy="spikerl", env=ENV, env_runners=1,
                                    envs_per_runner=num_envs, warmup_steps=0,
                                    compile=compile)).build_algo()
    try:
        sample_fragments(algo, False, by_reference=True)
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            steps += sum(rows for _, rows, _ in
                         sample_fragments(algo, False, by_reference=True))
        runner = steps / (time.perf_counter() - t0)
    finally:
        algo.stop()
    envs = gym.make_vec(ENV, num_envs=num_envs, vectorization_mode="sync")
    envs.reset(seed=0)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        envs.step(envs.action_space.sample())
        steps += num_envs
    raw = steps / (time.perf_counter() - t0)
    envs.close()
    return {"num_envs": num_envs, "actor": "compiled" if compile else "fused",
            "env_runner_steps_per_s": runner,
            "raw_random_steps_per_s": raw, "fraction_of_raw": runner / raw}


# ----------------------------------------------------------------------------------- memory
def memory(capacity: int) -> dict:
    """Peak RSS of a fresh process training a few iterations, and of its env runner."""
    import psutil

    from spikerl_ray.algorithms import build_config
    from spikerl_ray.settings import RunSettings

    algo = (build_config(RunSettings(policy="spikerl", env=ENV, env_runners=1, warmup_steps=0))
            .training(replay_capacity=capacity, num_steps_sampled_before_learning_starts=100)
            .evaluation(evaluation_interval=None).build_algo())
    try:
        algo.train()
        replay_bytes = [r.get() for r in algo.learner_group.foreach_learner(
            lambda l: l.replay.nbytes)][0]
        runner_rss = algo.env_runner_group.foreach_env_runner(
            lambda r: psutil.Process().memory_info().rss, local_env_runner=False)
    finally:
        algo.stop()
    obs_dim, act_dim = 17, 6
    raw = capacity * (2 * obs_dim + act_dim + 2) * 4  # float32 obs, action, reward, next, done
    return {"capacity": capacity, "driver_peak_rss_mb": resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 1024,
            "env_runner_rss_mb": [x / 2**20 for x in runner_rss],
            "replay_mb": replay_bytes / 2**20, "raw_transitions_mb": raw / 2**20,
            "replay_over_raw": replay_bytes / raw}


def _memory_in_subprocess(capacity: int) -> dict:
    import subprocess

    code = (f"import json,sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            "from spikerl_ray import session; session.keep_embedded_on_loopback(None); "
            "session.init_ray(None); "
            f"from throughput import memory; print(json.dumps(memory({capacity})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=1,
                   help="rounds of the end-to-end runs (medians reported; 3 or more for "
                   "figures to publish)")
    p.add_argument("--parts", nargs="+", default=["e2e", "actor", "sampling", "memory"],
                   choices=["e2e", "actor", "sampling", "memory", "shared"])
    p.add_argument("--peers", nargs="+", default=[*SPIKERL_RAY_RUNS, *PEERS],
                   choices=[*SPIKERL_RAY_RUNS, *OPTIONAL_RUNS, *PEERS])
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--json-out", default=None)
    args = p.parse_args()
    from spikerl_ray import session

    session.keep_embedded_on_loopback(None)  # before Ray is imported (docs/security.md)
    import ray

    report: dict = {"benchmark": "throughput", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                  time.gmtime()),
                    "command": "python " + " ".join(sys.argv), "env": ENV, "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "warmup_steps": WARMUP,
                    "measured_steps": args.steps}
    if "actor" in args.parts:
        report["actor_fwd_bwd"] = actor_fwd_bwd_ms()
    if "e2e" in args.parts or "sampling" in args.parts:
        session.init_ray(None)
    if "e2e" in args.parts:
        report["end_to_end"] = end_to_end(args.peers, args.steps, args.repeats)
    if "shared" in args.parts:
        report["shared_cores"] = shared_cores(args.steps)
    if "sampling" in args.parts:
        report["sampling"] = [sampling_vs_raw(n, 10.0, compile)
                              for compile in (False, True) for n in (1, 8)]
    if ray.is_initialized():
        ray.shutdown()
    if "memory" in args.parts:
        report["memory"] = [_memory_in_subprocess(c) for c in (100_000, 1_000_000)]
    emit(report, args.json_out, pretty=args.json)


if __name__ == "__main__":
    main()
