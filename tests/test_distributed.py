"""Data-parallel learners on real Ray actors (Gloo): gradients are really averaged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikerl_ray.algorithms import build_config
from spikerl_ray.settings import RunSettings
from tests.ddp_checks import averaged_gradient_check, learner_states
from tests.fast_start import FAST_START


def _config(allreduce_dtype: str = "fp32", backend: str = "auto"):
    return (build_config(RunSettings(policy="spikerl", env="Pendulum-v1", learners=2,
                                     warmup_steps=200, eval_every=0, backend=backend,
                                     **FAST_START))
            .training(num_steps_sampled_before_learning_starts=200,
                      allreduce_dtype=allreduce_dtype)
            .env_runners(rollout_fragment_length=100)
            .reporting(min_sample_timesteps_per_iteration=200))


@pytest.fixture(params=["auto", "gloo"])
def two_learners(ray_session, request):
    # Function-scoped: two learners take both CPUs of the test cluster, so no two of these
    # algorithms may live at once. "auto": Ray Train's process group; an explicit backend: a
    # group of the learners' own (torch.distributed.new_group), which DDP then reduces over.
    algo = _config(backend=request.param).build_algo()
    yield algo
    algo.stop()


def test_two_learners_hold_bitwise_identical_parameters(two_learners):
    explicit = two_learners.config.torch_distributed_backend != "auto"
    info = [r.get() for r in two_learners.learner_group.foreach_learner(
        lambda l: (torch.distributed.get_world_size(l.process_group),
                   torch.distributed.get_backend(l.process_group),
                   l.process_group is not None,
                   [type(m).__name__ for m in l.ddp_modules],
                   [m.process_group is (l.process_group or torch.distributed.group.WORLD)
                    for m in l.ddp_modules]))]
    assert info == [(2, "gloo", explicit, ["DistributedDataParallel"] * 2, [True] * 2)] * 2
    before = learner_states(two_learners)[0]
    for _ in range(3):
        result = two_learners.train()
    assert result["learners"]["default_policy"]["num_gradient_updates_lifetime"] > 0
    a, b = learner_states(two_learners)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # The optimizers stepped: actor, critics and targets all moved.
    for prefix in ("actor.", "critic.", "target_actor.", "target_critic."):
        moved = [k for k in a if k.startswith(prefix) and not torch.equal(a[k], before[k])]
        assert moved, prefix
    # The replay shards differ (each learner samples its own data) yet weights agree.
    sizes = [r.get() for r in two_learners.learner_group.foreach_learner(
        lambda l: (len(l.replay), float(l.replay._data["rewards"][:50].sum())))]
    assert sizes[0][0] > 0 and sizes[0][1] != sizes[1][1]


def test_the_averaged_gradient_is_the_gradient_of_the_whole_batch(two_learners):
    """Each learner's actor-loss gradient through DDP, on its own half of a batch of 2 x B,
    equals the gradient of the whole batch on one module: one optimizer step of L learners
    is a step on the L x B batch (tests/ddp_checks.py; across nodes: test_multinode.py)."""
    check = averaged_gradient_check(two_learners)
    assert check["learners"] == 2 and check["params"] > 0
    assert check["differ_between_learners"] == []  # averaged: the same on both
    assert check["differ_from_whole_batch"] == []
    assert len(check["zero"]) < check["params"]


@pytest.mark.parametrize("regime, divisor", [("same_steps", 1), ("same_samples", 2)])
def test_optimizer_steps_per_env_step_with_two_learners(ray_session, regime, divisor):
    """With 2 learners, "same_steps" does as many optimizer steps per env step as one learner
    (here: its count measured the same way); "same_samples" (the SpikeRL paper's regime)
    half as many."""
    def updates(learners: int) -> tuple[int, int]:
        algo = _config().learners(num_learners=learners).training(
            data_parallel=regime).build_algo()
        try:
            for _ in range(2):
                result = algo.train()
            return (result["learners"]["default_policy"]["num_gradient_updates_lifetime"],
                    result["num_env_steps_sampled_lifetime"])
        finally:
            algo.stop()

    (two, steps_two), (one, steps_one) = updates(2), updates(0)
    assert steps_two == steps_one and one > 0
    assert two == one // divisor


def test_bypassing_ddp_hooks_makes_learners_diverge(ray_session):
    # The negative control of the test above: with SpikeRL's bug the same check fails.
    algo = _config().build_algo()
    try:
        def bypass_ddp(learner) -> None:  # nested: Ray pickles it by value
            """SpikeRL's public code: calls go through ``ddp.module``, skipping DDP's hooks."""
            learner.update_rule.actor = learner.update_rule.actor.module
            learner.update_rule.critic = learner.update_rule.critic.module

        [r.get() for r in algo.learner_group.foreach_learner(bypass_ddp)]
        for _ in range(2):
            algo.train()
        a, b = learner_states(algo)
        assert not torch.equal(a["actor.layers.0.fc.weight"], b["actor.layers.0.fc.weight"])
    finally:
        algo.stop()


def test_bf16_allreduce_hook_is_registered_and_learners_agree(ray_session):
    algo = _config("bf16").build_algo()
    try:
        hooks = [r.get() for r in algo.learner_group.foreach_learner(
            lambda l: [m._get_ddp_logging_data().get("comm_hook") for m in l.ddp_modules])]
        assert hooks == [["bf16_allreduce_hook"] * 2] * 2
        for _ in range(2):
            algo.train()
        a, b = learner_states(algo)
        assert all(torch.equal(a[k], b[k]) for k in a)
    finally:
        algo.stop()


def test_compiled_networks_under_ddp_stay_identical(ray_session):
    algo = _config().training(spiking_backend="torch", compile_networks=True).build_algo()
    try:
        before = learner_states(algo)[0]
        for _ in range(2):
            result = algo.train()
        assert result["learners"]["default_policy"]["num_gradient_updates_lifetime"] > 0
        first, second = learner_states(algo)
        assert any(not torch.equal(before[k], first[k]) for k in before)
        assert all(torch.equal(first[k], second[k]) for k in first)
    finally:
        algo.stop()


def _holds_transitions(value) -> bool:
    """Whether a deserialized value is, or directly holds, a fragment of transitions."""
    if isinstance(value, dict):
        return isinstance(value.get("next_obs"), np.ndarray)
    return isinstance(value, (list, tuple)) and any(_holds_transitions(v) for v in value)


@pytest.mark.parametrize("learners", [1, 0], ids=["remote_learner", "local_learner"])
def test_transitions_reach_a_remote_learner_without_the_driver_fetching_them(
        ray_session, monkeypatch, learners):
    """With a remote learner the driver passes object references only: nothing it
    deserializes holds transitions. The local learner lives in the driver, so there the
    driver must fetch both fragments (the control that shows the spy sees them)."""
    from ray._private.worker import Worker

    config = (build_config(RunSettings(policy="ann", env="Pendulum-v1", env_runners=2,
                                       learners=learners, warmup_steps=200, eval_every=0,
                                       energy_monitor=False, **FAST_START))
              .training(num_steps_sampled_before_learning_starts=200)
              .env_runners(rollout_fragment_length=100, num_cpus_per_env_runner=0.5)
              .reporting(min_sample_timesteps_per_iteration=200))
    algo = config.build_algo()
    deserialize = Worker.deserialize_objects
    fetched = []

    def spy(self, *args, **kwargs):
        values = deserialize(self, *args, **kwargs)
        fetched.extend(v for v in values if _holds_transitions(v))
        return values

    try:
        algo.train()
        monkeypatch.setattr(Worker, "deserialize_objects", spy)
        result = algo.train()
        monkeypatch.undo()
    finally:
        algo.stop()
    learner = result["learners"]["default_policy"]
    assert learner["replay_size"] == result["env_runners"]["num_env_steps_sampled_lifetime"] \
        == 400
    assert learner["num_gradient_updates_lifetime"] > 0
    assert len(fetched) == (0 if learners else 2)
