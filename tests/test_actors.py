"""Actors by name, critics and the observation normalizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies import RunningNormalizer, TwinQCritic, build_actor, dsrl_threshold
from tests.reference import reference_forward

NAMES = ["spikerl", "popsan", "dsrl", "ann"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [1, 1024])
def test_actor_shapes_and_range(name, batch):
    torch.manual_seed(0)
    actor = build_actor(name, obs_dim=17, act_dim=6)
    out = actor(torch.randn(batch, 17))
    assert out.shape == (batch, 6)
    assert torch.all(out.abs() < 1.0)


@pytest.mark.parametrize("name", NAMES)
def test_actor_is_deterministic_under_a_seed(name):
    obs = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        outs.append(build_actor(name, 5, 2)(obs))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("name", NAMES)
def test_actor_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    actor = build_actor(name, 4, 2)
    actor(torch.randn(64, 4)).sum().backward()
    missing = [n for n, p in actor.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_spike_counts_on_request_only():
    torch.manual_seed(0)
    actor = build_actor("spikerl", 3, 2)
    obs = torch.randn(8, 3)
    plain = actor(obs)
    action, counts = actor(obs, return_spikes=True)
    assert torch.equal(plain, action)
    assert set(counts) == {"encoder", "hidden0", "hidden1", "output"}
    assert counts["hidden0"].shape == (256,)
    assert counts["output"].shape == (20,)
    # At most one spike per neuron per timestep per sample.
    assert 0 < counts["hidden0"].sum() <= 256 * 5 * 8
    assert build_actor("ann", 3, 2)(obs, return_spikes=True)[1] == {}


def test_batched_timesteps_equal_per_timestep_reference():
    torch.manual_seed(0)
    actor = build_actor("popsan", 11, 3).double()
    obs = torch.randn(64, 11, dtype=torch.float64)
    fast = actor(obs)
    ref = reference_forward(actor, obs)
    assert torch.allclose(fast, ref, atol=1e-12)
    g_fast = torch.autograd.grad(fast.sum(), list(actor.parameters()))
    g_ref = torch.autograd.grad(reference_forward(actor, obs).sum(),
                                list(actor.parameters()))
    for a, b in zip(g_fast, g_ref):
        assert torch.allclose(a, b, atol=1e-10)


def test_unknown_actor_name():
    with pytest.raises(ValueError, match="unknown policy 'snn'"):
        build_actor("snn", 3, 1)


def test_dsrl_thresholds_per_environment():
    assert dsrl_threshold("HalfCheetah-v5") == 0.8
    assert dsrl_threshold("Hopper-v5") == 2.0
    assert dsrl_threshold("Ant-v5") == 2.5
    assert dsrl_threshold("Pendulum-v1") == 1.0
    layer = build_actor("dsrl", 3, 1, threshold=2.0).layers[0]
    assert (layer.threshold, layer.cdecay, layer.vdecay) == (2.0, 0.5, 0.5)


def test_twin_critic_outputs_two_independent_estimates():
    critic = TwinQCritic(5, 2)
    q1, q2 = critic(torch.randn(7, 5), torch.randn(7, 2))
    assert q1.shape == q2.shape == (7,)
    assert not torch.equal(q1, q2)


def test_normalizer_matches_numpy_statistics():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 4))
    norm = RunningNormalizer(4)
    for chunk in np.array_split(data, 7):
        norm.update(torch.as_tensor(chunk))
    assert norm.mean.numpy() == pytest.approx(data.mean(0))
    assert norm.var.numpy() == pytest.approx(data.var(0))
    z = norm(torch.as_tensor(data[:5], dtype=torch.float32)).numpy()
    expected = np.clip((data[:5] - data.mean(0)) / data.std(0), -3, 3)
    assert z == pytest.approx(expected, abs=1e-4)
    assert norm(torch.full((1, 4), 1e6)).max().item() == 3.0


def test_per_environment_settings_of_each_paper():
    from policies import actor_kwargs_for_env

    assert actor_kwargs_for_env("popsan", "Hopper-v5") == {"deterministic_encoder": False}
    assert actor_kwargs_for_env("popsan", "HalfCheetah-v5") == {"deterministic_encoder": True}
    assert actor_kwargs_for_env("dsrl", "Ant-v5") == {"threshold": 2.5}
    assert actor_kwargs_for_env("spikerl", "Hopper-v5") == {}
    assert build_actor("spikerl", 3, 1, **actor_kwargs_for_env("spikerl", "Hopper-v5")
                       ).encoder.deterministic
