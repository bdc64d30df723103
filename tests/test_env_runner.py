"""TransitionEnvRunner.sample_transitions on real Gymnasium/MuJoCo envs: shapes, per-env continuity
across episode ends (NEXT_STEP autoreset), RLlib episode metrics, unsquashed actions, seeding."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import gymnasium as gym
import numpy as np
import pytest
from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

from spikerl_ray.algorithms import build_config
from spikerl_ray.settings import RunSettings
from spikerl_ray.common.env_runner import TransitionEnvRunner
from tests.fast_start import FAST_START

KEYS = ("obs", "actions", "rewards", "next_obs", "terminateds")


@pytest.fixture
def make_runner() -> Iterator[Callable[..., TransitionEnvRunner]]:
    """Builds local runners the way the Algorithm builds its local one; stops them after."""
    runners: list[TransitionEnvRunner] = []

    def make(env: str, num_envs: int = 1, fragment: int = 50) -> TransitionEnvRunner:
        config = (build_config(RunSettings(policy="spikerl", env=env, envs_per_runner=num_envs,
                                           warmup_steps=0, **FAST_START))
                  .env_runners(rollout_fragment_length=fragment))
        runners.append(TransitionEnvRunner(config=config))
        return runners[-1]

    yield make
    for runner in runners:
        runner.stop()


def _concat(fragments: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([f[k] for f in fragments]) for k in KEYS}


def _aggregate(runner: TransitionEnvRunner, root: MetricsLogger | None = None) -> MetricsLogger:
    """The runner's metrics aggregated into ``root`` as the Algorithm aggregates them."""
    root = root or MetricsLogger(root=True)
    root.aggregate([runner.get_metrics()])
    return root


@pytest.mark.parametrize("random_actions", [True, False])
def test_fragment_shapes_and_vector_order(make_runner, random_actions):
    runner = make_runner("HalfCheetah-v5", num_envs=4, fragment=10)
    frags = [runner.sample_transitions(random_actions=random_actions) for _ in range(3)]
    for f in frags:
        assert set(f) == set(KEYS)
        assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in f.values())
        assert f["obs"].shape == f["next_obs"].shape == (40, 17)
        assert f["actions"].shape == (40, 6)
        assert f["rewards"].shape == f["terminateds"].shape == (40,)
        assert np.abs(f["actions"]).max() <= 1.0
        assert not f["terminateds"].any()  # HalfCheetah never terminates
    # No episode ends (1000-step limit): rows are vector steps x envs, and every env's stream
    # continues exactly, across calls too.
    data = _concat(frags)
    np.testing.assert_array_equal(data["next_obs"][:-4], data["obs"][4:])
    assert not np.array_equal(data["obs"][:4], data["obs"][4:8])


