"""SAC's update against TD3's, alone (no env, no Ray), as JSON: why spiking SAC runs slower
than spiking TD3 at the same schedule (batch 100, one update per env step).

Both updates are compiled as ``spikerl train`` compiles them, on the ``spikerl`` actor at
HalfCheetah's sizes, one PyTorch thread, the same random replay; rounds interleave them
(TD3 first in even rounds, SAC first in odd ones). Beside the rates, the work per update that
explains them, counted on eager copies: forward passes of the spiking actor (TD3: the target
actor on the next observations every update, the actor every ``policy_delay`` updates; SAC:
the policy on the next and on the current observations every update) and actor optimizer
steps (each one a backward through the spiking actor's timesteps).

    python benchmarks/sac_update.py --rounds 5 --json-out benchmarks/results/sac_update_cpu.json
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import statistics
import sys
import time
from typing import Any

import torch

from common import HALFCHEETAH_DIMS, emit, make_td3
from policies import RunningNormalizer, TwinQCritic
from policies.gaussian import build_gaussian_actor
from spikerl_ray.core.sac import ADAM_EPS, SACHyperparams, SACUpdate, Temperature
from spikerl_ray.core.td3 import adam

BATCH = 100


def make_sac(compile: bool) -> SACUpdate:
    """A SAC update on fresh networks of the ``spikerl`` policy (as the SAC learner builds it)."""
    obs_dim, act_dim = HALFCHEETAH_DIMS
    torch.manual_seed(0)
    policy = build_gaussian_actor("spikerl", obs_dim, act_dim, log_std="network",
                                  squash_mean=False, backend="torch")
    critic = TwinQCritic(obs_dim, act_dim)
    target = copy.deepcopy(critic).requires_grad_(False)
    temperature = Temperature()
    return SACUpdate(policy, critic, temperature, target, RunningNormalizer(obs_dim),
                     adam(policy.parameters(), 3e-4, ADAM_EPS),
                     adam(critic.parameters(), 3e-4, ADAM_EPS),
                     adam(temperature.parameters(), 3e-4, ADAM_EPS),
                     SACHyperparams(target_entropy=-float(act_dim)), compile=compile)


def spiking_passes(name: str, updates: int = 20) -> dict[str, float]:
    """Forward passes of the spiking actor and actor optimizer steps per update (eager)."""
    if name == "td3":
        update, replay = make_td3("spikerl", *HALFCHEETAH_DIMS, device="cpu",
                                  spiking_backend="torch")
        spiking = [update.actor, update.actor_target]
        actor_optim = update.actor_optim
    else:
        update = make_sac(compile=False)
        _, replay = make_td3("ann", *HALFCHEETAH_DIMS, device="cpu")  # the replay only
        spiking = [update.policy.actor]
        actor_optim = update.optims[1]
    forwards, steps = [0], [0]
    for net in spiking:
        net.register_forward_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
    actor_optim.register_step_post_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))
    for _ in range(updates):
        update.step(replay.sample(BATCH))
    return {"spiking_actor_forwards_per_update": forwards[0] / updates,
            "actor_optimizer_steps_per_update": steps[0] / updates}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--updates", type=int, default=200, help="updates per side and round")
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    started = dt.datetime.now(dt.timezone.utc)
    td3, replay = make_td3("spikerl", *HALFCHEETAH_DIMS, device="cpu", replay_size=10_000,
                           spiking_backend="torch", compile=True)
    updates: dict[str, Any] = {"td3": td3, "sac": make_sac(compile=True)}
    for update in updates.values():  # compile, then warm up
        for _ in range(10):
            update.step(replay.sample(BATCH))
    rates: dict[str, list[float]] = {name: [] for name in updates}
    for r in range(args.rounds):
        for name in (("td3", "sac") if r % 2 == 0 else ("sac", "td3")):
            t0 = time.perf_counter()
            for _ in range(args.updates):
                updates[name].step(replay.sample(BATCH))
            rates[name].append(args.updates / (time.perf_counter() - t0))
    ratios = [s / t for s, t in zip(rates["sac"], rates["td3"])]
    emit({"benchmark": "sac_update", "date": started.isoformat(timespec="seconds"),
          "command": "python " + " ".join(sys.argv), "torch": torch.__version__,
          "torch_threads": torch.get_num_threads(), "batch": BATCH,
          "updates_per_s": {name: {"rounds": v, "median": statistics.median(v)}
                            for name, v in rates.items()},
          "sac_over_td3": {"rounds": ratios, "median": statistics.median(ratios)},
          "work_per_update": {name: spiking_passes(name) for name in updates}}, args.json_out)


if __name__ == "__main__":
    main()
