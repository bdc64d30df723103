"""SAC (Haarnoja et al., 2018) with the actors of :mod:`policies`, on TD3's fast paths
(docs/algorithms.md): TD3's env runners and training step
(:class:`~spikerl_ray.common.replay_algorithm.ReplayAlgorithm`: replay on the learners, many
gradient steps per learner call, data-parallel learners with DDP) and the SAC update of
:mod:`spikerl_ray.core.sac`, which computes RLlib 2.60's SAC loss (compiled, bf16 where
chosen, fused Adam) in :class:`~spikerl_ray.sac.learner.SACTorchLearner`.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override
from ray.tune.registry import register_trainable

from spikerl_ray.common.actor_config import ActorSettings
from spikerl_ray.common.algorithm import EnergySettings
from spikerl_ray.common.replay_algorithm import ReplayAlgorithm, ReplaySettings


class SpikingSACConfig(ActorSettings, EnergySettings, ReplaySettings, AlgorithmConfig):
    """Configuration of :class:`SpikingSAC`.

    ``training()`` takes the actor settings (``policy``, ``actor_kwargs``, ``spiking_backend``,
    ``critic_hiddens``, ``method``, as :class:`~spikerl_ray.td3.TD3Config` does), the replay
    learner's settings (:class:`~spikerl_ray.common.replay_algorithm.ReplaySettings`:
    ``compile_networks``, ``precision``, ``updates_per_step``, ``num_steps_random_warmup``,
    ``data_parallel``, ...), SAC's own: ``actor_lr``, ``critic_lr``, ``alpha_lr`` (3e-4
    each, the SAC paper's), ``tau`` (0.005), ``initial_alpha`` (1.0), ``target_entropy``
    (``"auto"``: ``-act_dim``), and RLlib's common settings (``gamma`` 0.99,
    ``train_batch_size_per_learner`` 256).

    Defaults otherwise as TD3's data path: fragments of 50 steps per env, one update per env
    step, 1,000 uniformly random steps first, updates from 1,000 steps on, compiled networks
    in fp32.
    """

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or SpikingSAC)
        self._init_actor_settings()
        self._init_energy_settings()
        self._init_replay_settings()
        self.num_steps_random_warmup = 1_000
        self.actor_lr = 3e-4
        self.critic_lr = 3e-4
        self.alpha_lr = 3e-4
        self.lr = None
        self.gamma = 0.99
        self.tau = 0.005
        self.initial_alpha = 1.0
        self.target_entropy: str | float = "auto"
        self.train_batch_size_per_learner = 256

    @override(AlgorithmConfig)
    def training(self, *, actor_lr: float | None = NotProvided,
                 critic_lr: float | None = NotProvided, alpha_lr: float | None = NotProvided,
                 tau: float | None = NotProvided, initial_alpha: float | None = NotProvided,
                 target_entropy: str | float | None = NotProvided,
                 **kwargs: Any) -> "SpikingSACConfig":
        """SAC's settings (above), the actor and replay settings, and RLlib's common ones."""
        for name, value in (("actor_lr", actor_lr), ("critic_lr", critic_lr),
                            ("alpha_lr", alpha_lr), ("tau", tau),
                            ("initial_alpha", initial_alpha),
                            ("target_entropy", target_entropy)):
            if value is not NotProvided:
                setattr(self, name, value)
        super().training(**self._take_replay_settings(self._take_actor_settings(kwargs)))
        return self

    @override(AlgorithmConfig)
    def validate(self) -> None:
        self._quiet_new_stack_notice()
        super().validate()
        self._validate_actor_settings()
        self._validate_energy_settings()
        self._validate_replay_settings(
            positive=("actor_lr", "critic_lr", "alpha_lr", "tau", "initial_alpha"))
        if not (self.target_entropy == "auto" or isinstance(self.target_entropy, (int, float))):
            self._value_error(f"target_entropy must be 'auto' or a number, got "
                              f"{self.target_entropy!r}")

    @override(AlgorithmConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from spikerl_ray.sac.rl_module import SpikingSACTorchRLModule

        return RLModuleSpec(module_class=SpikingSACTorchRLModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self) -> type:
        from spikerl_ray.sac.learner import SACTorchLearner

        return SACTorchLearner

    @property
    @override(AlgorithmConfig)
    def _model_config_auto_includes(self) -> dict[str, Any]:
        return super()._model_config_auto_includes | self._actor_model_config() | {
            "compile_networks": bool(self.compile_networks),
            "initial_alpha": float(self.initial_alpha)}


class SpikingSAC(ReplayAlgorithm):
    """SAC with a learner-side replay memory; see :class:`SpikingSACConfig`.

    Each iteration: one fragment from every env runner, routed to the learners; each adds its
    share to its replay shard and folds the observations into the statistics, then, once
    ``num_steps_sampled_before_learning_starts`` steps were sampled, runs
    ``updates_per_step`` SAC updates per new env step on batches of
    ``train_batch_size_per_learner``; then the weights go out. Checkpoints hold RLlib's state
    (weights with the temperature, optimizers) and the learners' random state (and, with
    ``save_replay``, their replay).
    """

    LEARNERS_STATE = "sac_learners"

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> SpikingSACConfig:
        return SpikingSACConfig()


register_trainable("SpikingSAC", SpikingSAC)
