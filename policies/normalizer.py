"""Running observation normalization as PopSAN does it: z-score with running mean and variance,
clipped to [-3, 3]. The statistics are buffers, so they travel with the module's weights and
are saved in checkpoints."""

from __future__ import annotations

import torch
from torch import nn

# PopSAN clips normalized observations to [-3, 3].
CLIP = 3.0


def moments(batch: torch.Tensor) -> torch.Tensor:
    """``[n, sum(x), sum(x^2)]`` of a batch ``(n, dim)`` in float64, shape ``(3, dim)``: what
    data-parallel learners all-reduce so that every learner folds in the same statistics."""
    x = batch.to(torch.float64)
    n = torch.full((1, x.shape[1]), float(x.shape[0]), dtype=torch.float64, device=x.device)
    return torch.cat([n, x.sum(0, keepdim=True), x.pow(2).sum(0, keepdim=True)])


class RunningNormalizer(nn.Module):
    """Running mean/variance (Chan et al. parallel update) of observations."""

    def __init__(self, dim: int, clip: float = CLIP, eps: float = 1e-8) -> None:
        super().__init__()
        self.clip, self.eps = clip, eps
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    def moments(self, batch: torch.Tensor) -> torch.Tensor:
        """:func:`moments` of a batch of this normalizer's observations."""
        return moments(batch.reshape(-1, self.mean.shape[0]))

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        """Folds a batch of raw observations ``(n, dim)`` into the statistics."""
        self.update_from_moments(self.moments(batch.to(self.mean.device)))

    @torch.no_grad()
    def update_from_moments(self, moments: torch.Tensor) -> None:
        """Folds ``[n, sum(x), sum(x^2)]`` (see :meth:`moments`) into the statistics."""
        moments = moments.to(self.mean.device, torch.float64)
        n = moments[0, 0]
        if n.item() == 0:
            return
        b_mean = moments[1] / n
        b_var = (moments[2] / n - b_mean.pow(2)).clamp(min=0.0)
        total = self.count + n
        delta = b_mean - self.mean
        m2 = self.var * self.count + b_var * n + delta.pow(2) * self.count * n / total
        self.mean.add_(delta * n / total)
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # Before any update mean=0 and var=1, so this is the identity (then clipped).
        mean = self.mean.to(obs.dtype)
        std = (self.var + self.eps).sqrt().to(obs.dtype)
        return ((obs - mean) / std).clamp(-self.clip, self.clip)
