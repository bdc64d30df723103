"""The TD3 RLModule: an actor from :mod:`policies` by name, twin critics, target networks.

The inference-only copy that env runners hold contains the observation normalizer and the
actor only. Actions are produced in RLlib's normalized space [-1, 1]; RLlib's module-to-env
connector unsquashes them to the environment's bounds (``normalize_actions=True``).
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, QNetAPI, TargetNetworkAPI
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.utils.annotations import override

from policies import RunningNormalizer, TwinQCritic, build_actor
from policies.spiking import resolve_backend


class TD3TorchRLModule(TorchRLModule, InferenceOnlyAPI, TargetNetworkAPI, QNetAPI):
    """Actor + twin Q critics + targets. ``model_config`` keys: ``policy`` (actor name),
    ``actor_kwargs``, ``spiking_backend`` (``auto``, ``torch`` or ``fused``), ``critic_hiddens``,
    ``exploration_noise`` (Gaussian std in normalized action units; 0.1 in TD3 and PopSAN),
    ``compile_networks`` (compile every network with ``torch.compile``, see
    :meth:`compile_networks`)."""

    @override(RLModule)
    def setup(self) -> None:
        cfg = self.model_config
        obs_dim = int(self.observation_space.shape[0])
        act_dim = int(self.action_space.shape[0])
        self.exploration_noise = float(cfg.get("exploration_noise", 0.1))
        self.obs_normalizer = RunningNormalizer(obs_dim)
        self.actor = build_actor(cfg.get("policy", "spikerl"), obs_dim, act_dim,
                                 backend=resolve_backend(cfg.get("spiking_backend", "auto"),
                                                         cfg.get("compile_networks", False)),
                                 **dict(cfg.get("actor_kwargs") or {}))
        if not self.inference_only:
            self.critic = TwinQCritic(obs_dim, act_dim, tuple(cfg.get("critic_hiddens",
                                                                      (256, 256))))
            self.make_target_networks()
        if cfg.get("compile_networks", False):
            self.compile_networks()

    def compile_networks(self) -> None:
        """Compiles the actor (and critic and targets, where present) in place with
        ``torch.compile`` (inductor): the spiking time loop, encoder and decoder become a few
        generated kernels around the matrix products. State dicts are unchanged. Networks
        must not be deep-copied afterwards (a copy would call the original's compiled
        forward), so this runs after the targets exist. The first call of each network at a
        new batch size compiles (seconds)."""
        nets = [self.actor]
        if not self.inference_only:
            nets += [self.critic, self.target_actor, self.target_critic]
        for net in nets:
            net.compile(dynamic=False)
        # Acting as one graph: normalization, actor, exploration noise and clipping.
        self._act = torch.compile(self._act, dynamic=False)

    @override(TargetNetworkAPI)
    def make_target_networks(self) -> None:
        self.target_actor = make_target_network(self.actor)
        self.target_critic = make_target_network(self.critic)

    @override(TargetNetworkAPI)
    def get_target_network_pairs(self) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
        return [(self.actor, self.target_actor), (self.critic, self.target_critic)]

    @override(TargetNetworkAPI)
    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        obs = self.normalize(batch[Columns.OBS])
        q1, q2 = self.target_critic(obs, self.target_actor(obs))
        return {"q_target": torch.min(q1, q2)}

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        return ["critic", "target_actor", "target_critic"]

    @override(QNetAPI)
    def compute_q_values(self, batch: dict[str, Any]) -> dict[str, Any]:
        q1, q2 = self.critic(self.normalize(batch[Columns.OBS]), batch[Columns.ACTIONS])
        return {"q1": q1, "q2": q2}

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """Float32 observations, z-scored with the running statistics and clipped (PopSAN)."""
        return self.obs_normalizer(obs.float())

    def _act(self, obs: torch.Tensor, explore: bool) -> torch.Tensor:
        """Actions for raw observations; with ``explore``, plus Gaussian noise of std
        ``exploration_noise``, clipped to [-1, 1] (TD3)."""
        actions = self.actor(self.normalize(obs))
        if explore:
            actions = (actions + torch.randn_like(actions) * self.exploration_noise).clamp(
                -1.0, 1.0)
        return actions

    @override(RLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.no_grad():
            return {Columns.ACTIONS: self._act(batch[Columns.OBS], False)}

    @override(RLModule)
    def _forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.no_grad():
            return {Columns.ACTIONS: self._act(batch[Columns.OBS], True)}

    @override(RLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTIONS: self.actor(self.normalize(batch[Columns.OBS]))}