def _links(data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """For each row, how many later rows start from its ``next_obs`` and how many earlier rows
    end in its ``obs`` (exact float equality: the same env state)."""
    same = (data["next_obs"][:, None, :] == data["obs"][None, :, :]).all(-1)  # [i, j]
    later = np.triu(same, k=1)
    return later.sum(1), later.sum(0)


@pytest.mark.parametrize("random_actions", [False, True])
def test_streams_continue_within_episodes_and_restart_after_ends(make_runner, random_actions):
    num_envs = 3
    runner = make_runner("InvertedPendulum-v5", num_envs=num_envs, fragment=40)
    data = _concat([runner.sample_transitions(random_actions=random_actions)
                    for _ in range(3)])  # 120 steps per env: below the 1000-step time limit
    assert len(data["rewards"]) == 3 * 40 * num_envs
    assert np.abs(data["actions"]).max() <= 1.0
    terminated = data["terminateds"] == 1.0
    assert set(np.unique(data["terminateds"])) <= {0.0, 1.0}
    assert terminated.sum() >= 5, "the test needs episode ends inside the sample"
    successors, predecessors = _links(data)
    # A terminated step's next_obs is the true final state: no transition starts from it
    # (the reset step of NEXT_STEP autoreset must not appear as a transition).
    assert (successors[terminated] == 0).all()
    # Within an episode each step's next_obs is the obs of exactly one later step, except
    # the last step of each env's stream.
    assert (successors[~terminated] <= 1).all()
    assert (successors[~terminated] == 0).sum() <= num_envs
    # Streams start only at reset observations (InvertedPendulum resets within +-0.01 of the
    # upright state): the first obs of each env and the obs after each episode end.
    starts = predecessors == 0
    assert (np.abs(data["obs"][starts]) <= 0.01 + 1e-6).all()
    assert terminated.sum() <= starts.sum() <= terminated.sum() + num_envs
    # The final rewards of InvertedPendulum-v5: 0 on termination, 1 otherwise.
    np.testing.assert_array_equal(data["rewards"], 1.0 - data["terminateds"])


def test_episode_metrics_match_sampled_episodes(make_runner):
    runner = make_runner("Hopper-v5", num_envs=1, fragment=150)
    frags = [runner.sample_transitions(random_actions=True) for _ in range(2)]
    data = _concat(frags)
    ends = np.flatnonzero(data["terminateds"])  # random Hopper falls within ~50 steps
    assert len(ends) >= 3
    # One env from a fresh reset: episodes are the runs of rows up to each terminated row.
    bounds = np.concatenate([[0], ends + 1])
    returns = [data["rewards"][a:b].astype(np.float64).sum() for a, b in zip(bounds, ends + 1)]
    lengths = np.diff(bounds)
    metrics = _aggregate(runner)
    assert metrics.peek("episode_return_mean") == pytest.approx(np.mean(returns), rel=1e-5)
    assert metrics.peek("episode_len_mean") == pytest.approx(lengths.mean())
    assert metrics.peek("episode_return_max") == pytest.approx(max(returns), rel=1e-5)
    assert metrics.peek("num_episodes_lifetime") == len(ends)
    assert metrics.peek("num_env_steps_sampled_lifetime") == len(data["rewards"]) == 300
    assert metrics.peek(("num_agent_steps_sampled_lifetime", "default_agent")) == 300
    # The algorithm's lifetime count grows by each call's steps.
    runner.sample_transitions(random_actions=True)
    assert _aggregate(runner, metrics).peek("num_env_steps_sampled_lifetime") == 450


@pytest.mark.parametrize("random_actions", [True, False])
def test_env_steps_with_actions_unsquashed_to_its_bounds(make_runner, random_actions):
    # Pendulum-v1: torque in [-2, 2]; its dynamics reveal the torque each step applied.
    runner = make_runner("Pendulum-v1", num_envs=2, fragment=100)  # below the 200-step limit
    data = runner.sample_transitions(random_actions=random_actions)
    actions = data["actions"][:, 0]
    assert np.abs(actions).max() <= 1.0
    _, sin, thdot = data["obs"].T.astype(np.float64)  # obs: cos, sin, speed
    next_thdot = data["next_obs"][:, 2].astype(np.float64)
    torque = ((next_thdot - thdot) / 0.05 - 15.0 * sin) / 3.0  # g=10, m=l=1, dt=0.05
    free = np.abs(next_thdot) < 8.0 - 1e-4  # speed not clipped at 8
    assert free.sum() > 50
    np.testing.assert_allclose(torque[free], 2.0 * actions[free], atol=2e-3)
    if random_actions:  # uniform over the whole range, stored normalized
        assert actions.min() < -0.5 and actions.max() > 0.5


def test_seeded_like_rllib_and_reproducible(make_runner):
    a, b = (make_runner("Hopper-v5", num_envs=2, fragment=30).sample_transitions(
        random_actions=True) for _ in range(2))
    for k in KEYS:
        np.testing.assert_array_equal(a[k], b[k])
    # RLlib seeds the first reset with config.seed (+ worker index): 0 here.
    envs = gym.make_vec("Hopper-v5", num_envs=2, vectorization_mode="sync")
    obs, _ = envs.reset(seed=0)
    envs.close()
    np.testing.assert_array_equal(a["obs"][:2], obs.astype(np.float32))


def test_truncation_ends_episode_without_terminating(make_runner):
    # Pendulum-v1 never terminates; its time limit truncates after 200 steps.
    runner = make_runner("Pendulum-v1", num_envs=1, fragment=150)
    data = _concat([runner.sample_transitions(random_actions=True) for _ in range(2)])
    assert not data["terminateds"].any()
    breaks = np.flatnonzero((data["next_obs"][:-1] != data["obs"][1:]).any(-1))
    np.testing.assert_array_equal(breaks, [199])  # row 200 starts the next episode
    metrics = _aggregate(runner)
    assert metrics.peek("num_episodes_lifetime") == 1
    assert metrics.peek("episode_len_mean") == 200
    assert metrics.peek("episode_return_mean") == pytest.approx(
        data["rewards"][:200].astype(np.float64).sum(), rel=1e-5)
