"""An env runner that hands back flat transition arrays instead of episode objects.

:meth:`TransitionEnvRunner.sample_transitions` steps RLlib's vectorized Gymnasium env in a lean loop:
one RLModule forward per vector step on the batch of observations, no connectors, no episode
objects, transitions written straight into preallocated ``(obs, action, reward, next_obs,
terminated)`` arrays. Only those compact arrays travel to the learners. It logs the metrics
RLlib's own ``sample()`` logs (step and episode counters, episode returns and lengths, timers),
through RLlib's own helpers, so results carry the same keys, less the connector timers. Episode
callbacks and user connector pieces are not run (TD3 configures neither).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import ray
import torch
from gymnasium.vector import AutoresetMode
from ray.rllib.core.columns import Columns
from ray.rllib.env.env_runner import ENV_STEP_FAILURE
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.utils.debug import update_global_seed_if_necessary
from ray.rllib.utils.metrics import (
    RLMODULE_INFERENCE_TIMER,
    SAMPLE_TIMER,
    TIME_BETWEEN_SAMPLING,
    WEIGHTS_SEQ_NO,
)

from spikerl_ray.core.replay import TRANSITION_KEYS
from spikerl_ray.resources import set_torch_threads


class TransitionEnvRunner(SingleAgentEnvRunner):
    """:class:`SingleAgentEnvRunner` plus :meth:`sample_transitions`.

    Between calls it keeps, as RLlib keeps its ongoing episodes: the current observations,
    which envs reset on their next step, each env's running episode return, length and start
    time, and the transitions of the last vector step that did not fit the previous fragment.

    A remote runner that Ray restarts after its process died (fault tolerance,
    docs/reliability.md) draws a fresh seed, so that it does not replay the episodes and
    random actions of the runner it replaces.
    """

    def __init__(self, *, config: Any, **kwargs: Any) -> None:
        super().__init__(config=config, **kwargs)
        if self.worker_index:  # a remote runner: its own process (a local one: the driver's)
            set_torch_threads(config, "env runner")
        if self._seed is not None and _is_restarted_actor():
            self._seed = int(np.random.SeedSequence().entropy % 2**31)
            update_global_seed_if_necessary(self.config.framework_str, self._seed)
        # Acting only: the module stays in eval mode, so the lean loop calls its forward
        # directly instead of RLlib's wrapper, which walks every submodule twice per step to
        # set and restore the mode.
        self.module.eval()
        self._obs: np.ndarray | None = None  # None: reset all envs on the next call
        self._resetting = np.zeros(self.num_envs, dtype=bool)
        self._ep_return = np.zeros(self.num_envs)
        self._ep_len = np.zeros(self.num_envs, dtype=np.int64)
        self._ep_start = np.zeros(self.num_envs)
        self._spill: dict[str, np.ndarray] = {}
        self._rng = np.random.default_rng(self._seed)

    def reseed(self, generation: int) -> None:
        """Fresh random streams after a restore, derived from the run's seed, this runner's
        index and ``generation`` (the env steps sampled before it), so that resuming a
        checkpoint twice acts alike. The envs reset on the next call: an episode cut by the
        interruption is not continued (its state is not in the checkpoint)."""
        self._obs = None
        self._spill = {}
        if self._seed is None:  # an unseeded run stays unseeded
            return
        sequence = np.random.SeedSequence([self._seed, generation])
        self._rng = np.random.default_rng(sequence)
        torch.manual_seed(int(sequence.generate_state(1)[0]))
        self._seed = int(sequence.generate_state(2)[1])
        self._needs_initial_reset = True

    def sample_transitions(self, *, random_actions: bool = False) -> dict[str, np.ndarray]:
        """Samples one fragment: ``rollout_fragment_length x num_envs`` transitions.

        Returns float32 arrays keyed by :data:`TRANSITION_KEYS`; actions are in the normalized
        space [-1, 1] (unsquashed to the env's bounds for stepping, as RLlib's
        ``NormalizeAndClipActions`` does). ``next_obs`` of an episode's last step is its true
        final observation; ``terminateds`` is 1 only where the env terminated (not truncated).
        With ``random_actions`` it acts uniformly at random in the env's bounds (TD3's warm-up).
        """
        if self._time_after_sampling is not None:
            self.metrics.log_value(TIME_BETWEEN_SAMPLING,
                                   time.perf_counter() - self._time_after_sampling)
        self.metrics.log_value(WEIGHTS_SEQ_NO, self._weights_seq_no, window=1)
        with self.metrics.log_time(SAMPLE_TIMER):
            n = self.config.get_rollout_fragment_length(self.worker_index) * self.num_envs
            out, num_episodes = self._fill(n, random_actions)
        self._log_env_steps(metric=self._metrics_num_env_steps_sampled, num_steps=n)
        self._increase_sampled_metrics(n, num_episodes)
        self._time_after_sampling = time.perf_counter()
        return out

    def _fill(self, n: int, random_actions: bool) -> tuple[dict[str, np.ndarray], int]:
        """Steps the envs until ``n`` transitions are collected; returns them and the number
        of episodes that ended. Surplus rows of the last vector step wait for the next call."""
        if self._obs is None or self._needs_initial_reset:  # first call, or env (re)made
            self._reset()
        assert self._obs is not None
        space = self.env.single_action_space
        low, high = space.low, space.high
        shapes = {"obs": self._obs.shape[1:], "actions": space.shape, "rewards": (),
                  "next_obs": self._obs.shape[1:], "terminateds": ()}
        # A vector step adds at most num_envs rows, so the fill stops below n + num_envs.
        out = {k: np.empty((n + self.num_envs - 1, *shapes[k]), np.float32)
               for k in TRANSITION_KEYS}
        filled = len(self._spill.get("rewards", ()))
        for k, rows in self._spill.items():
            out[k][:filled] = rows
        forward = (self.module._forward_exploration if self.config.explore
                   else self.module._forward_inference)
        on_cpu = self._device is None or torch.device(self._device).type == "cpu"
        num_episodes, inference_s, forwards = 0, 0.0, 0
        while filled < n:
            if random_actions:
                actions = self._rng.uniform(-1.0, 1.0, (self.num_envs, *space.shape)).astype(
                    np.float32)
            else:
                start = time.perf_counter()
                with torch.inference_mode():
                    obs = torch.from_numpy(self._obs)
                    if not on_cpu:
                        obs = obs.to(self._device)
                    actions = forward({Columns.OBS: obs})[Columns.ACTIONS]
                    actions = (actions if on_cpu else actions.cpu()).numpy()
                inference_s += time.perf_counter() - start
                forwards += 1
            results = self._try_env_step(
                np.clip(low + (actions + 1.0) * (high - low) / 2.0, low, high))
            if results == ENV_STEP_FAILURE:
                self._reset()  # the env was re-created; rows so far are valid transitions
                continue
            next_obs, rewards, terminateds, truncateds, _ = results
            next_obs = next_obs.astype(np.float32)
            # Gymnasium's NEXT_STEP autoreset: an env done on the last step was reset by this
            # one (its action ignored, reward 0, not done): no transition.
            live = ~self._resetting
            rows = slice(filled, filled + int(live.sum()))
            out["obs"][rows] = self._obs[live]
            out["actions"][rows] = actions[live]
            out["rewards"][rows] = rewards[live]
            out["next_obs"][rows] = next_obs[live]
            out["terminateds"][rows] = terminateds[live]
            filled = rows.stop
            now = time.perf_counter()
            self._ep_start[self._resetting] = now
            self._ep_return += rewards
            self._ep_len += live
            done = terminateds | truncateds
            for i in np.flatnonzero(done):
                self._log_episode_metrics(int(self._ep_len[i]), float(self._ep_return[i]),
                                          now - self._ep_start[i])
            num_episodes += int(done.sum())
            self._ep_return[done] = 0.0
            self._ep_len[done] = 0
            self._resetting = done
            self._obs = next_obs
        if forwards:  # RLlib's per-forward timer, logged once per fragment (its mean)
            self.metrics.log_value(RLMODULE_INFERENCE_TIMER, inference_s / forwards)
        self._spill = {k: v[n:filled].copy() for k, v in out.items()}
        return {k: v[:n] for k, v in out.items()}, num_episodes

    def _reset(self) -> None:
        """Resets all envs (seeded on the env's first reset, as RLlib's ``sample()`` does) and
        the per-env episode trackers."""
        mode = AutoresetMode(self.env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP))
        if mode != AutoresetMode.NEXT_STEP:
            raise NotImplementedError(f"TransitionEnvRunner needs Gymnasium's NEXT_STEP autoreset, not "
                                      f"{mode}")
        obs, _ = self._try_env_reset(seed=self._seed if self._needs_initial_reset else None)
        self._needs_initial_reset = False
        self._obs = np.asarray(obs, dtype=np.float32)
        self._resetting[:] = False
        self._ep_return[:] = 0.0
        self._ep_len[:] = 0
        self._ep_start[:] = time.perf_counter()


def _is_restarted_actor() -> bool:
    """Whether this process is a Ray actor that Ray restarted after a failure."""
    if not ray.is_initialized():
        return False
    context = ray.get_runtime_context()
    return context.get_actor_id() is not None and bool(context.was_current_actor_reconstructed)
