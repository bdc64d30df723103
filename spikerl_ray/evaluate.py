"""``spikerl evaluate``: runs a checkpoint's actor without exploration noise.

Loads only the RLModule from the checkpoint (no Ray cluster is started) and steps the
environment in this process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from policies.diagnostics import actor_statistics
from spikerl_ray.envs import continuous_spaces
from spikerl_ray.errors import UserError
from spikerl_ray.run import CHECKPOINT_INFO
from spikerl_ray.storage import Mirror, is_uri

MODULE_PATH = Path("learner_group") / "learner" / "rl_module" / "default_policy"
# Observations of the evaluation episodes the spike statistics are measured on (evenly spaced).
STATISTICS_OBS = 1000


def load_module(checkpoint: str | Path) -> tuple[Any, dict[str, Any]]:
    """The trained RLModule of a ``spikerl train`` checkpoint (a folder or a URI,
    :mod:`spikerl_ray.storage`) and the checkpoint's info."""
    if not is_uri(checkpoint):
        return _load_folder(Path(checkpoint), str(checkpoint))
    mirror = Mirror(str(checkpoint))
    try:
        mirror.pull(recursive=True)
        if not any(mirror.local.iterdir()):
            raise UserError(f"checkpoint {checkpoint} does not exist")
        return _load_folder(mirror.local, str(checkpoint))
    finally:
        mirror.close()


def _load_folder(path: Path, name: str) -> tuple[Any, dict[str, Any]]:
    """:func:`load_module` for a local folder; messages call it ``name``."""
    if not path.exists():
        raise UserError(f"checkpoint {name} does not exist")
    if not (path / CHECKPOINT_INFO).is_file() or not (path / MODULE_PATH).is_dir():
        raise UserError(f"{name} is not a spikerl-ray checkpoint (expected {CHECKPOINT_INFO} "
                        f"and {MODULE_PATH}/ inside; pick a folder under <run>/checkpoints/)")
    try:
        info = json.loads((path / CHECKPOINT_INFO).read_text())
        from ray.rllib.core.rl_module.rl_module import RLModule

        module = RLModule.from_checkpoint(str((path / MODULE_PATH).resolve()))
    except Exception as exc:
        raise UserError(f"checkpoint {name} is corrupt or unreadable: "
                        f"{type(exc).__name__}: {exc}") from None
    module.eval()
    return module, info


def act(module: Any, obs: np.ndarray, space: gym.spaces.Box) -> np.ndarray:
    """The module's deterministic action for one observation, in the env's bounds."""
    with torch.no_grad():
        out = module.forward_inference({"obs": torch.as_tensor(obs[None], dtype=torch.float32)})
    a = out["actions"][0].numpy().clip(-1.0, 1.0)
    return space.low + (a + 1.0) * 0.5 * (space.high - space.low)


def evaluate(checkpoint: str | Path, episodes: int = 10, env_id: str | None = None,
             seed: int = 1_000_000) -> dict[str, Any]:
    """Mean and std of the undiscounted return over ``episodes`` noise-free episodes."""
    if env_id is not None:
        continuous_spaces(env_id)  # a bad --env is named before the checkpoint is read
    module, info = load_module(checkpoint)
    env_id = env_id or info["env"]
    obs_space, act_space = continuous_spaces(env_id)
    if (obs_space.shape != module.observation_space.shape
            or act_space.shape != module.action_space.shape):
        raise UserError(f"checkpoint was trained on {info['env']} (observations "
                        f"{module.observation_space.shape}, actions "
                        f"{module.action_space.shape}); {env_id} has observations "
                        f"{obs_space.shape}, actions {act_space.shape}")
    env = gym.make(env_id)
    returns, lengths, seen = [], [], []
    try:
        for k in range(episodes):
            obs, _ = env.reset(seed=seed + k)
            total, n, done = 0.0, 0, False
            while not done:
                seen.append(obs)
                obs, reward, terminated, truncated, _ = env.step(act(module, obs, act_space))
                total += float(reward)
                n += 1
                done = terminated or truncated
            returns.append(total)
            lengths.append(n)
    finally:
        env.close()
    return {"return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
            "episodes": episodes, "episode_length_mean": float(np.mean(lengths)),
            "env": env_id, "policy": info["policy"], "checkpoint": str(checkpoint),
            "spikes": spike_statistics(module, np.asarray(seen, dtype=np.float32))}


def spike_statistics(module: Any, observations: np.ndarray) -> dict[str, Any]:
    """Firing rates per layer, synaptic operations and MACs per inference and the estimated
    neuromorphic energy per inference (:mod:`policies.operations`), on up to
    :data:`STATISTICS_OBS` of ``observations`` (raw; normalized here as when acting)."""
    picks = np.linspace(0, len(observations) - 1, min(len(observations), STATISTICS_OBS))
    obs = module.normalize(torch.as_tensor(observations[picks.astype(int)]))
    stats = actor_statistics(module.actor.forward, obs, getattr(module.actor, "timesteps", None),
                             module.actor)
    return {**stats, "observations": len(picks),
            "inference_energy_basis": "estimate: 0.9 pJ per synaptic operation, 4.6 pJ per "
                                      "MAC (45 nm figures of SNN papers), not a measurement"}
