"""Cases shared by the NIR and deployment tests: HalfCheetah observations, busy spiking
actors and checkpoints written the way a training run writes them (no training, no Ray)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from policies import RunningNormalizer, build_actor

ENV = "HalfCheetah-v5"
OBSERVATIONS = 500
# The checkpoint's actor: the fused backend training uses; DSRL with its HalfCheetah threshold.
ACTOR_KWARGS = {"spikerl": {}, "popsan": {"deterministic_encoder": False},
                "dsrl": {"threshold": 0.8}}
# Weights scaled so that a fresh actor fires busily (10-40% per step in every layer; a fresh
# initialization is quieter), which puts many membranes near the threshold.
BUSY = {"spikerl": 3.0, "popsan": 3.0, "dsrl": 4.0}


def halfcheetah_observations() -> torch.Tensor:
    """Raw HalfCheetah observations along random-action episodes."""
    env = gym.make(ENV)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    seen = []
    for _ in range(OBSERVATIONS):
        seen.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return torch.as_tensor(np.asarray(seen), dtype=torch.float32)


def busy_actor(name: str, obs: torch.Tensor) -> tuple[torch.nn.Module, RunningNormalizer]:
    """A fresh actor of ``name`` whose layers fire busily, and a normalizer fitted to ``obs``."""
    torch.manual_seed(0)
    actor = build_actor(name, obs.shape[1], 6, backend="fused", **ACTOR_KWARGS[name])
    with torch.no_grad():
        for layer in actor.layers:
            layer.fc.weight.mul_(BUSY[name])
    normalizer = RunningNormalizer(obs.shape[1])
    normalizer.update(obs)
    return actor.eval(), normalizer


def fake_checkpoint(path: Path, policy: str, env: str = "Pendulum-v1") -> Path:
    """A checkpoint of a fresh module as a training run writes it (the module's state pickled
    as numpy arrays, spikerl_run.json beside it), without training."""
    from spikerl_ray.envs import continuous_spaces
    from spikerl_ray.checkpoints import MODULE_PATH, STATE_FILE
    from spikerl_ray.checkpoints import CHECKPOINT_INFO
    from spikerl_ray.td3.rl_module import TD3TorchRLModule

    obs_space, act_space = continuous_spaces(env)
    config = {"policy": policy, "spiking_backend": "fused"}
    module = TD3TorchRLModule(observation_space=obs_space, action_space=act_space,
                              model_config=config)
    (path / MODULE_PATH).mkdir(parents=True)
    state = {k: v.numpy() for k, v in module.state_dict().items()}
    (path / MODULE_PATH / STATE_FILE).write_bytes(pickle.dumps(state))
    (path / CHECKPOINT_INFO).write_text(json.dumps({"env": env, "policy": policy,
                                                    "model_config": config}))
    return path
