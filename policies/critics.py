"""Critics: twin Q networks as in TD3 (Fujimoto et al., 2018), MLP 256-256 ReLU."""

from __future__ import annotations

import torch
from torch import nn

from policies.mlp import mlp


class TwinQCritic(nn.Module):
    """Two independent Q(s, a) MLPs; ``forward`` returns both estimates, shape ``(batch,)``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (256, 256)) -> None:
        super().__init__()
        self.q1 = mlp(obs_dim + act_dim, hidden, 1)
        self.q2 = mlp(obs_dim + act_dim, hidden, 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, action], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)
