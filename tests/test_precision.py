"""bfloat16 mixed precision: losses track fp32 on the same batches over the first updates."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from policies import RunningNormalizer, TwinQCritic, build_actor
from spikerl_ray.core.replay import TransitionReplay
from spikerl_ray.core.td3 import TD3Hyperparams, TD3Update

# Stated tolerance: over the first 20 updates (batch 100, HalfCheetah-sized 17 -> 6), each bf16
# loss is within 2% of the fp32 loss plus 0.02 absolute (actor losses start near zero; bf16
# keeps 8 mantissa bits, and a spiking layer's threshold can flip a few spikes).
REL_TOL, ABS_TOL, UPDATES = 0.02, 0.02, 20


def _td3(policy: str, precision: str) -> TD3Update:
    torch.manual_seed(0)
    actor, critic = build_actor(policy, 17, 6), TwinQCritic(17, 6)
    actor_t, critic_t = copy.deepcopy(actor), copy.deepcopy(critic)
    for net in (actor_t, critic_t):
        net.requires_grad_(False)
    return TD3Update(actor, critic, actor_t, critic_t, RunningNormalizer(17),
                     torch.optim.Adam(actor.parameters(), 1e-4),
                     torch.optim.Adam(critic.parameters(), 1e-3), TD3Hyperparams(), precision)


def _losses(policy: str, precision: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    replay = TransitionReplay(1000, 17, 6, seed=1)
    replay.add({"obs": rng.normal(size=(1000, 17)), "actions": rng.uniform(-1, 1, (1000, 6)),
                "rewards": rng.normal(size=1000), "next_obs": rng.normal(size=(1000, 17)),
                "terminateds": np.zeros(1000)})
    td3 = _td3(policy, precision)
    out = []
    for i in range(UPDATES):
        torch.manual_seed(100 + i)  # same target-smoothing noise in both precisions
        stats = td3.step(replay.sample(100))
        out.append((stats["critic_loss"].item(),
                    stats["actor_loss"].item() if "actor_loss" in stats else np.nan))
    assert all(p.dtype == torch.float32 for p in td3.actor.parameters())
    return np.array(out)


@pytest.mark.parametrize("policy", ["spikerl", "dsrl", "ann"])
def test_bf16_losses_track_fp32(policy):
    fp32, bf16 = _losses(policy, "fp32"), _losses(policy, "bf16")
    assert not np.array_equal(fp32, bf16, equal_nan=True)  # bf16 really ran
    ok = np.abs(bf16 - fp32) <= REL_TOL * np.abs(fp32) + ABS_TOL
    assert ok[~np.isnan(fp32)].all(), np.c_[fp32, bf16]
