"""The TD3 learner: the shared replay learner (:mod:`spikerl_ray.common.replay_learner`: replay
shard on the learner's device, many gradient steps per call, DDP) running the TD3 update of
:mod:`spikerl_ray.core.td3`.

With more than one learner, the actor and the critic are each wrapped in
``DistributedDataParallel`` and every gradient that is applied is computed through the DDP
wrapper, so gradients really are averaged across learners (SpikeRL's public code calls
``ddp.module`` and never averages).
"""

from __future__ import annotations

from typing import Any

from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override

from spikerl_ray.common.replay_learner import ReplayTorchLearner
from spikerl_ray.core.platform import resolve_precision
from spikerl_ray.core.td3 import TD3Hyperparams, TD3Update


class TD3TorchLearner(ReplayTorchLearner):
    """The replay learner with ``actor`` and ``critic`` optimizers and the TD3 update."""

    @override(ReplayTorchLearner)
    def build(self) -> None:
        super().build()
        module = self.module[DEFAULT_MODULE_ID].unwrapped()
        cfg = self.config
        actor, critic = self.data_parallel_wrap(module.actor, module.critic)
        if self.data_parallel:  # DDP broadcast rank 0's weights; the targets start as copies
            module.target_actor.load_state_dict(module.actor.state_dict())
            module.target_critic.load_state_dict(module.critic.state_dict())
        self.update_rule = TD3Update(
            actor=actor, critic=critic, actor_target=module.target_actor,
            critic_target=module.target_critic, normalize=module.normalize,
            actor_optim=self.get_optimizer(DEFAULT_MODULE_ID, "actor"),
            critic_optim=self.get_optimizer(DEFAULT_MODULE_ID, "critic"),
            hp=TD3Hyperparams(gamma=cfg.gamma, tau=cfg.tau, policy_noise=cfg.target_noise,
                              noise_clip=cfg.target_noise_clip, policy_delay=cfg.policy_delay,
                              pre_tanh_penalty=cfg.pre_tanh_penalty),
            precision=resolve_precision(cfg.precision, self.device.type),
            critic_for_actor_loss=module.critic,
            compile=cfg.compile_networks)

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        module = self.module[module_id].unwrapped()
        self.register_adams(module_id, {"actor": (module.actor, config.actor_lr),
                                        "critic": (module.critic, config.critic_lr)})
