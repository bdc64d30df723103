"""RLlib's own SAC (new API stack) with a spiking actor.

RLlib's SAC learner (losses, optimizers, entropy temperature, target updates) runs unchanged
on our RLModule (:mod:`spikerl_ray.sac.rl_module`). The training step is TD3's data path
instead of RLlib's episode replay, whose per-batch sampling and connector pass cost about as
much as the update in a profile (docs/algorithms.md): TD3's env runners hand back flat
transitions, the driver keeps them in a :class:`~spikerl_ray.core.replay.TransitionReplay` and
passes uniform batches to ``LearnerGroup.update``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.algorithms.sac import SAC, SACConfig
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)
from ray.tune.registry import register_trainable

from policies.normalizer import moments
from spikerl_ray.common.actor_config import ActorSettings
from spikerl_ray.common.algorithm import EnergySettings, MeteredAlgorithm
from spikerl_ray.common.fragments import gather, sample_fragments
from spikerl_ray.common.observations import fold_moments
from spikerl_ray.core.replay import TransitionReplay, finite_rows


class SpikingSACConfig(ActorSettings, EnergySettings, SACConfig):
    """RLlib's :class:`SACConfig` whose module is
    :class:`~spikerl_ray.sac.rl_module.SpikingSACTorchRLModule`. ``training()`` also takes
    ``policy``, ``actor_kwargs``, ``spiking_backend``, ``critic_hiddens`` and ``method`` (as
    :class:`~spikerl_ray.td3.TD3Config` does), ``updates_per_step`` (gradient updates per
    sampled env step, 1.0), ``num_steps_random_warmup`` (env steps acting uniformly at random
    first, 1,000) and ``replay_capacity`` (1M transitions).

    Other defaults are RLlib's SAC's (learned entropy temperature with target entropy
    ``-act_dim``, tau 0.005, batch 256, gamma 0.99) except the learning rates, 3e-4 for actor,
    critic and temperature as in the SAC paper, and fragments of 50 steps per env.
    """

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or SpikingSAC)
        self._init_actor_settings()
        self._init_energy_settings()
        self.actor_lr = 3e-4
        self.critic_lr = 3e-4
        self.alpha_lr = 3e-4
        self.updates_per_step = 1.0
        self.num_steps_random_warmup = 1_000
        self.num_steps_sampled_before_learning_starts = 1_000
        self.replay_capacity = 1_000_000
        # SpikingSAC keeps its own replay (a TransitionReplay), not RLlib's episode buffer.
        self.replay_buffer_config = {**self.replay_buffer_config, "no_local_replay_buffer": True}
        self.rollout_fragment_length = 50
        self.min_sample_timesteps_per_iteration = 1_000
        self.min_time_s_per_iteration = None
        self.normalize_actions = True
        self.clip_actions = False
        from spikerl_ray.common.env_runner import TransitionEnvRunner

        self.env_runner_cls = TransitionEnvRunner

    @override(SACConfig)
    def training(self, *, updates_per_step: float | None = None,
                 num_steps_random_warmup: int | None = None,
                 replay_capacity: int | None = None, **kwargs: Any) -> "SpikingSACConfig":
        """RLlib's SAC settings plus the actor settings and the three above."""
        for name, value in (("updates_per_step", updates_per_step),
                            ("num_steps_random_warmup", num_steps_random_warmup),
                            ("replay_capacity", replay_capacity)):
            if value is not None:
                setattr(self, name, value)
        super().training(**self._take_actor_settings(kwargs))
        return self

    @override(SACConfig)
    def validate(self) -> None:
        self._quiet_new_stack_notice()
        super().validate()
        self._validate_actor_settings()
        self._validate_energy_settings()
        for name in ("updates_per_step", "replay_capacity"):
            if not getattr(self, name) or getattr(self, name) <= 0:
                self._value_error(f"{name} must be positive, got {getattr(self, name)!r}")

    @override(SACConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from spikerl_ray.sac.rl_module import SpikingSACTorchRLModule

        return RLModuleSpec(module_class=SpikingSACTorchRLModule)

    @property
    @override(AlgorithmConfig)
    def _model_config_auto_includes(self) -> dict[str, Any]:
        return super()._model_config_auto_includes | self._actor_model_config()


class SpikingSAC(MeteredAlgorithm, SAC):
    """RLlib's SAC learner fed by TD3's env runners and a transition replay on the driver.

    Each iteration: one fragment from every env runner; its finite transitions go into the
    replay and their observations into every learner's normalizer; then, once the replay holds
    ``num_steps_sampled_before_learning_starts`` transitions, ``updates_per_step`` gradient
    updates per new env step, each on a fresh uniform batch of
    ``train_batch_size_per_learner`` transitions per learner; then the weights go out.
    Checkpoints hold RLlib's state (weights, optimizers, entropy temperature) but not the
    replay: a restored run refills it before updating again.
    """

    @classmethod
    @override(SAC)
    def get_default_config(cls) -> SpikingSACConfig:
        return SpikingSACConfig()

    @override(SAC)
    def setup(self, config: SpikingSACConfig) -> None:
        super().setup(config)
        obs_space, act_space = self.env_runner_group.get_spaces()[DEFAULT_MODULE_ID]
        self._replay = TransitionReplay(config.replay_capacity, int(obs_space.shape[0]),
                                        int(act_space.shape[0]), seed=config.seed)

    def _store(self, transitions: dict[str, np.ndarray] | None) -> None:
        """Folds the transitions' observations into every learner's normalizer and stores
        them."""
        if transitions is None:
            return
        transitions, _ = finite_rows(transitions)
        if not len(transitions["rewards"]):
            return
        sums = moments(torch.as_tensor(transitions["obs"])).numpy()
        for result in self.learner_group.foreach_learner(fold_moments, sums=sums):
            result.get()
        self._replay.add(transitions)

    def _batch(self) -> MultiAgentBatch:
        """A uniform batch for every learner, in the columns RLlib's SAC loss reads."""
        size = self.config.train_batch_size_per_learner * max(self.config.num_learners, 1)
        b = self._replay.sample(size)
        ones = np.ones(size, dtype=np.float32)
        columns = {Columns.OBS: b.obs.numpy(), Columns.ACTIONS: b.actions.numpy(),
                   Columns.REWARDS: b.rewards.numpy(), Columns.NEXT_OBS: b.next_obs.numpy(),
                   Columns.TERMINATEDS: b.terminateds.numpy().astype(bool),
                   "n_step": ones, "weights": ones}
        return MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(columns)}, env_steps=size)

    @override(SAC)
    def training_step(self) -> None:
        cfg = self.config
        lifetime = self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME),
                                     default=0)
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            fragments = sample_fragments(self, lifetime < cfg.num_steps_random_warmup,
                                         by_reference=False)
        self.metrics.aggregate([m for _, _, m in fragments], key=ENV_RUNNER_RESULTS)
        self._store(gather([t for t, rows, _ in fragments if rows]))
        new_steps = sum(rows for _, rows, _ in fragments)
        # Also after a restore: checkpoints do not hold the replay, which refills first.
        if len(self._replay) < cfg.num_steps_sampled_before_learning_starts:
            return
        timesteps = {NUM_ENV_STEPS_SAMPLED_LIFETIME: lifetime + new_steps}
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            for _ in range(int(round(new_steps * cfg.updates_per_step))):
                results = self.learner_group.update(batch=self._batch(), timesteps=timesteps)
                self.metrics.aggregate(results, key=LEARNER_RESULTS)
        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(from_worker_or_learner_group=self.learner_group,
                                               inference_only=True)


register_trainable("SpikingSAC", SpikingSAC)
