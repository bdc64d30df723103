"""Users' own actors (docs/actors.md), Ray-free: factories named ``"package.module:factory"``,
the capabilities the framework reads from a module, the one-line refusal of a feature an
actor cannot serve, and the example LIF actor's NIR export run back in snnTorch."""

from __future__ import annotations

import itertools
import math
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from examples.lif_actor import LIFActor
from examples.plain_actor import PlainActor
from policies import (
    ACTORS,
    Capability,
    MissingCapability,
    RunningNormalizer,
    build_actor,
    detect,
    is_builtin,
    require,
    resolve_factory,
)
from policies.diagnostics import actor_statistics
from policies.gaussian import build_gaussian_actor
from policies.operations import inference_operations

LIF = "examples.lif_actor:make_actor"
PLAIN = "examples.plain_actor:make_actor"
OBS = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def user_module(monkeypatch):
    """An importable module ``user_factories`` with factories of every kind."""
    module = types.ModuleType("user_factories")
    module.plain = lambda obs_dim, act_dim, hidden=8: PlainActor(obs_dim, act_dim, hidden)

    def with_backend(obs_dim, act_dim, backend="torch"):
        actor = PlainActor(obs_dim, act_dim)
        actor.backend = backend
        return actor

    def with_kwargs(obs_dim, act_dim, **kwargs):
        actor = PlainActor(obs_dim, act_dim)
        actor.kwargs = kwargs
        return actor

    module.with_backend, module.with_kwargs = with_backend, with_kwargs
    module.not_a_module = lambda obs_dim, act_dim: "an actor"
    module.NOT_CALLABLE = 3
    monkeypatch.setitem(sys.modules, "user_factories", module)
    return module


# --- resolving and building ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ACTORS))
def test_builtins_resolve_to_their_registry_entries(name):
    assert is_builtin(name)
    assert resolve_factory(name) is ACTORS[name]


def test_a_module_path_resolves_to_the_users_factory():
    from examples import lif_actor

    assert not is_builtin(LIF)
    assert resolve_factory(LIF) is lif_actor.make_actor
    actor = build_actor(LIF, 5, 2, hidden=(16, 8), timesteps=3, backend="fused")
    assert isinstance(actor, LIFActor) and actor.timesteps == 3
    assert [fc.out_features for fc in actor.fcs] == [16, 8]
    out = actor(OBS)
    assert out.shape == (64, 2) and torch.all(out.abs() < 1.0)


def test_backend_reaches_only_factories_that_take_it(user_module):
    assert build_actor("user_factories:with_backend", 5, 2, backend="fused").backend == "fused"
    assert build_actor("user_factories:with_kwargs", 5, 2, backend="fused", gain=2
                       ).kwargs == {"backend": "fused", "gain": 2}
    # No backend parameter: not passed; the user's own kwargs still are.
    assert build_actor("user_factories:plain", 5, 2, backend="fused", hidden=4
                       ).net[0].out_features == 4
    assert isinstance(build_actor("ann", 5, 2, backend="fused"), nn.Module)
    with pytest.raises(TypeError, match="unexpected keyword argument 'gain'"):
        build_actor("user_factories:plain", 5, 2, gain=2)


@pytest.mark.parametrize("policy, message", [
    ("snn", ("unknown policy 'snn'; choose one of ann, dsrl, popsan, spikerl or name your own "
             "factory as 'package.module:factory' (docs/actors.md)")),
    ("mod:", "unknown policy 'mod:'"),
    ("no_such_module_xyz:make", ("policy 'no_such_module_xyz:make': cannot import module "
                                 "'no_such_module_xyz' (ModuleNotFoundError: No module named "
                                 "'no_such_module_xyz'); is its folder on PYTHONPATH?")),
    ("user_factories:missing", ("policy 'user_factories:missing': module 'user_factories' has "
                                "no attribute 'missing'")),
    ("user_factories:NOT_CALLABLE", ("policy 'user_factories:NOT_CALLABLE': "
                                     "user_factories.NOT_CALLABLE is a int, not a "
                                     "factory(obs_dim, act_dim)")),
    ("user_factories:not_a_module", ("policy 'user_factories:not_a_module' returned a str, "
                                     "not a torch.nn.Module")),
])
def test_each_bad_policy_is_one_clear_value_error(user_module, policy, message):
    with pytest.raises(ValueError) as info:
        build_actor(policy, 3, 1)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


