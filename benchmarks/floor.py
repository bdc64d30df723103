"""The floor (issue: performance round 3, part 1): the end-to-end benchmark's work done by the
plainest correct program, side by side with ours, and where the difference goes. Prints JSON.

    python benchmarks/floor.py [--steps 2000] [--rounds 3] [--configs spikerl spikerl_bf16 ann]
        [--json-out FILE]
    python benchmarks/floor.py --dry-run   # tiny sizes, no compile, for the test

Work (as ``benchmarks/throughput.py``): HalfCheetah-v5, the same actor and critics, batch 100,
one TD3 update per env step, the same precision and compile settings, 1,000 random warm-up
steps. Configurations: ``spikerl`` (``RunSettings(policy="spikerl")`` at its defaults:
compiled, torch spiking backend, fp32), ``spikerl_bf16`` (the same, ``precision="bf16"``) and
``ann``. Each is read from the config ``build_config`` makes, so the floor and ours cannot
drift apart.

- floor: one process, no Ray. The env stepped inline; acting as our env runner does (running
  normalizer, actor, Gaussian noise 0.1, clip; one compiled graph when compiled) on one
  observation; the transition added to a preallocated :class:`TransitionReplay`, and every
  50 steps the newest 50 observations folded into the normalizer (as our learner folds each
  fragment's); one :class:`TD3Update` step of batch 100 (:func:`common.make_td3`: the
  learner's hyperparameters, precision and compiled losses). Timed per phase (act, env,
  store, update). Also ``update_alone`` (updates/s from the filled replay, no env) and
  ``env_alone`` (random-action env steps/s).
- end to end: the algorithm ``spikerl train`` builds at its defaults (sampling in the driver,
  ``env_runners=0``), configured as the end-to-end benchmark (warm-up 1,000, replay 100,000,
  no evaluation), timed over whole ``train()`` iterations after the warm-up and one untimed
  policy iteration (compiling). RLlib's timers (``result["timers"]``) are made per-iteration
  sums instead of moving averages (each key declared ``reduce="sum"`` before the first
  iteration); with the benchmark's own wall around ``algo.train()`` they split every
  iteration into parts that sum to it: sampling, transfer (weights to the env runner),
  update (adding the fragment to the replay, folding its observations and the updates),
  evaluation, metrics (the training step's own bookkeeping, and after the iteration: results,
  energy meter, actor statistics), checkpoint, and idle (the rest: RLlib's iteration loop and
  its restore check). One checkpoint as ``spikerl train`` writes it (every 10 iterations by
  default) is timed after the measured iterations, outside them.

In each round every configuration (their order rotates) builds the floor and ours in one
process, then times them in alternating chunks of one iteration's env steps (floor, ours,
ours, floor, ...; which starts alternates), so that a change in the machine's load hits both
alike. Figures are medians over rounds; the breakdowns are those of the round whose ratio
(ours over the floor) is the median, so that each sums to that round's time per step.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, make_td3  # noqa: E402
from throughput import ENV, WARMUP  # noqa: E402

from policies.spiking import resolve_backend  # noqa: E402
from spikerl_ray.core.platform import resolve_precision  # noqa: E402
from spikerl_ray.core.replay import TransitionReplay  # noqa: E402
from spikerl_ray.core.td3 import TD3Hyperparams, TD3Update  # noqa: E402
from spikerl_ray.resources import set_torch_threads  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "spikerl": {"policy": "spikerl"},
    "spikerl_bf16": {"policy": "spikerl", "precision": "bf16"},
    "ann": {"policy": "ann"},
}
FLOOR_PARTS = ("act", "env", "store", "update", "other")
E2E_PARTS = ("sampling", "transfer", "update", "evaluation", "metrics", "checkpoint", "idle")


@dataclass(frozen=True)
class Sizes:
    """How much each run does. ``settle``: untimed policy steps of the floor before it is
    timed (the first act and updates compile); ``iteration_steps``: env steps per ``train()``
    (None: the config's, 1,000)."""

    warmup: int = WARMUP
    steps: int = 2000
    settle: int = 200
    update_alone: int = 500
    env_alone: int = 5000
    replay_capacity: int = 100_000
    iteration_steps: int | None = None


FULL = Sizes()
DRY = Sizes(warmup=100, steps=200, settle=10, update_alone=20, env_alone=200,
            replay_capacity=10_000, iteration_steps=100)


def td3_config(name: str, sizes: Sizes, dry_run: bool) -> Any:
    """Our algorithm's config for configuration ``name``, as the end-to-end benchmark builds
    it (``dry_run``: without compiling, short iterations); validated."""
    from spikerl_ray.algorithms import build_config
    from spikerl_ray.settings import RunSettings

    extra = {"compile": False} if dry_run else {}
    config = (build_config(RunSettings(env=ENV, warmup_steps=sizes.warmup, **CONFIGS[name],
                                       **extra))
              .training(num_steps_sampled_before_learning_starts=sizes.warmup,
                        replay_capacity=sizes.replay_capacity)
              .evaluation(evaluation_interval=None))
    if sizes.iteration_steps:
        config = config.reporting(min_sample_timesteps_per_iteration=sizes.iteration_steps)
    config.validate()  # where torch.compile cannot run, compile_networks falls back here
    return config


def settings_of(config: Any) -> dict[str, Any]:
    """What the floor takes from ``config``."""
    compiled = bool(config.compile_networks)
    return {"policy": config.policy, "compile": compiled,
            "spiking_backend": resolve_backend(config.spiking_backend, compiled),
            "precision": resolve_precision(config.precision, "cpu"),
            "batch_size": int(config.train_batch_size_per_learner),
            "exploration_noise": float(config.exploration_noise),
            "replay_capacity": int(config.replay_capacity),
            # the transitions our env runner hands the learner at a time (whose observations
            # it folds into the normalizer)
            "fragment": int(config.get_rollout_fragment_length(0)
                            * config.num_envs_per_env_runner)}


def check_same_update(config: Any, td3: TD3Update) -> None:
    """ValueError unless ``td3`` (from :func:`common.make_td3`) has the hyperparameters,
    learning rates, critic and actor arguments our learner builds from ``config``."""
    hp = TD3Hyperparams(gamma=config.gamma, tau=config.tau, policy_noise=config.target_noise,
                        noise_clip=config.target_noise_clip, policy_delay=config.policy_delay,
                        pre_tanh_penalty=config.pre_tanh_penalty)
    theirs = (hp, config.actor_lr, config.critic_lr, tuple(config.critic_hiddens),
              dict(config.actor_kwargs))
    ours = (td3.hp, td3.actor_optim.defaults["lr"], td3.critic_optim.defaults["lr"],
            (256, 256), {})
    if theirs != ours:
        raise ValueError(f"the floor's TD3 update differs from the config's: {ours} != {theirs}")


def acting(td3: TD3Update, noise: float, compiled: bool) -> Callable[[np.ndarray], np.ndarray]:
    """Our env runner's acting (``TD3TorchRLModule._act`` with exploration) on one raw
    observation: normalize, actor, Gaussian noise, clip to [-1, 1]; one compiled graph when
    ``compiled``."""
    def act(obs: torch.Tensor) -> torch.Tensor:
        actions = td3.actor(td3.normalize(obs.float()))
        return (actions + torch.randn_like(actions) * noise).clamp(-1.0, 1.0)

    graph = torch.compile(act, dynamic=False) if compiled else act

    def step(obs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return graph(torch.from_numpy(obs.astype(np.float32))[None])[0].numpy()

    return step


class FloorLoop:
    """The floor of one configuration: built, warmed up (random steps, no updates) and
    settled (the first acts and updates compile) on construction; :meth:`run` then times
    env steps by phase."""

    def __init__(self, config: Any, sizes: Sizes) -> None:
        self.threads = set_torch_threads(config, "driver")  # as many as our driver runs
        self.s = s = settings_of(config)
        self.env = gym.make(ENV)
        space = self.env.action_space
        assert np.all(space.low == -1) and np.all(space.high == 1)  # actions step it as is
        obs_dim, self.act_dim = self.env.observation_space.shape[0], space.shape[0]
        self.td3, _ = make_td3(s["policy"], obs_dim, self.act_dim, "cpu",
                               precision=s["precision"], replay_size=s["batch_size"],
                               spiking_backend=s["spiking_backend"], compile=s["compile"])
        check_same_update(config, self.td3)
        self.replay = TransitionReplay(s["replay_capacity"], obs_dim, self.act_dim, seed=0)
        self.act = acting(self.td3, s["exploration_noise"], s["compile"])
        self.rng = np.random.default_rng(0)
        self.obs, _ = self.env.reset(seed=0)
        self.count = 0
        self.spent = dict.fromkeys(FLOOR_PARTS[:-1], 0.0)
        for _ in range(sizes.warmup):
            self.step(policy=False, update=False)
        for _ in range(sizes.settle):
            self.step(policy=True, update=True)

    def step(self, policy: bool, update: bool) -> None:
        """One env step: act (``policy``, else uniformly at random), step the env, store the
        transition (and fold the observations of each fragment), one TD3 update
        (``update``); each phase's seconds added to ``self.spent``."""
        t0 = time.perf_counter()
        action = (self.act(self.obs) if policy
                  else self.rng.uniform(-1.0, 1.0, self.act_dim).astype(np.float32))
        t1 = time.perf_counter()
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        t2 = time.perf_counter()
        self.replay.add({"obs": self.obs[None], "actions": action[None],
                         "rewards": np.array([reward]), "next_obs": next_obs[None],
                         "terminateds": np.array([float(terminated)])})
        self.count += 1
        fragment = self.s["fragment"]
        if self.count % fragment == 0:  # as our learner folds each fragment's observations
            self.td3.normalize.update(self.replay.recent_obs(fragment))
        self.obs = self.env.reset()[0] if terminated or truncated else next_obs
        t3 = time.perf_counter()
        if update:
            self.td3.step(self.replay.sample(self.s["batch_size"]))
        t4 = time.perf_counter()
        for part, seconds in zip(self.spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            self.spent[part] += seconds

    def run(self, steps: int) -> dict[str, float]:
        """Seconds of ``steps`` policy steps with updates, by :data:`FLOOR_PARTS` (``other``:
        the rest of the wall) and ``wall``."""
        self.spent.update(dict.fromkeys(self.spent, 0.0))
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step(policy=True, update=True)
        wall = time.perf_counter() - t0
        return {**self.spent, "other": wall - sum(self.spent.values()), "wall": wall}

    def update_alone(self, updates: int) -> float:
        """TD3 updates/s from the filled replay, no env."""
        t0 = time.perf_counter()
        for _ in range(updates):
            self.td3.step(self.replay.sample(self.s["batch_size"]))
        return updates / (time.perf_counter() - t0)

    def env_alone(self, steps: int) -> float:
        """Env steps/s with uniformly random actions (resets included)."""
        self.env.reset(seed=1)
        t0 = time.perf_counter()
        for _ in range(steps):
            _, _, terminated, truncated, _ = self.env.step(
                self.rng.uniform(-1.0, 1.0, self.act_dim))
            if terminated or truncated:
                self.env.reset()
        return steps / (time.perf_counter() - t0)


def per_step(parts: dict[str, float], steps: int) -> dict[str, float]:
    """Seconds spent over ``steps`` env steps as milliseconds per env step."""
    return {k: v / steps * 1e3 for k, v in parts.items()}


# RLlib's timers (ray.rllib.utils.metrics names) an iteration of ours logs.
TIMER_KEYS = ("training_iteration", "restore_env_runners", "training_step",
              "env_runner_sampling_timer", "learner_update_timer", "synch_weights",
              "synch_env_connectors", "evaluation_iteration")


def sum_timers(algo: Any) -> None:
    """Makes ``algo``'s RLlib timers per-iteration sums (``result["timers"]``) instead of
    moving averages of each call: declares each key ``reduce="sum"`` before RLlib first logs
    it."""
    from ray.rllib.utils.metrics import TIMERS

    for key in TIMER_KEYS:
        algo.metrics.log_value((TIMERS, key), 0.0, reduce="sum")


def timer(timers: dict[str, float], key: str) -> float:
    """Seconds under ``key`` (0 where nothing was timed: RLlib reports NaN or no key)."""
    value = float(timers.get(key, 0.0))
    return 0.0 if math.isnan(value) else value


def breakdown(timers: dict[str, float], wall: float) -> dict[str, float]:
    """An iteration of ``wall`` seconds split by its RLlib timers into :data:`E2E_PARTS`,
    which sum to ``wall``."""
    t = {k: timer(timers, k) for k in TIMER_KEYS}
    inside_step = (t["env_runner_sampling_timer"] + t["learner_update_timer"]
                   + t["synch_weights"])
    parts = {"sampling": t["env_runner_sampling_timer"],
             "transfer": t["synch_weights"] + t["synch_env_connectors"],
             "update": t["learner_update_timer"],
             "evaluation": t["evaluation_iteration"],
             # the training step's own bookkeeping, and everything after the iteration
             "metrics": (t["training_step"] - inside_step) + (
                 wall - t["training_iteration"] - t["synch_env_connectors"]
                 - t["evaluation_iteration"]),
             "checkpoint": 0.0}  # none in the timed iterations (OursLoop.checkpoint, apart)
    parts["idle"] = wall - sum(parts.values())
    return parts


class OursLoop:
    """Our algorithm at one configuration: built, trained past the warm-up and one untimed
    policy iteration (compiling) on construction; :meth:`iterate` then times iterations."""

    def __init__(self, config: Any, sizes: Sizes) -> None:
        self.algo = config.build_algo()
        sum_timers(self.algo)
        self.steps, self.updates = self.counters(self.algo.train())
        while self.steps < sizes.warmup:
            self.steps, self.updates = self.counters(self.algo.train())
        self.steps, self.updates = self.counters(self.algo.train())  # the first policy one

    @staticmethod
    def counters(result: dict) -> tuple[int, int]:
        """Env steps sampled and gradient updates done, lifetime."""
        learner = result.get("learners", {}).get("default_policy", {})
        return (int(result["num_env_steps_sampled_lifetime"]),
                int(learner.get("num_gradient_updates_lifetime", 0)))

    def iterate(self) -> dict[str, Any]:
        """One ``train()``: its wall (timed here), env steps, updates, RLlib's timers (per
        iteration) and :func:`breakdown`."""
        t0 = time.perf_counter()
        result = self.algo.train()
        wall = time.perf_counter() - t0
        steps, updates = self.counters(result)
        timers = {k: timer(result["timers"], k) for k in result["timers"]}
        out = {"wall_s": wall, "env_steps": steps - self.steps, "updates": updates - self.updates,
               "timers": timers, "parts_s": breakdown(timers, wall)}
        self.steps, self.updates = steps, updates
        return out

    def checkpoint(self, name: str) -> tuple[float, float]:
        """Seconds and MiB of one checkpoint as ``spikerl train`` writes it."""
        from spikerl_ray.run import RunDir
        from spikerl_ray.settings import RunSettings

        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            RunDir(tmp).save_checkpoint(self.algo, RunSettings(env=ENV, **CONFIGS[name]),
                                        self.algo.iteration, self.steps)
            seconds = time.perf_counter() - t0
            mib = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file()) / 2**20
        return seconds, mib


def side_by_side(config: Any, sizes: Sizes, name: str, floor_first: bool
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The floor and ours at ``config``, both built first, then timed in alternating chunks
    of one iteration's env steps (floor, ours, ours, floor, ... from ``floor_first``), so
    that a change in the machine's load hits both alike; then the floor's update and env
    alone, and our checkpoint."""
    from spikerl_ray.settings import default

    torch._dynamo.reset()  # each configuration compiles afresh, as in its own process
    floor = FloorLoop(config, sizes)
    ours = OursLoop(config, sizes)
    chunk = int(config.min_sample_timesteps_per_iteration)
    spent = dict.fromkeys((*FLOOR_PARTS, "wall"), 0.0)
    floor_steps, chunks, iterations, ours_steps = 0, [], [], 0
    try:
        for i in itertools.count():
            if floor_steps >= sizes.steps and ours_steps >= sizes.steps:
                break
            for kind in (("floor", "ours") if (i + floor_first + 1) % 2 == 0
                         else ("ours", "floor")):
                if kind == "floor" and floor_steps < sizes.steps:
                    n = min(chunk, sizes.steps - floor_steps)
                    seconds = floor.run(n)
                    for k, v in seconds.items():
                        spent[k] += v
                    chunks.append({"env_steps": n, "wall_s": seconds["wall"]})
                    floor_steps += n
                elif kind == "ours" and ours_steps < sizes.steps:
                    iterations.append(ours.iterate())
                    ours_steps += iterations[-1]["env_steps"]
        update_alone = floor.update_alone(sizes.update_alone)
        env_alone = floor.env_alone(sizes.env_alone)
        checkpoint_s, checkpoint_mb = ours.checkpoint(name)
        updates = sum(i["updates"] for i in iterations)
    finally:
        floor.env.close()
        ours.algo.stop()
    wall = spent.pop("wall")
    floor_out = {"env_steps_per_s": floor_steps / wall, "measured_env_steps": floor_steps,
                 "wall_s": wall, "chunks": chunks,
                 "ms_per_env_step": per_step(spent, floor_steps),
                 "update_alone_per_s": update_alone, "env_alone_steps_per_s": env_alone,
                 "torch_threads": floor.threads}
    wall = sum(i["wall_s"] for i in iterations)
    parts = {k: sum(i["parts_s"][k] for i in iterations) for k in E2E_PARTS}
    every = default("checkpoint_every")
    ours_out = {"env_steps_per_s": ours_steps / wall, "measured_env_steps": ours_steps,
                "wall_s": wall, "updates_per_env_step": updates / ours_steps,
                "iterations": iterations,
                "ms_per_iteration": {k: v / len(iterations) * 1e3 for k, v in parts.items()},
                "ms_per_env_step": per_step(parts, ours_steps),
                "checkpoint_s": checkpoint_s, "checkpoint_mb": checkpoint_mb,
                "checkpoint_every": every,
                "checkpoint_ms_per_iteration_at_that_interval": checkpoint_s / every * 1e3,
                "torch_threads": torch.get_num_threads()}
    return floor_out, ours_out


def summarize(floor_rounds: list[dict], e2e_rounds: list[dict]) -> dict[str, Any]:
    """Medians over rounds; the breakdowns (ms per env step) of the round whose ratio of ours
    over the floor is the median (the lower one of an even count), and what ours spends per
    env step beyond the floor in that round, part by part."""
    ratios = [b["env_steps_per_s"] / a["env_steps_per_s"]
              for a, b in zip(floor_rounds, e2e_rounds)]
    i = ratios.index(statistics.median_low(ratios))
    f, e = floor_rounds[i], e2e_rounds[i]
    fs, es = f["ms_per_env_step"], e["ms_per_env_step"]
    return {
        "floor_env_steps_per_s": statistics.median(r["env_steps_per_s"] for r in floor_rounds),
        "update_alone_per_s": statistics.median(r["update_alone_per_s"] for r in floor_rounds),
        "env_alone_steps_per_s": statistics.median(r["env_alone_steps_per_s"]
                                                   for r in floor_rounds),
        "e2e_env_steps_per_s": statistics.median(r["env_steps_per_s"] for r in e2e_rounds),
        "e2e_over_floor": {"rounds": ratios, "median": statistics.median(ratios)},
        "breakdown_round": i, "breakdown_round_floor_env_steps_per_s": f["env_steps_per_s"],
        "breakdown_round_e2e_env_steps_per_s": e["env_steps_per_s"],
        "floor_ms_per_env_step": fs, "e2e_ms_per_env_step": es,
        "e2e_ms_per_iteration": e["ms_per_iteration"],
        "checkpoint_ms_per_iteration_at_spikerl_train_interval": statistics.median(
            r["checkpoint_ms_per_iteration_at_that_interval"] for r in e2e_rounds),
        # that round: ours over the floor, per env step, by where the time goes
        "extra_ms_per_env_step": {
            "total": sum(es.values()) - sum(fs.values()),
            "sampling_vs_act_and_env": es["sampling"] - fs["act"] - fs["env"],
            "update_vs_store_and_update": es["update"] - fs["store"] - fs["update"],
            "transfer": es["transfer"], "evaluation": es["evaluation"],
            "metrics": es["metrics"], "checkpoint": es["checkpoint"],
            "idle_vs_other": es["idle"] - fs["other"]},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None,
                   help=f"measured env steps per run (default {FULL.steps})")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 3; 1 dry)")
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    p.add_argument("--dry-run", action="store_true",
                   help="tiny sizes, no compile (for the test; well under a minute)")
    p.add_argument("--json-out", default=None)
    args = p.parse_args()
    sizes = DRY if args.dry_run else FULL
    if args.steps:
        sizes = replace(sizes, steps=args.steps)
    rounds = args.rounds or (1 if args.dry_run else 3)

    from spikerl_ray import session

    session.keep_embedded_on_loopback(None)  # before Ray is imported (docs/security.md)
    import ray

    started = time.monotonic()
    report: dict[str, Any] = {
        "benchmark": "floor", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"), "command": "python " + " ".join(sys.argv),
        "dry_run": args.dry_run, "env": ENV, "cpus": os.cpu_count(),
        "torch": torch.__version__, "ray": ray.__version__, "rounds": rounds,
        "sizes": asdict(sizes), "load_average_before": list(os.getloadavg())}
    session.init_ray(None)
    configs = {name: td3_config(name, sizes, args.dry_run) for name in args.configs}
    runs: dict[str, dict[str, list]] = {n: {"floor": [], "e2e": []} for n in configs}
    order = []
    try:
        for r in range(rounds):
            names = args.configs[r % len(args.configs):] + args.configs[:r % len(args.configs)]
            for i, name in enumerate(names):
                floor_first = (r + i) % 2 == 0
                load = os.getloadavg()[0]
                floor, ours = side_by_side(configs[name], sizes, name, floor_first)
                for kind, run in (("floor", floor), ("e2e", ours)):
                    runs[name][kind].append({**run, "round": r, "load_average_1min": load})
                order.append(f"{r}:{name}:{'floor' if floor_first else 'e2e'} first")
    finally:
        ray.shutdown()
    report["order"] = order
    report["configs"] = {name: {"settings": settings_of(configs[name]),
                                **summarize(runs[name]["floor"], runs[name]["e2e"]),
                                "floor_rounds": runs[name]["floor"],
                                "e2e_rounds": runs[name]["e2e"]}
                         for name in configs}
    report["load_average_after"] = list(os.getloadavg())
    report["wall_s"] = time.monotonic() - started
    emit(report, args.json_out)


if __name__ == "__main__":
    main()
