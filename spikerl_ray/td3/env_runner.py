"""An env runner that hands back flat transition arrays instead of episode objects.

Runs RLlib's own single-agent sampling loop (vectorized Gymnasium envs, connectors, episode
metrics) and converts the sampled episode chunks to ``(obs, action, reward, next_obs,
terminated)`` arrays on the runner, so only compact arrays travel to the learners.
"""

from __future__ import annotations

import numpy as np
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner


class TD3EnvRunner(SingleAgentEnvRunner):
    """:class:`SingleAgentEnvRunner` plus :meth:`sample_transitions`."""

    def sample_transitions(self, *, random_actions: bool = False) -> dict[str, np.ndarray]:
        """Samples one fragment (``rollout_fragment_length x num_envs`` steps).

        With ``random_actions`` it acts uniformly at random (TD3's warm-up); those actions are
        mapped into the same normalized [-1, 1] space the module's actions are stored in.
        """
        episodes = self.sample(random_actions=random_actions)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in
                                              ("obs", "actions", "rewards", "next_obs",
                                               "terminateds")}
        for ep in episodes:
            n = len(ep)
            if n == 0:
                continue
            obs = np.asarray(ep.get_observations(slice(0, n + 1)), dtype=np.float32)
            parts["obs"].append(obs[:-1])
            parts["next_obs"].append(obs[1:])
            parts["actions"].append(np.asarray(ep.get_actions(slice(0, n)), dtype=np.float32))
            parts["rewards"].append(np.asarray(ep.get_rewards(slice(0, n)), dtype=np.float32))
            term = np.zeros(n, dtype=np.float32)
            term[-1] = float(ep.is_terminated)
            parts["terminateds"].append(term)
        out = {k: np.concatenate(v) if v else np.zeros((0,), np.float32)
               for k, v in parts.items()}
        if random_actions and len(out["actions"]):
            space = self.env.single_action_space
            low, high = space.low.astype(np.float32), space.high.astype(np.float32)
            out["actions"] = 2.0 * (out["actions"] - low) / (high - low) - 1.0
        return out