# --- capabilities --------------------------------------------------------------------------


EVERY = frozenset(Capability)


@pytest.mark.parametrize("name, expected", [
    ("spikerl", EVERY), ("popsan", EVERY), ("dsrl", EVERY),
    ("ann", {Capability.PRE_SQUASH, Capability.OPERATIONS}),  # no spikes, no NIR graph
    (LIF, EVERY), (PLAIN, frozenset()),
])
def test_capabilities_are_read_from_the_module(name, expected):
    assert detect(build_actor(name, 5, 2)) == expected


def test_kwargs_alone_declare_nothing():
    class Vague(nn.Module):
        timesteps = 5

        def forward(self, obs, **kwargs):
            return obs

    assert detect(Vague()) == frozenset()


def test_require_names_actor_capability_and_feature_in_one_line():
    plain = build_actor(PLAIN, 5, 2)
    with pytest.raises(MissingCapability) as info:
        require(plain, Capability.PRE_SQUASH, "SAC", PLAIN)
    assert str(info.value) == (f"actor {PLAIN} has no pre-squash output "
                               "(forward(obs, squash=False)), which SAC needs; see "
                               "docs/actors.md")
    with pytest.raises(ValueError, match="actor PlainActor has no spike counts"):
        require(plain, Capability.SPIKE_COUNTS, "firing rates")
    require(build_actor(LIF, 5, 2), Capability.PRE_SQUASH, "SAC", LIF)


# --- features with and without the capability ----------------------------------------------


def test_sac_needs_pre_squash_ppo_takes_any_actor():
    with pytest.raises(MissingCapability, match=f"actor {PLAIN} has no pre-squash output .*"
                                                 "which SAC's Gaussian mean needs"):
        build_gaussian_actor(PLAIN, 5, 2, log_std="network", squash_mean=False)
    ppo = build_gaussian_actor(PLAIN, 5, 2, log_std="free", squash_mean=True, hidden=16)
    assert torch.equal(ppo.mean(OBS), ppo.actor(OBS))
    assert ppo(OBS).shape == (64, 4)
    torch.manual_seed(0)
    sac = build_gaussian_actor(LIF, 5, 2, log_std="network", squash_mean=False, hidden=(16,))
    mean = sac.mean(OBS)
    assert torch.equal(mean, sac.actor(OBS, squash=False))
    assert torch.allclose(torch.tanh(mean), sac.actor(OBS))
    # The user's ``hidden`` is the actor's own; the log-std MLP stays 256-256.
    assert [m.out_features for m in sac.log_std_net if isinstance(m, nn.Linear)] == [256, 256, 2]


