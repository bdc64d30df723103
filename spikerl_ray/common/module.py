"""The module contract: what every algorithm's RLModule offers beside RLlib's own API, so that
evaluation, export, health statistics and energy read any of them the same way."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from policies import RunningNormalizer


class ActorModule(Protocol):
    """An RLModule of ours (TD3's, SAC's, PPO's): its observation normalizer (in its weights),
    the actor network of :mod:`policies` (a built-in or a user's, unwrapped), and RLlib's
    deterministic forward."""

    obs_normalizer: RunningNormalizer
    actor: nn.Module

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """Float32 observations, z-scored with the running statistics and clipped."""

    def forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """RLlib's deterministic forward: ``{"actions": ...}`` in [-1, 1]."""
