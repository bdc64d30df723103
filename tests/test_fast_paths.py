"""The throughput options of TD3 end to end: compiled networks and overlapped sampling."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from spikerl_ray.algorithms import build_config
from spikerl_ray.settings import RunSettings
from spikerl_ray.common.replay_algorithm import SAMPLE_TAG
from tests.fast_start import FAST_START


def test_compiled_targets_keep_their_own_weights():
    """Compiling after the targets are copied: each network runs with its own weights."""
    from spikerl_ray.td3.rl_module import TD3TorchRLModule

    env = gym.make("Pendulum-v1")
    module = TD3TorchRLModule(observation_space=env.observation_space,
                              action_space=env.action_space,
                              model_config={"policy": "spikerl", "spiking_backend": "torch",
                                            "compile_networks": True})
    with torch.no_grad():
        for p in module.actor.parameters():
            p.add_(0.5 * torch.randn_like(p))
    plain = TD3TorchRLModule(observation_space=env.observation_space,
                             action_space=env.action_space,
                             model_config={"policy": "spikerl", "spiking_backend": "torch"})
    plain.load_state_dict(module.state_dict())
    obs = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.equal(module.actor(obs), module.target_actor(obs))
        assert torch.allclose(module.actor(obs), plain.actor(obs), atol=1e-5)
        assert torch.allclose(module.target_actor(obs), plain.target_actor(obs), atol=1e-5)


def test_async_sampling_overlaps_and_feeds_every_step(ray_session):
    config = (build_config(RunSettings(policy="ann", env="Pendulum-v1", env_runners=1,
                                       warmup_steps=500, eval_every=0, async_sampling=True,
                                       **FAST_START))
              .training(num_steps_sampled_before_learning_starts=500))
    algo = config.build_algo()
    try:
        for _ in range(2):
            result = algo.train()
        # The next fragment is in flight while the driver is idle between iterations.
        assert algo.env_runner_group.num_in_flight_async_reqs(tag=SAMPLE_TAG) == 1
        sampled = int(result["num_env_steps_sampled_lifetime"])
        learner = result["learners"]["default_policy"]
        replay = [r.get() for r in algo.learner_group.foreach_learner(
            lambda l: len(l.replay))][0]
        assert sampled >= 2000 and replay == sampled  # every collected step reached replay
        # One update per step from the 50-step fragment that brings the total to 500 on.
        assert learner["num_gradient_updates_lifetime"] == sampled - 500 + 50
        assert np.isfinite(learner["critic_loss"])
    finally:
        algo.stop()


def test_async_sampling_needs_remote_runners(ray_session):
    config = build_config(RunSettings(policy="ann", env="Pendulum-v1", async_sampling=True))
    with pytest.raises(ValueError, match="needs num_env_runners >= 1"):
        config.validate()


def test_defaults_train_compiled(ray_session):
    """With no option given, a run trains the fastest verified configuration: networks
    compiled (the plain-ops backend) on learner and env runner, in fp32, and one remote env
    runner's actions come from the compiled actor; "auto" precision means bf16 where this
    CPU computes it natively."""
    from spikerl_ray.core.platform import bf16_supported, resolve_precision

    config = (build_config(RunSettings(policy="spikerl", env="Pendulum-v1", env_runners=1,
                                       warmup_steps=200, eval_every=0, energy_monitor=False))
              .training(num_steps_sampled_before_learning_starts=200)
              .env_runners(rollout_fragment_length=200))
    assert (config.compile_networks, config.spiking_backend, config.precision) == (
        True, "auto", "fp32")
    assert resolve_precision("auto", "cpu") == ("bf16" if bf16_supported("cpu") else "fp32")
    algo = config.build_algo()
    try:
        for _ in range(2):
            result = algo.train()
        assert result["learners"]["default_policy"]["num_gradient_updates_lifetime"] > 0

        def learner_setup(learner):
            module = learner.module["default_policy"].unwrapped()
            return (learner.update_rule.precision, module.actor.layers[0].backend,
                    module.actor._compiled_call_impl is not None, torch.get_num_threads())

        precision, backend, compiled, threads = next(iter(
            algo.learner_group.foreach_learner(learner_setup))).get()
        assert precision == "fp32"
        assert compiled and backend == "torch"
        assert threads == 1  # the driver's one reserved CPU (the local learner lives there)
        runner = algo.env_runner_group.foreach_env_runner(
            lambda r: (r.module.actor._compiled_call_impl is not None, torch.get_num_threads()),
            local_env_runner=False)
        assert runner == [(True, 1)]
    finally:
        algo.stop()


def test_defaults_fall_back_to_eager_where_compile_cannot_run(monkeypatch, caplog):
    from spikerl_ray.common import replay_algorithm as td3

    monkeypatch.setattr(td3, "compile_unavailable",
                        lambda device: "no C++ compiler for inductor's CPU code (test)")
    monkeypatch.setattr(td3, "log_once", lambda key: True)
    config = build_config(RunSettings(policy="spikerl", env="Pendulum-v1"))
    with caplog.at_level("WARNING", logger=td3.__name__):
        config.validate()
    assert config.compile_networks is False
    assert [r.getMessage() for r in caplog.records] == [
        "torch.compile cannot run here (no C++ compiler for inductor's CPU code (test)); the "
        "networks run eagerly (pass --no-compile to silence this)"]
    # Asked for explicitly, no compile means no check and no warning.
    caplog.clear()
    build_config(RunSettings(policy="spikerl", env="Pendulum-v1", compile=False)).validate()
    assert not caplog.records
