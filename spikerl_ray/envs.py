"""Checks that an environment id names a Gymnasium environment TD3 can train on."""

from __future__ import annotations

import importlib

import gymnasium as gym
import numpy as np

from spikerl_ray.errors import UserError


def continuous_spaces(env_id: str) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """Observation and action spaces of ``env_id``; :class:`UserError` unless both are flat,
    bounded-action ``Box`` spaces (TD3 needs continuous actions). ``MODULE:ID`` (Gymnasium's
    syntax) imports ``MODULE`` first, which registers ``ID``."""
    module, _, name = env_id.rpartition(":")
    try:
        if module:
            importlib.import_module(module)
        gym.spec(name)
    except (gym.error.Error, ImportError):
        raise UserError(f"unknown environment {env_id!r}: not registered with Gymnasium "
                        "(e.g. HalfCheetah-v5, Hopper-v5, Pendulum-v1)") from None
    try:
        env = gym.make(env_id)
    except Exception as exc:  # an env whose dependencies are missing, e.g. no mujoco
        raise UserError(f"cannot create environment {env_id!r}: {exc}") from None
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    if not isinstance(act_space, gym.spaces.Box):
        raise UserError(f"environment {env_id!r} has a {type(act_space).__name__} action "
                        "space; TD3 needs continuous (Box) actions")
    if len(act_space.shape) != 1 or not (np.all(np.isfinite(act_space.low))
                                         and np.all(np.isfinite(act_space.high))):
        raise UserError(f"environment {env_id!r}: actions must be a bounded 1-D Box")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise UserError(f"environment {env_id!r}: observations must be a 1-D Box, got "
                        f"{obs_space}")
    return obs_space, act_space
