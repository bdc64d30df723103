"""Gaussian policies over the actors of :mod:`policies.actors`, for SAC and PPO.

A :class:`GaussianActor` returns a diagonal Gaussian's parameters, ``[mean, log_std]`` of width
``2 x act_dim``; the mean is an actor's output (a built-in of :data:`policies.ACTORS` or a
user's, spiking or not). The two recipes are PopSAN's (combra-lab/pop-spiking-deep-rl,
``popsan_sac/`` and ``popsan_ppo/``; constants in docs/methods.md):

- SAC: the mean is the actor's output before its tanh (the distribution squashes samples
  itself), so the actor needs a pre-squash output
  (:attr:`policies.capabilities.Capability.PRE_SQUASH`); the log-std comes from a separate
  ReLU MLP with the actor's hidden sizes, clamped to ``[LOG_STD_MIN, LOG_STD_MAX]``.
- PPO: the mean is the actor's tanh-squashed output, ``actor(obs)`` (any actor); the log-std is
  a free, state-independent parameter that starts at ``PPO_INITIAL_LOG_STD``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from policies.actors import build_actor, is_builtin
from policies.capabilities import Capability, require
from policies.mlp import mlp

# PopSAN's SAC clamps the log-std network's output to [-20, 2].
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
# PopSAN's PPO starts its free log-std at -0.5 (std 0.61).
PPO_INITIAL_LOG_STD = -0.5
LOG_STD_KINDS = ("network", "free")


class GaussianActor(nn.Module):
    """``[mean, log_std]`` for (already normalized) observations.

    Args:
        actor: the network giving the mean: ``actor(obs)`` with ``squash_mean``, else
            ``actor(obs, squash=False)``.
        obs_dim, act_dim: observation and action sizes.
        log_std: ``"network"`` (an MLP on the observations, clamped; PopSAN's SAC) or
            ``"free"`` (a parameter per action dimension; PopSAN's PPO).
        squash_mean: pass the mean through the actor's tanh (PPO) or not (SAC; then
            :class:`~policies.capabilities.MissingCapability` for an actor without a
            pre-squash output).
        hidden: hidden sizes of the log-std MLP.
        policy: the actor's name in that error (default: its class).
    """

    def __init__(self, actor: nn.Module, obs_dim: int, act_dim: int, *, log_std: str,
                 squash_mean: bool, hidden: tuple[int, ...] = (256, 256),
                 policy: str | None = None) -> None:
        super().__init__()
        if log_std not in LOG_STD_KINDS:
            raise ValueError(f"log_std must be one of {LOG_STD_KINDS}, got {log_std!r}")
        if not squash_mean:
            require(actor, Capability.PRE_SQUASH, "SAC's Gaussian mean", policy)
        self.actor = actor
        self.squash_mean = squash_mean
        if log_std == "network":
            self.log_std_net: nn.Module | None = mlp(obs_dim, hidden, act_dim)
            self.log_std = None
        else:
            self.log_std_net = None
            self.log_std = nn.Parameter(torch.full((act_dim,), PPO_INITIAL_LOG_STD))

    @property
    def timesteps(self) -> int | None:
        """The actor's T (None for an actor without one, such as the ANN)."""
        return getattr(self.actor, "timesteps", None)

    def mean(self, obs: torch.Tensor) -> torch.Tensor:
        """The Gaussian's mean alone (what deterministic acting needs)."""
        return self.actor(obs) if self.squash_mean else self.actor(obs, squash=False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        mean = self.mean(obs)
        if self.log_std_net is not None:
            log_std = self.log_std_net(obs).clamp(LOG_STD_MIN, LOG_STD_MAX)
        else:
            log_std = self.log_std.expand_as(mean)
        return torch.cat([mean, log_std.to(mean.dtype)], dim=-1)


def build_gaussian_actor(name: str, obs_dim: int, act_dim: int, *, log_std: str,
                         squash_mean: bool, **overrides: Any) -> GaussianActor:
    """A :class:`GaussianActor` whose mean is the actor ``name`` names
    (:func:`policies.actors.build_actor`, which ``overrides`` go to). The log-std MLP takes a
    built-in actor's ``hidden`` override; a user's factory gives its ``hidden`` its own
    meaning, so its log-std MLP is 256-256."""
    actor = build_actor(name, obs_dim, act_dim, **overrides)
    hidden = tuple(overrides.get("hidden", (256, 256))) if is_builtin(name) else (256, 256)
    return GaussianActor(actor, obs_dim, act_dim, log_std=log_std, squash_mean=squash_mean,
                         hidden=hidden, policy=name)
