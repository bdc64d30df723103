"""PPO's RLModule with an actor of :mod:`policies` as its policy network.

A diagonal Gaussian (RLlib's ``TorchDiagGaussian``) whose mean is the actor's tanh-squashed
output and whose log-std is a free parameter starting at -0.5 (PopSAN's PPO,
:class:`policies.gaussian.GaussianActor`); a separate value MLP; observations normalized with
the module's running statistics (:mod:`spikerl_ray.common.observations`). RLlib's PPO learner
reads ``action_dist_inputs`` from ``forward_train`` and values from :meth:`compute_values`
(docs/algorithms.md). Acting without exploration returns the mean.

With ``compile_networks`` the policy and acting are compiled with ``torch.compile``
(``dynamic=False``: the env runners' batch and the learner's minibatch are fixed sizes; the
value MLP, which also sees whole train batches of varying size, stays eager). With
``precision`` ``bf16`` (or ``auto`` where the device computes it natively) the learner's
forward passes run in bf16 autocast and return fp32, weights staying fp32, as in TD3's
learner; acting is fp32.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchDiagGaussian
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.utils.annotations import override

from policies import RunningNormalizer
from policies.mlp import mlp
from spikerl_ray.common.actor_config import gaussian_policy
from spikerl_ray.core.platform import resolve_precision
from spikerl_ray.core.td3 import autocast


class SpikingPPOTorchRLModule(TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI):
    """Gaussian policy over our actor, value MLP, observation normalizer. ``model_config``
    keys: ``policy``, ``actor_kwargs``, ``spiking_backend``, ``compile_networks`` (as for
    TD3), ``critic_hiddens`` (the value MLP's) and ``precision``."""

    @override(RLModule)
    def setup(self) -> None:
        obs_dim = int(self.observation_space.shape[0])
        self.obs_normalizer = RunningNormalizer(obs_dim)
        self.pi = gaussian_policy(self, log_std="free", squash_mean=True)
        self.action_dist_cls = TorchDiagGaussian
        if not self.inference_only:
            self.vf = mlp(obs_dim, tuple(self.model_config.get("critic_hiddens", (256, 256))),
                          1)
        self.precision = self.model_config.get("precision", "fp32")
        if self.model_config.get("compile_networks", False):
            self.pi.compile(dynamic=False)
            self._act = torch.compile(self._act, dynamic=False)

    @property
    def actor(self) -> torch.nn.Module:
        """The network that decodes the mean (spike statistics and exports read it)."""
        return self.pi.actor

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """Float32 observations, z-scored with the running statistics and clipped."""
        return self.obs_normalizer(obs.float())

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        return ["vf"]

    def _autocast(self, obs: torch.Tensor) -> Any:
        """bf16 autocast on ``obs``'s device where ``precision`` resolves to bf16 there."""
        return autocast(resolve_precision(self.precision, obs.device.type), obs.device)

    def _act(self, obs: torch.Tensor, explore: bool) -> torch.Tensor:
        """The distribution's inputs, or with ``explore`` off the mean, for raw
        observations (fp32)."""
        normalized = self.normalize(obs)
        return self.pi(normalized) if explore else self.pi.mean(normalized)

    @override(RLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        obs = batch[Columns.OBS]
        with self._autocast(obs):
            inputs = self.pi(self.normalize(obs))
        return {Columns.ACTION_DIST_INPUTS: inputs.float()}

    @override(RLModule)
    def _forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.no_grad():
            return {Columns.ACTION_DIST_INPUTS: self._act(batch[Columns.OBS], True)}

    @override(RLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.no_grad():
            return {Columns.ACTIONS: self._act(batch[Columns.OBS], False)}

    @override(ValueFunctionAPI)
    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        obs = batch[Columns.OBS]
        with self._autocast(obs):
            values = self.vf(self.normalize(obs))
        return values.float().squeeze(-1)
