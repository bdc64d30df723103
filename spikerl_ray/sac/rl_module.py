"""SAC's RLModule with an actor of :mod:`policies` as its policy network.

Built on RLlib's :class:`DefaultSACTorchRLModule`, whose forward pass and losses RLlib's SAC
learner uses unchanged; only the networks differ (docs/algorithms.md, "SAC"):

- ``pi_encoder`` normalizes observations with the module's running statistics (PopSAN's
  z-score clipped to [-3, 3], :class:`policies.RunningNormalizer`);
- ``pi`` is a :class:`policies.gaussian.GaussianActor`: the mean decoded by the actor (before
  its tanh), the log-std from a ReLU MLP clamped to [-20, 2] (PopSAN's SAC); RLlib's
  ``TorchSquashedGaussian`` squashes samples with tanh;
- twin Q networks are plain MLPs on the normalized observation and the action, as in our TD3
  (RLlib's default is a larger multi-stream network).

Acting without exploration returns ``tanh(mean)``.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.sac.torch.default_sac_torch_rl_module import DefaultSACTorchRLModule
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.models.base import ENCODER_OUT
from ray.rllib.core.rl_module.apis import TargetNetworkAPI
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.utils.annotations import override
from torch import nn

from policies import RunningNormalizer
from policies.mlp import mlp
from spikerl_ray.common.actor_config import gaussian_policy


class NormalizeObservations(nn.Module):
    """An RLlib encoder: ``{OBS: raw}`` to ``{ENCODER_OUT: normalized}`` (float32)."""

    def __init__(self, obs_dim: int) -> None:
        super().__init__()
        self.normalizer = RunningNormalizer(obs_dim)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {ENCODER_OUT: self.normalizer(batch[Columns.OBS].float())}


class SpikingSACTorchRLModule(DefaultSACTorchRLModule):
    """RLlib's SAC module with our actor, normalizer and critics. ``model_config`` keys:
    ``policy``, ``actor_kwargs``, ``spiking_backend`` (as for TD3) and ``critic_hiddens``."""

    @override(DefaultSACTorchRLModule)
    def setup(self) -> None:
        obs_dim = int(self.observation_space.shape[0])
        act_dim = int(self.action_space.shape[0])
        self.twin_q = True
        self.pi_encoder = NormalizeObservations(obs_dim)
        self.pi = gaussian_policy(self, log_std="network", squash_mean=False)
        if not self.inference_only:
            hidden = tuple(self.model_config.get("critic_hiddens", (256, 256)))
            # RLlib's learner and target updates read these; the normalization happens once
            # in _qf_forward_train_helper, so the encoders are identities.
            self.qf_encoder, self.qf_twin_encoder = nn.Identity(), nn.Identity()
            self.qf = mlp(obs_dim + act_dim, hidden, 1)
            self.qf_twin = mlp(obs_dim + act_dim, hidden, 1)
            # RLlib's learner makes them again when it builds; a module loaded for evaluation
            # needs them for its state dict.
            self.make_target_networks()

    @property
    def obs_normalizer(self) -> RunningNormalizer:
        """The running observation statistics (in the weights; env runners get them)."""
        return self.pi_encoder.normalizer

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """Float32 observations, z-scored with the running statistics and clipped."""
        return self.obs_normalizer(obs.float())

    @property
    def actor(self) -> nn.Module:
        """The network that decodes the mean (spike statistics and exports read it)."""
        return self.pi.actor

    @override(TargetNetworkAPI)
    def make_target_networks(self) -> None:
        self.target_qf_encoder, self.target_qf_twin_encoder = nn.Identity(), nn.Identity()
        self.target_qf = make_target_network(self.qf)
        self.target_qf_twin = make_target_network(self.qf_twin)

    @override(DefaultSACTorchRLModule)
    def _qf_forward_train_helper(self, batch: dict[str, Any], encoder: nn.Module,
                                 head: nn.Module, squeeze: bool = True) -> torch.Tensor:
        q = head(torch.cat([self.normalize(batch[Columns.OBS]),
                            batch[Columns.ACTIONS].float()], dim=-1))
        return q.squeeze(-1) if squeeze else q

    @override(RLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.no_grad():
            mean = self.pi.mean(self.normalize(batch[Columns.OBS]))
        return {Columns.ACTIONS: torch.tanh(mean)}

    @override(RLModule)
    def _forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """A sample of the squashed Gaussian, ``tanh(mean + std * noise)`` (what RLlib's
        ``TorchSquashedGaussian`` samples on [-1, 1]), with the distribution's inputs."""
        with torch.no_grad():
            inputs = self.pi(self.normalize(batch[Columns.OBS]))
            mean, log_std = inputs.chunk(2, dim=-1)
            actions = torch.tanh(mean + log_std.exp() * torch.randn_like(mean))
        return {Columns.ACTIONS: actions, Columns.ACTION_DIST_INPUTS: inputs}
