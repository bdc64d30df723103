"""The SAC learner: the shared replay learner (:mod:`spikerl_ray.common.replay_learner`: replay
shard on the learner's device, many gradient steps per call, DDP) running the SAC update of
:mod:`spikerl_ray.core.sac` (compiled losses, bf16 where chosen, fused Adam)."""

from __future__ import annotations

from typing import Any

from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override

from spikerl_ray.common.replay_learner import ReplayTorchLearner
from spikerl_ray.core.platform import resolve_precision
from spikerl_ray.core.sac import ADAM_EPS, SACHyperparams, SACUpdate


class SACTorchLearner(ReplayTorchLearner):
    """The replay learner with ``actor``, ``critic`` and ``alpha`` optimizers (Adam with
    RLlib's SAC epsilon) and the SAC update."""

    @override(ReplayTorchLearner)
    def build(self) -> None:
        super().build()
        module = self.module[DEFAULT_MODULE_ID].unwrapped()
        cfg = self.config
        pi, critic, temperature = self.data_parallel_wrap(module.pi, module.critic,
                                                          module.temperature)
        if self.data_parallel:  # DDP broadcast rank 0's weights; the target starts as a copy
            module.target_critic.load_state_dict(module.critic.state_dict())
        target_entropy = (-float(module.action_space.shape[0])
                          if cfg.target_entropy in (None, "auto") else float(cfg.target_entropy))
        self.update_rule = SACUpdate(
            policy=pi, critic=critic, temperature=temperature,
            critic_target=module.target_critic, normalize=module.normalize,
            policy_optim=self.get_optimizer(DEFAULT_MODULE_ID, "actor"),
            critic_optim=self.get_optimizer(DEFAULT_MODULE_ID, "critic"),
            temperature_optim=self.get_optimizer(DEFAULT_MODULE_ID, "alpha"),
            hp=SACHyperparams(gamma=cfg.gamma, tau=cfg.tau, target_entropy=target_entropy),
            precision=resolve_precision(cfg.precision, self.device.type),
            policy_for_target=module.pi, critic_for_actor_loss=module.critic,
            temperature_for_target=module.temperature, compile=cfg.compile_networks)

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        module = self.module[module_id].unwrapped()
        self.register_adams(module_id, {"actor": (module.pi, config.actor_lr),
                                        "critic": (module.critic, config.critic_lr),
                                        "alpha": (module.temperature, config.alpha_lr)},
                            eps=ADAM_EPS)