def test_lif_actor_trains_through_its_pre_squash_output():
    """TD3's actor loss with the pre-tanh penalty reaches every parameter (surrogate
    gradients through the spikes)."""
    torch.manual_seed(0)
    actor, critic = build_actor(LIF, 5, 2), nn.Linear(7, 1)
    pre = actor(OBS, squash=False)
    loss = -critic(torch.cat([OBS, torch.tanh(pre)], -1)).mean() + pre.square().mean()
    loss.backward()
    missing = [n for n, p in actor.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_statistics_of_a_plain_module_are_what_it_can_give():
    plain = build_actor(PLAIN, 5, 2)
    stats = actor_statistics(plain.forward, OBS, None, plain)
    assert list(stats) == ["action_std"] and stats["action_std"] > 0
    with pytest.raises(MissingCapability, match="no operation counts"):
        inference_operations(plain, {}, batch=1)


def test_statistics_of_the_lif_actor():
    torch.manual_seed(0)
    actor = build_actor(LIF, 5, 2, hidden=(16, 8), timesteps=3)
    stats = actor_statistics(actor.forward, OBS, actor.timesteps, actor)
    for layer in ("hidden0", "hidden1"):
        assert 0.0 < stats[f"rate_{layer}"] < 1.0
        assert 0.0 <= stats[f"silent_{layer}"] + stats[f"always_{layer}"] <= 1.0
    assert "rate_output" not in stats
    assert stats["pre_tanh_abs"] > 0 and 0 <= stats["pre_tanh_saturated"] <= 1
    # Operations by hand: 3 timesteps x 5 inputs x 16 real-valued MACs; each hidden0 spike
    # reaches 8 synapses, each hidden1 spike 2 (the readout).
    _, counts = actor(OBS, return_spikes=True)
    sops = (counts["hidden0"].sum() * 8 + counts["hidden1"].sum() * 2).item() / 64
    assert stats["macs"] == 3 * 5 * 16
    assert stats["synaptic_ops"] == pytest.approx(sops)
    assert not math.isnan(stats["inference_energy_pj"])


# --- NIR -----------------------------------------------------------------------------------


def test_nir_export_refuses_an_actor_without_a_graph():
    pytest.importorskip("nir")
    from policies.nir_export import export_nir

    with pytest.raises(MissingCapability) as info:
        export_nir(build_actor(PLAIN, 5, 2))
    assert str(info.value) == ("actor PlainActor has no spiking layers to export (a to_nir(dt) "
                               "method returning a nir.NIRGraph, and an int timesteps "
                               "attribute), which NIR export needs; see docs/actors.md")


def test_lif_actor_exports_to_nir_and_snntorch_reproduces_it(tmp_path):
    """The example's own graph with our normalizer on the host: written, read back, run in
    snnTorch 1.0.0 timestep by timestep; every neuron's spike count and the actions equal
    the actor's."""
    nir = pytest.importorskip("nir")
    pytest.importorskip("snntorch")
    from nir_runners import import_snntorch, run_snntorch

    from policies.nir_export import NIR_DT, HostSide, contract, export_nir

    torch.manual_seed(0)
    actor = build_actor(LIF, 5, 2).eval()
    raw = torch.randn(300, 5, generator=torch.Generator().manual_seed(1)) * 2.0 + 1.0
    normalizer = RunningNormalizer(5)
    normalizer.update(raw)
    nir.write(tmp_path / "lif.nir", export_nir(actor, normalizer))
    graph = nir.read(tmp_path / "lif.nir")
    names = ["input", "hidden0_affine", "hidden0_lif", "hidden1_affine", "hidden1_lif",
             "readout", "output"]
    assert sorted(graph.edges) == sorted(itertools.pairwise(names))
    lif = graph.nodes["hidden0_lif"]
    assert np.all(1 - np.float32(NIR_DT) / lif.tau_syn == np.float32(0.5))
    assert np.all(1 - np.float32(NIR_DT) / lif.tau_mem == np.float32(0.75))
    c = contract(graph)
    assert (c["timesteps"], c["input"]["shape"], c["output"]["shape"]) == (5, [5], [2])
    assert c["host_after"] == "action = tanh(mean over the T timesteps of the outputs)"

    host = HostSide(graph.metadata)
    outputs, spikes = run_snntorch(import_snntorch(graph), host.encode(raw))
    with torch.no_grad():
        actions, counts = actor(normalizer(raw), return_spikes=True)
    assert list(spikes) == ["hidden0_lif", "hidden1_lif"]
    for name, ours in counts.items():
        assert 0.05 < ours.mean().item() / (5 * 300) < 0.6, name  # busy: the test can fail
        assert torch.equal(spikes[f"{name}_lif"].sum(dim=(0, 1)), ours), name
    torch.testing.assert_close(host.decode(outputs), actions, rtol=0, atol=1e-6)
