"""The Ray-free learner math: device replay and the TD3 update step."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from policies import RunningNormalizer, TwinQCritic, build_actor
from spikerl_ray.core.replay import TransitionReplay
from tests.host_syncs import host_syncs
from spikerl_ray.core.td3 import TD3Hyperparams, TD3Update, critic_loss, polyak_update


def _transitions(n, obs_dim=3, act_dim=2, start=0):
    idx = np.arange(start, start + n, dtype=np.float32)
    return {"obs": np.repeat(idx[:, None], obs_dim, 1), "actions": np.zeros((n, act_dim)),
            "rewards": idx, "next_obs": np.repeat(idx[:, None] + 1, obs_dim, 1),
            "terminateds": np.zeros(n)}


def test_replay_ring_buffer_keeps_newest():
    replay = TransitionReplay(capacity=10, obs_dim=3, act_dim=2, seed=0)
    replay.add(_transitions(7))
    replay.add(_transitions(7, start=7))
    assert len(replay) == 10
    batch = replay.sample(500)
    assert set(batch.rewards.tolist()) == set(range(4, 14))
    assert torch.equal(batch.obs[:, 0], batch.rewards)
    assert torch.equal(batch.next_obs[:, 0], batch.rewards + 1)
    assert replay.nbytes == 10 * (3 + 2 + 1 + 3 + 1) * 4


def test_replay_sampling_is_seeded():
    a, b = (TransitionReplay(100, 3, 2, seed=5) for _ in range(2))
    for r in (a, b):
        r.add(_transitions(50))
    assert torch.equal(a.sample(32).rewards, b.sample(32).rewards)


def test_empty_replay_refuses_to_sample():
    with pytest.raises(ValueError, match="empty"):
        TransitionReplay(10, 3, 2).sample(4)


def _update(policy="spikerl", precision="fp32", hp=TD3Hyperparams(), compile=False):
    torch.manual_seed(0)
    actor, critic = build_actor(policy, 3, 2), TwinQCritic(3, 2)
    actor_t, critic_t = copy.deepcopy(actor), copy.deepcopy(critic)
    for net in (actor_t, critic_t):
        net.requires_grad_(False)
    norm = RunningNormalizer(3)
    return TD3Update(actor, critic, actor_t, critic_t, norm,
                     torch.optim.Adam(actor.parameters(), 1e-3),
                     torch.optim.Adam(critic.parameters(), 1e-3), hp, precision,
                     compile=compile)


def test_compiled_update_matches_eager():
    # Without target smoothing noise the update is deterministic, so both must agree.
    hp = TD3Hyperparams(policy_noise=0.0)
    eager, compiled = _update(hp=hp), _update(hp=hp, compile=True)
    replay = TransitionReplay(100, 3, 2, seed=0)
    replay.add(_transitions(100))
    for _ in range(2):  # a critic-only update, then one with the actor and targets
        batch = replay.sample(32)
        s_eager, s_compiled = eager.step(batch), compiled.step(batch)
        for key in s_eager:
            assert torch.allclose(s_compiled[key], s_eager[key], atol=1e-5, rtol=1e-5), key
    for net in ("actor", "critic", "actor_target", "critic_target"):
        for a, b in zip(getattr(eager, net).parameters(), getattr(compiled, net).parameters()):
            assert torch.allclose(a, b, atol=1e-5), net
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0


def test_actor_and_targets_update_only_every_policy_delay():
    td3 = _update()
    replay = TransitionReplay(100, 3, 2, seed=0)
    replay.add(_transitions(100))
    actor0 = [p.clone() for p in td3.actor.parameters()]
    critic0 = [p.clone() for p in td3.critic.parameters()]
    target0 = [p.clone() for p in td3.critic_target.parameters()]
    stats = td3.step(replay.sample(32))
    assert "actor_loss" not in stats
    assert all(torch.equal(a, b) for a, b in zip(actor0, td3.actor.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(target0, td3.critic_target.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(critic0, td3.critic.parameters()))
    stats = td3.step(replay.sample(32))
    assert "actor_loss" in stats
    assert not all(torch.equal(a, b) for a, b in zip(actor0, td3.actor.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(target0, td3.critic_target.parameters()))


def test_polyak_update_moves_target_by_tau():
    src, tgt = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = tgt.weight.detach().clone()
    polyak_update(src, tgt, 0.1)
    assert torch.allclose(tgt.weight, 0.9 * before + 0.1 * src.weight)


def test_polyak_update_with_a_tensor_tau_does_not_sync():
    """TD3Update passes tau as a tensor (0 for a skipped update); reading it back would stall
    a GPU every update and break CUDA graph capture."""
    src, tgt = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = tgt.weight.detach().clone()
    assert host_syncs(lambda: polyak_update(src, tgt, torch.tensor(0.1))) == {}
    assert torch.allclose(tgt.weight, 0.9 * before + 0.1 * src.weight)
    assert host_syncs(lambda: torch.tensor(1.0).item()) == {"_local_scalar_dense": 1}


def test_terminal_transitions_do_not_bootstrap():
    td3 = _update("ann")
    replay = TransitionReplay(10, 3, 2)
    t = _transitions(10)
    t["terminateds"] = np.ones(10)
    replay.add(t)
    batch = replay.sample(10)
    _, stats = critic_loss(td3.actor_target, td3.critic, td3.critic_target, td3.normalize,
                           batch, td3.hp)
    assert stats["target_mean"].item() == pytest.approx(batch.rewards.mean().item())


@pytest.mark.parametrize("policy", ["spikerl", "ann"])
def test_bf16_update_runs_with_fp32_weights(policy):
    td3 = _update(policy, "bf16")
    replay = TransitionReplay(100, 3, 2, seed=0)
    replay.add(_transitions(100))
    for _ in range(4):
        stats = td3.step(replay.sample(32))
    assert torch.isfinite(stats["critic_loss"])
    assert all(p.dtype == torch.float32 for p in td3.actor.parameters())


def test_pre_tanh_penalty_adds_mean_square_of_pre_tanh_outputs():
    from spikerl_ray.core.td3 import actor_loss
    from spikerl_ray.core.replay import Batch

    torch.manual_seed(0)
    actor, critic = build_actor("spikerl", 3, 2), TwinQCritic(3, 2)
    obs = torch.randn(16, 3)
    batch = Batch(obs, torch.zeros(16, 2), torch.zeros(16), obs, torch.zeros(16))
    plain = actor_loss(actor, critic, lambda o: o, batch)
    pre = actor(obs, squash=False)
    assert torch.equal(torch.tanh(pre), actor(obs))
    penalized = actor_loss(actor, critic, lambda o: o, batch, pre_tanh_penalty=0.5)
    assert penalized.item() == pytest.approx(plain.item() + 0.5 * pre.square().mean().item(),
                                             rel=1e-6)
    # Negative control: without a penalty the loss is the plain -Q1 of the TD3 paper.
    assert plain.item() == pytest.approx(-critic(obs, actor(obs))[0].mean().item(), rel=1e-6)


def test_pre_tanh_penalty_pulls_a_saturated_decoder_back():
    # With a flat critic (all weights zero: Q = 0 and dQ/da = 0) only the penalty acts: the
    # gradient on a decoder bias of 4 points back towards 0; without it there is none.
    from spikerl_ray.core.td3 import actor_loss
    from spikerl_ray.core.replay import Batch

    torch.manual_seed(0)
    actor, critic = build_actor("spikerl", 3, 2), TwinQCritic(3, 2)
    for p in critic.parameters():
        p.data.zero_()
    actor.readout.bias.data.fill_(4.0)
    obs = torch.randn(16, 3)
    batch = Batch(obs, torch.zeros(16, 2), torch.zeros(16), obs, torch.zeros(16))
    for penalty in (1.0, 0.0):
        actor.zero_grad()
        actor_loss(actor, critic, lambda o: o, batch, pre_tanh_penalty=penalty).backward()
        grad = actor.readout.bias.grad
        assert (grad > 0).all() if penalty else (grad == 0).all()
