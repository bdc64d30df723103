"""The minimal actor: a module with ``forward(obs)`` only (docs/actors.md).

It trains with TD3 (no pre-tanh penalty) and PPO, checkpoints, evaluates and runs in Tune;
SAC, TD3's pre-tanh penalty and NIR export refuse it in one line naming what it lacks.

    PYTHONPATH=examples spikerl train --policy plain_actor:make_actor --env Pendulum-v1 ...
"""

from __future__ import annotations

import torch
from torch import nn


class PlainActor(nn.Module):
    """A ReLU MLP with a tanh output."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, act_dim), nn.Tanh())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Actions in [-1, 1] for normalized observations ``(batch, obs_dim)``."""
        return self.net(obs)


def make_actor(obs_dim: int, act_dim: int, hidden: int = 64) -> PlainActor:
    """The factory ``--policy plain_actor:make_actor`` names."""
    return PlainActor(obs_dim, act_dim, hidden)
