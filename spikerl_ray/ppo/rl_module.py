"""PPO's RLModule with an actor of :mod:`policies` as its policy network.

A diagonal Gaussian (RLlib's ``TorchDiagGaussian``) whose mean is the actor's tanh-squashed
output and whose log-std is a free parameter starting at -0.5 (PopSAN's PPO,
:class:`policies.gaussian.GaussianActor`); a separate value MLP; observations normalized with
the module's running statistics (:mod:`spikerl_ray.common.observations`). RLlib's PPO learner
reads ``action_dist_inputs`` from ``forward_train`` and values from :meth:`compute_values`
(docs/algorithms.md). Acting without exploration returns the mean.
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


class SpikingPPOTorchRLModule(TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI):
    """Gaussian policy over our actor, value MLP, observation normalizer. ``model_config``
    keys: ``policy``, ``actor_kwargs``, ``spiking_backend`` (as for TD3) and
    ``critic_hiddens`` (the value MLP's)."""

    @override(RLModule)
    def setup(self) -> None:
        obs_dim = int(self.observation_space.shape[0])
        self.obs_normalizer = RunningNormalizer(obs_dim)
        self.pi = gaussian_policy(self, log_std="free", squash_mean=True)
        self.action_dist_cls = TorchDiagGaussian
        if not self.inference_only:
            self.vf = mlp(obs_dim, tuple(self.model_config.get("critic_hiddens", (256, 256))),
                          1)

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

    @override(RLModule)
    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.pi(self.normalize(batch[Columns.OBS]))}

    @override(RLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.no_grad():
            return {Columns.ACTIONS: self.pi.mean(self.normalize(batch[Columns.OBS]))}

    @override(ValueFunctionAPI)
    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        return self.vf(self.normalize(batch[Columns.OBS])).squeeze(-1)
