"""Shared helpers of the benchmarks (Ray-free, so they also run on a GPU box without Ray)."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from policies import RunningNormalizer, TwinQCritic, build_actor
from spikerl_ray.core.replay import TransitionReplay
from spikerl_ray.core.td3 import TD3Hyperparams, TD3Update, adam
from spikerl_ray.energy.accounting import window_devices
from spikerl_ray.energy.node import NodeMonitor

HALFCHEETAH_DIMS = (17, 6)


def make_td3(policy: str, obs_dim: int, act_dim: int, device: str, precision: str = "fp32",
             replay_size: int = 10_000, spiking_backend: str | None = None,
             compile: bool = False, compile_backend: str = "inductor"
             ) -> tuple[TD3Update, TransitionReplay]:
    """A TD3 update on fresh networks and a replay filled with random transitions.
    ``spiking_backend`` (``"torch"`` or ``"fused"``; None: the actor's default) and the
    compile options are those of :func:`~policies.build_actor` and
    :class:`~spikerl_ray.core.td3.TD3Update`."""
    torch.manual_seed(0)
    overrides = {} if spiking_backend is None else {"backend": spiking_backend}
    actor = build_actor(policy, obs_dim, act_dim, **overrides).to(device)
    critic = TwinQCritic(obs_dim, act_dim).to(device)
    targets = [copy.deepcopy(actor), copy.deepcopy(critic)]
    for net in targets:
        net.requires_grad_(False)
    td3 = TD3Update(actor, critic, *targets, RunningNormalizer(obs_dim).to(device),
                    adam(actor.parameters(), 1e-4), adam(critic.parameters(), 1e-3),
                    TD3Hyperparams(), precision, compile=compile,
                    compile_backend=compile_backend)
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


def run_for(step: Callable[[], object], seconds: float, device: str, chunk: int = 50) -> int:
    """Calls ``step()`` in chunks of ``chunk`` calls, synchronizing the device after each,
    until ``seconds`` have passed; returns the number of calls."""
    n, t_end = 0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        for _ in range(chunk):
            step()
        n += chunk
        synchronize(device)
    return n


def window(monitor: NodeMonitor, work: Callable[[], int]) -> tuple[list[dict], float, int, float]:
    """Runs ``work()`` (returns a count) between two readings: per-device joules, seconds,
    the count and the monitor's CPU seconds."""
    start = monitor.read()
    t0 = time.perf_counter()
    count = work()
    seconds = time.perf_counter() - t0
    end = monitor.read()
    return (window_devices([start], [end]), seconds, count,
            end["monitor_cpu_s"] - start["monitor_cpu_s"])


def energy_per_update(devices: list[dict], updates: int, seconds: float) -> list[dict]:
    """Each device of a :func:`window` with its joules per 1,000 updates and average watts
    (None where the device could not be read; its ``source`` says why)."""
    return [{**d, "joules_per_1k_updates": (1000 * d["joules"] / updates
                                            if d["joules"] is not None and updates else None),
             "watts": d["joules"] / seconds if d["joules"] is not None else None}
            for d in devices]


def emit(report: dict, json_out: str | None = None, pretty: bool = True) -> None:
    """Prints a benchmark report as JSON and, if asked, writes it to ``json_out``."""
    text = json.dumps(report, indent=2)
    print(text if pretty else json.dumps(report))
    if json_out:
        Path(json_out).write_text(text + "\n")
