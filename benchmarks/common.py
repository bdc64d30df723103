"""Shared helpers of the benchmarks (Ray-free, so they also run on a GPU box without Ray)."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from policies import RunningNormalizer, TwinQCritic, build_actor
from spikerl_ray.core.replay import TransitionReplay
from spikerl_ray.core.td3 import TD3Hyperparams, TD3Update, adam

HALFCHEETAH_DIMS = (17, 6)


def make_td3(policy: str, obs_dim: int, act_dim: int, device: str, precision: str = "fp32",
             replay_size: int = 10_000) -> tuple[TD3Update, TransitionReplay]:
    """A TD3 update on fresh networks and a replay filled with random transitions."""
    torch.manual_seed(0)
    actor = build_actor(policy, obs_dim, act_dim).to(device)
    critic = TwinQCritic(obs_dim, act_dim).to(device)
    targets = [copy.deepcopy(actor), copy.deepcopy(critic)]
    for net in targets:
        net.requires_grad_(False)
    td3 = TD3Update(actor, critic, *targets, RunningNormalizer(obs_dim).to(device),
                    adam(actor.parameters(), 1e-4), adam(critic.parameters(), 1e-3),
                    TD3Hyperparams(), precision)
    rng = np.random.default_rng(0)
    replay = TransitionReplay(replay_size, obs_dim, act_dim, device=device, seed=0)
    replay.add({"obs": rng.normal(size=(replay_size, obs_dim)),
                "actions": rng.uniform(-1, 1, (replay_size, act_dim)),
                "rewards": rng.normal(size=replay_size),
                "next_obs": rng.normal(size=(replay_size, obs_dim)),
                "terminateds": np.zeros(replay_size)})
    return td3, replay


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def td3_updates_per_s(policy: str, batch: int, precision: str = "fp32", device: str = "cpu",
                      updates: int = 100, warmup: int = 10) -> float:
    """TD3 gradient updates per second (sampling from the device replay included)."""
    td3, replay = make_td3(policy, *HALFCHEETAH_DIMS, device=device, precision=precision)
    for _ in range(warmup):
        td3.step(replay.sample(batch))
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(updates):
        td3.step(replay.sample(batch))
    synchronize(device)
    return updates / (time.perf_counter() - t0)


def emit(report: dict, json_out: str | None = None, pretty: bool = True) -> None:
    """Prints a benchmark report as JSON and, if asked, writes it to ``json_out``."""
    text = json.dumps(report, indent=2)
    print(text if pretty else json.dumps(report))
    if json_out:
        Path(json_out).write_text(text + "\n")
