"""Fault tolerance of remote env runners: a runner process killed with SIGKILL mid-training is
replaced, training goes on, and every counted env step is one stored transition."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from spikerl_ray.algorithms import build_config
from spikerl_ray.settings import RunSettings
from tests.fast_start import FAST_START

FRAGMENT = 100  # env steps per runner and training step (one env per runner)


def _config(async_sampling: bool):
    return (build_config(RunSettings(policy="ann", env="Pendulum-v1", env_runners=2,
                                     warmup_steps=1000, eval_every=0,
                                     async_sampling=async_sampling, energy_monitor=True,
                                     estimate_cpu_watts=10.0, **FAST_START))
            .training(num_steps_sampled_before_learning_starts=200)
            .env_runners(rollout_fragment_length=FRAGMENT, num_cpus_per_env_runner=0.5)
            .reporting(min_sample_timesteps_per_iteration=2 * FRAGMENT))


def _pids(algo) -> list[int]:
    return algo.env_runner_group.foreach_env_runner(lambda r: os.getpid(),
                                                    local_env_runner=False)


def _replay(algo) -> np.ndarray:
    """Every stored (obs, action) row of the learner's replay."""
    def rows(learner):
        data, n = learner.replay._data, len(learner.replay)
        return np.concatenate([data["obs"][:n].cpu().numpy(),
                               data["actions"][:n].cpu().numpy()], axis=1)

    return next(iter(algo.learner_group.foreach_learner(rows))).get()


@pytest.mark.slow
@pytest.mark.parametrize("async_sampling", [False, True], ids=["sync", "async"])
def test_killed_env_runner_is_replaced_and_steps_count_once(ray_session, async_sampling):
    algo = _config(async_sampling).build_algo()
    try:
        assert algo.config.restart_failed_env_runners
        first = algo.train()
        assert first["env_runners"]["num_env_steps_sampled_lifetime"] == 2 * FRAGMENT
        before = _pids(algo)
        assert len(before) == 2
        os.kill(before[0], signal.SIGKILL)

        sampled = [first["env_runners"]["num_env_steps_sampled_lifetime"]]
        for _ in range(8):
            result = algo.train()
            sampled.append(result["env_runners"]["num_env_steps_sampled_lifetime"])
            learner = result["learners"]["default_policy"]
            # Counted steps are exactly the stored transitions: none lost, none twice.
            assert learner["replay_size"] == sampled[-1]
            if len(set(_pids(algo)) - set(before)) == 1 and sampled[-1] >= 1200:
                break
            time.sleep(0.5)
        after = _pids(algo)
        assert len(after) == 2 and before[0] not in after and before[1] in after
        steps = np.diff(sampled)
        # Whole fragments only (an iteration short of its minimum runs another step).
        assert all(s > 0 and s % FRAGMENT == 0 for s in steps)
        assert steps[-1] == 2 * FRAGMENT  # both runners deliver again
        assert learner["num_gradient_updates_lifetime"] > 0
        # The replacement drew a fresh seed: it did not replay its predecessor's episodes.
        rows = _replay(algo)
        assert len(np.unique(rows, axis=0)) == len(rows)
        # The energy estimate follows the replacement's process.
        tracked = ray_session.get(algo._energy_meter.monitors[0].__ray_call__.remote(
            lambda monitor: monitor.processes.pids))
        assert set(after) <= set(tracked) and "energy" in result
    finally:
        algo.stop()
