"""RLlib's own PPO (new API stack) with a spiking actor: RLlib's PPO algorithm and learner
run unchanged on our RLModule (:mod:`spikerl_ray.ppo.rl_module`), which compiles its policy
with ``torch.compile`` and runs the learner's forward passes in bf16 autocast where
``precision`` says so (docs/algorithms.md); the learner's connector starts with
:class:`~spikerl_ray.common.observations.FoldObservations`, which folds the fresh episodes'
observations into the module's normalizer (first, before RLlib's PPO learner appends a
bootstrap step to every episode)."""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.algorithms.ppo import PPO, PPOConfig
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override
from ray.tune.registry import register_trainable

from spikerl_ray.common.actor_config import ActorSettings
from spikerl_ray.common.algorithm import EnergySettings, MeteredAlgorithm
from spikerl_ray.common.observations import FoldObservations
from spikerl_ray.common.replay_algorithm import CompileSettings


class SpikingPPOConfig(ActorSettings, EnergySettings, CompileSettings, PPOConfig):
    """RLlib's :class:`PPOConfig` whose module is
    :class:`~spikerl_ray.ppo.rl_module.SpikingPPOTorchRLModule`. ``training()`` also takes
    ``policy``, ``actor_kwargs``, ``spiking_backend``, ``critic_hiddens`` and ``method`` (as
    :class:`~spikerl_ray.td3.TD3Config` does), ``compile_networks`` (compile the policy and
    acting with ``torch.compile``; on by default, off with one warning where it cannot run)
    and ``precision`` (``fp32``, ``bf16`` or ``auto``: the learner's forward passes in bf16
    autocast, fp32 weights).

    Defaults are the usual MuJoCo PPO settings (the PPO paper's, as in CleanRL and
    Stable-Baselines3) rather than RLlib's: 2,048 steps per update, 10 epochs of minibatches
    of 64, lr 3e-4, GAE lambda 0.95, clip 0.2, value loss weight 0.5, gradient norm clip 0.5,
    no KL penalty, and no clipping of the value loss (RLlib clips it at 10, which stops the
    value network from learning returns of hundreds); no remote env runners.
    """

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or SpikingPPO)
        self._init_actor_settings()
        self._init_energy_settings()
        self._init_compile_settings()
        self.num_env_runners = 0
        self.train_batch_size_per_learner = 2048
        self.num_epochs = 10
        self.minibatch_size = 64
        self.lr = 3e-4
        self.lambda_ = 0.95
        self.clip_param = 0.2
        self.vf_loss_coeff = 0.5
        self.vf_clip_param = float("inf")
        self.grad_clip = 0.5
        self.use_kl_loss = False

    @override(PPOConfig)
    def training(self, *, compile_networks: bool | None = NotProvided,
                 precision: str | None = NotProvided, **kwargs: Any) -> "SpikingPPOConfig":
        """RLlib's PPO settings plus the actor settings, ``compile_networks`` and
        ``precision``."""
        for name, value in (("compile_networks", compile_networks), ("precision", precision)):
            if value is not NotProvided:
                setattr(self, name, value)
        super().training(**self._take_actor_settings(kwargs))
        return self

    @override(PPOConfig)
    def validate(self) -> None:
        self._quiet_new_stack_notice()
        super().validate()
        self._validate_actor_settings()
        self._validate_energy_settings()
        self._validate_compile_settings()

    @override(PPOConfig)
    def get_default_learner_class(self) -> type:
        return SpikingPPOTorchLearner

    @override(PPOConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from spikerl_ray.ppo.rl_module import SpikingPPOTorchRLModule

        return RLModuleSpec(module_class=SpikingPPOTorchRLModule)

    @property
    @override(AlgorithmConfig)
    def _model_config_auto_includes(self) -> dict[str, Any]:
        return super()._model_config_auto_includes | self._actor_model_config() | {
            "compile_networks": bool(self.compile_networks), "precision": self.precision}


class SpikingPPOTorchLearner(PPOTorchLearner):
    """RLlib's PPO learner whose connector folds observations in first."""

    @override(PPOTorchLearner)
    def build(self) -> None:
        super().build()
        self._learner_connector.prepend(FoldObservations())


class SpikingPPO(MeteredAlgorithm, PPO):
    """RLlib's PPO with :class:`SpikingPPOConfig`'s defaults."""

    @classmethod
    @override(PPO)
    def get_default_config(cls) -> SpikingPPOConfig:
        return SpikingPPOConfig()


register_trainable("SpikingPPO", SpikingPPO)
