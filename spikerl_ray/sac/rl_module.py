"""SAC's RLModule with an actor of :mod:`policies` as its policy network (docs/algorithms.md,
"SAC"):

- ``obs_normalizer``: the running observation statistics (PopSAN's z-score clipped to
  [-3, 3], :class:`policies.RunningNormalizer`), in the weights;
- ``pi``: a :class:`policies.gaussian.GaussianActor`, the mean decoded by the actor (before
  its tanh), the log-std from a ReLU MLP (PopSAN's SAC); actions are
  ``tanh(mean + std * noise)`` (:func:`spikerl_ray.core.sac.squashed_sample`);
- ``critic``: twin Q MLPs on the normalized observation and the action, as in our TD3, with
  its target copy, and ``temperature``, the learned entropy temperature (learners only).

Acting without exploration returns ``tanh(mean)``. With ``compile_networks`` the networks and
acting are compiled with ``torch.compile``, as TD3's module does.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, TargetNetworkAPI
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import nn

from policies import RunningNormalizer, TwinQCritic
from spikerl_ray.common.actor_config import gaussian_policy
from spikerl_ray.core.sac import Temperature, squashed_sample


class SpikingSACTorchRLModule(TorchRLModule, InferenceOnlyAPI, TargetNetworkAPI):
    """Gaussian policy over our actor, twin critics and their target, temperature, normalizer.
    ``model_config`` keys: ``policy``, ``actor_kwargs``, ``spiking_backend``,
    ``critic_hiddens``, ``compile_networks`` (as for TD3) and ``initial_alpha`` (1.0)."""

    @override(RLModule)
    def setup(self) -> None:
        cfg = self.model_config
        obs_dim = int(self.observation_space.shape[0])
        act_dim = int(self.action_space.shape[0])
        self.obs_normalizer = RunningNormalizer(obs_dim)
        self.pi = gaussian_policy(self, log_std="network", squash_mean=False)
        if not self.inference_only:
            self.critic = TwinQCritic(obs_dim, act_dim,
                                      tuple(cfg.get("critic_hiddens", (256, 256))))
            self.temperature = Temperature(float(cfg.get("initial_alpha", 1.0)))
            self.make_target_networks()
        if cfg.get("compile_networks", False):
            self.compile_networks()

    def compile_networks(self) -> None:
        """Compiles the policy (and critic and target, where present) in place, and acting as
        one graph (as :meth:`spikerl_ray.td3.rl_module.TD3TorchRLModule.compile_networks`)."""
        nets = [self.pi] + ([] if self.inference_only else [self.critic, self.target_critic])
        for net in nets:
            net.compile(dynamic=False)
        self._act = torch.compile(self._act, dynamic=False)

    @property
    def actor(self) -> nn.Module:
        """The network that decodes the mean (spike statistics and exports read it)."""
        return self.pi.actor

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """Float32 observations, z-scored with the running statistics and clipped."""
        return self.obs_normalizer(obs.float())

    @override(TargetNetworkAPI)
    def make_target_networks(self) -> None:
        self.target_critic = make_target_network(self.critic)

    @override(TargetNetworkAPI)
    def get_target_network_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.critic, self.target_critic)]

    @override(TargetNetworkAPI)
    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        q1, q2 = self.target_critic(self.normalize(batch[Columns.OBS]), batch[Columns.ACTIONS])
        return {"q_target": torch.min(q1, q2)}

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        return ["critic", "target_critic", "temperature"]

    def _act(self, obs: torch.Tensor, explore: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions for raw observations, and the distribution's inputs: ``tanh(mean)``, or
        with ``explore`` a sample of the squashed Gaussian."""
        inputs = self.pi(self.normalize(obs))
        mean = inputs.chunk(2, dim=-1)[0]
        if explore:
            return squashed_sample(inputs, torch.randn_like(mean))[0], inputs
        return torch.tanh(mean), inputs

    @override(RLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.no_grad():
            return {Columns.ACTIONS: self._act(batch[Columns.OBS], False)[0]}

    @override(RLModule)
    def _forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.no_grad():
            actions, inputs = self._act(batch[Columns.OBS], True)
        return {Columns.ACTIONS: actions, Columns.ACTION_DIST_INPUTS: inputs}

    @override(RLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.pi(self.normalize(batch[Columns.OBS]))}
