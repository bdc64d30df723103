"""The TD3 learner: its replay shard lives on the learner's device, and one call runs many
gradient steps (DESIGN.md, data flow steps 2-3). The update math is :mod:`spikerl_ray.core.td3`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override

from spikerl_ray.core.replay import TransitionReplay
from spikerl_ray.core.td3 import TD3Hyperparams, TD3Update


class TD3TorchLearner(TorchLearner):
    """TorchLearner with ``actor`` and ``critic`` optimizers and a device-side replay shard.

    RLlib's generic ``update(batch)`` path is not used by TD3: the algorithm calls
    :meth:`add_and_train`, which keeps the replay next to the networks.
    """

    @override(TorchLearner)
    def build(self) -> None:
        super().build()
        module = self.module[DEFAULT_MODULE_ID].unwrapped()
        cfg = self.config
        seed = None if cfg.seed is None else int(cfg.seed) + 7919 * (self._learner_index or 0)
        self.replay = TransitionReplay(
            cfg.replay_capacity, int(module.observation_space.shape[0]),
            int(module.action_space.shape[0]), device=self._device, seed=seed)
        self._td3 = TD3Update(
            actor=module.actor, critic=module.critic, actor_target=module.target_actor,
            critic_target=module.target_critic, normalize=module.normalize,
            actor_optim=self.get_optimizer(DEFAULT_MODULE_ID, "actor"),
            critic_optim=self.get_optimizer(DEFAULT_MODULE_ID, "critic"),
            hp=TD3Hyperparams(gamma=cfg.gamma, tau=cfg.tau, policy_noise=cfg.target_noise,
                              noise_clip=cfg.target_noise_clip, policy_delay=cfg.policy_delay),
            precision=cfg.precision)

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        module = self.module[module_id].unwrapped()
        for name, net, lr in (("actor", module.actor, config.actor_lr),
                              ("critic", module.critic, config.critic_lr)):
            params = self.get_parameters(net)
            self.register_optimizer(module_id=module_id, optimizer_name=name,
                                    optimizer=torch.optim.Adam(params, lr=lr), params=params,
                                    lr_or_lr_schedule=lr)

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict,
                                fwd_out: dict) -> torch.Tensor:
        raise NotImplementedError(
            "TD3 trains through TD3TorchLearner.add_and_train (replay on the learner); "
            "RLlib's generic update(batch) path would merge the critic and delayed actor "
            "losses into one backward pass.")

    def add_and_train(self, transitions: Mapping[str, np.ndarray] | None,
                      num_updates: int) -> dict[str, float]:
        """Adds new transitions to this learner's replay shard and its observation statistics,
        then runs ``num_updates`` TD3 gradient steps on batches sampled from the shard."""
        module = self.module[DEFAULT_MODULE_ID].unwrapped()
        if transitions is not None and len(transitions["rewards"]):
            self.replay.add(transitions)
            module.obs_normalizer.update(torch.as_tensor(transitions["obs"]))
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        done = 0
        if len(self.replay) >= self.config.train_batch_size_per_learner:
            for _ in range(num_updates):
                stats = self._td3.step(self.replay.sample(self.config.train_batch_size_per_learner))
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                    counts[k] = counts.get(k, 0) + 1
                done += 1
        out = {k: float(v) / counts[k] for k, v in sums.items()}
        out.update(num_updates=done, replay_size=len(self.replay))
        return out
