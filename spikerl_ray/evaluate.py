"""``spikerl evaluate``: runs a checkpoint's actor without exploration noise.

The module is loaded with :func:`spikerl_ray.checkpoints.load_module` (built from the
checkpoint's JSON, weights read without unpickling code). No Ray cluster is started; the
environment steps in this process. A deployment setting (:class:`policies.quantize.QuantSpec`:
fixed-point weights and state, fewer timesteps; docs/deployment.md) runs the actor as
:func:`policies.quantize.quantize_actor` simulates it on a chip; the float setting at the
trained ``T`` runs the checkpoint's actor itself.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from policies.diagnostics import actor_statistics
from policies.quantize import QuantSpec, quantize_actor
from spikerl_ray.algorithms import DEFAULT_ALGORITHM
from spikerl_ray.checkpoints import load_module
from spikerl_ray.common.module import ActorModule
from spikerl_ray.envs import continuous_spaces
from spikerl_ray.errors import UserError

# Observations of the evaluation episodes the spike statistics are measured on (evenly spaced).
STATISTICS_OBS = 1000


def act(module: ActorModule, obs: np.ndarray, space: gym.spaces.Box) -> np.ndarray:
    """The module's deterministic action for one observation, in the env's bounds."""
    with torch.no_grad():
        out = module.forward_inference({"obs": torch.as_tensor(obs[None], dtype=torch.float32)})
    a = out["actions"][0].numpy().clip(-1.0, 1.0)
    return space.low + (a + 1.0) * 0.5 * (space.high - space.low)


def deploy(module: ActorModule, spec: QuantSpec, name: str) -> tuple[dict[str, Any], bool]:
    """Puts the module's actor at deployment setting ``spec`` in its place (the checkpoint's
    actor itself for fp32 at the trained ``T``); returns the setting as plain data and whether
    the actor was replaced. ``name`` is how errors call the checkpoint."""
    actor = module.actor
    trained = getattr(actor, "timesteps", None)
    if spec.is_trained(trained):
        return spec.describe(trained), False
    try:
        deployed = quantize_actor(actor, spec)
    except ValueError as exc:
        raise UserError(f"checkpoint {name}: {exc}") from None
    for owner in module.modules():  # TD3 holds the actor itself, SAC and PPO inside ``pi``
        for child_name, child in owner.named_children():
            if child is actor:
                setattr(owner, child_name, deployed)
    return deployed.setting(), True


def evaluate(checkpoint: str | Path, episodes: int = 10, env_id: str | None = None,
             seed: int = 1_000_000, spec: QuantSpec | None = None) -> dict[str, Any]:
    """Mean and std of the undiscounted return over ``episodes`` noise-free episodes, with the
    actor at deployment setting ``spec`` (default: as trained)."""
    if env_id is not None:
        continuous_spaces(env_id)  # a bad --env is named before the checkpoint is read
    module, info = load_module(checkpoint)
    setting, replaced = deploy(module, spec or QuantSpec(), f"{checkpoint} ({info['policy']})")
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
    # A replaced actor runs eagerly, also in a module compiled for acting: one simulation of
    # the fixed point, no recompilation for each setting.
    stance = torch.compiler.set_stance("force_eager") if replaced else nullcontext()
    try:
        with stance:
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
            "env": env_id, "algo": info.get("algo", DEFAULT_ALGORITHM), "policy": info["policy"],
            "checkpoint": str(checkpoint), "setting": setting,
            "spikes": spike_statistics(module, np.asarray(seen, dtype=np.float32))}


def spike_statistics(module: ActorModule, observations: np.ndarray) -> dict[str, Any]:
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
