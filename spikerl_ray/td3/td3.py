"""TD3 (Fujimoto et al., 2018) on RLlib's new API stack, for spiking and ANN actors.

Shaped like RLlib's own algorithms: a config built with chained methods, an Algorithm whose
``training_step`` follows the data flow of docs/architecture.md (fragments from vectorized env runners, replay on the
learner, many gradient steps per learner call, weights out once per step), a TorchLearner and
an RLModule. Defaults are PopSAN's TD3 schedule (docs/methods.md).
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


class TD3Config(ActorSettings, EnergySettings, ReplaySettings, AlgorithmConfig):
    """Configuration of :class:`TD3`.

    Example::

        config = (TD3Config()
                  .environment("HalfCheetah-v5")
                  .env_runners(num_env_runners=2, num_envs_per_env_runner=4)
                  .training(policy="spikerl", train_batch_size_per_learner=100))
        algo = config.build_algo()
        algo.train()
    """

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or TD3)
        # Networks: method (a label), policy, actor_kwargs, spiking_backend, critic_hiddens.
        self._init_actor_settings()
        # Replay on the learners, compiled networks in fp32, sampling in fragments of 50
        # steps per env (ReplaySettings); PopSAN's warm-up and update schedule.
        self._init_replay_settings()
        # PopSAN's TD3 schedule (docs/methods.md).
        self.actor_lr = 1e-4
        self.critic_lr = 1e-3
        self.lr = None
        self.gamma = 0.99
        self.tau = 0.005
        self.exploration_noise = 0.1
        self.target_noise = 0.2
        self.target_noise_clip = 0.5
        self.policy_delay = 2
        self.pre_tanh_penalty = 0.0
        self.num_steps_random_warmup = 10_000  # PopSAN start_steps
        self.num_steps_sampled_before_learning_starts = 1_000  # PopSAN update_after
        self.updates_per_step = 1.0  # PopSAN: 50 updates every 50 steps
        self.train_batch_size_per_learner = 100
        # Energy (spikerl_ray.energy): a monitor on every node the run uses.
        self._init_energy_settings()

    @override(AlgorithmConfig)
    def training(
        self,
        *,
        method: str | None = NotProvided,
        policy: str | None = NotProvided,
        actor_kwargs: dict[str, Any] | None = NotProvided,
        spiking_backend: str | None = NotProvided,
        compile_networks: bool | None = NotProvided,
        critic_hiddens: tuple[int, ...] | None = NotProvided,
        actor_lr: float | None = NotProvided,
        critic_lr: float | None = NotProvided,
        tau: float | None = NotProvided,
        exploration_noise: float | None = NotProvided,
        target_noise: float | None = NotProvided,
        target_noise_clip: float | None = NotProvided,
        policy_delay: int | None = NotProvided,
        pre_tanh_penalty: float | None = NotProvided,
        num_steps_random_warmup: int | None = NotProvided,
        num_steps_sampled_before_learning_starts: int | None = NotProvided,
        updates_per_step: float | None = NotProvided,
        data_parallel: str | None = NotProvided,
        replay_capacity: int | None = NotProvided,
        save_replay: bool | None = NotProvided,
        max_nonfinite_updates: int | None = NotProvided,
        precision: str | None = NotProvided,
        allreduce_dtype: str | None = NotProvided,
        torch_distributed_backend: str | None = NotProvided,
        async_sampling: bool | None = NotProvided,
        **kwargs: Any,
    ) -> "TD3Config":
        """Sets TD3's training settings.

        Args:
            method: the name of the method these settings came from (a label).
            policy: actor name: ``spikerl``, ``popsan``, ``dsrl`` or ``ann``.
            actor_kwargs: overrides for the actor's constructor (e.g. DSRL's ``threshold``).
            spiking_backend: ``fused`` (hand-written BPTT), ``torch`` (plain autograd ops)
                or ``auto`` (the default: ``torch`` when compiled, else ``fused``); all
                compute the same values.
            compile_networks: compile with ``torch.compile`` the actor, critic and targets
                and each TD3 loss as one graph (learners), and the acting actor (env
                runners); on by default. The first update and the first action compile
                (seconds). Where torch.compile cannot work here (no C++ compiler, no
                Triton for GPU learners, an unsupported platform), one warning says so and
                the networks run eagerly.
            critic_hiddens: hidden sizes of each twin Q MLP.
            actor_lr, critic_lr: Adam learning rates (PopSAN: 1e-4 and 1e-3).
            tau: Polyak coefficient of the target update (0.005).
            exploration_noise: Gaussian action noise when acting, in normalized units (0.1).
            target_noise, target_noise_clip: target policy smoothing (0.2, clipped at 0.5).
            policy_delay: critic updates per actor and target update (2).
            pre_tanh_penalty: weight of the mean squared pre-tanh actor output added to the
                actor loss (0: plain TD3; see docs/learning_quality.md).
            num_steps_random_warmup: env steps acting uniformly at random first (10k).
            num_steps_sampled_before_learning_starts: env steps before any update (1000).
            updates_per_step: optimizer steps per sampled env step (1.0).
            data_parallel: how L >= 2 learners share them: ``same_steps`` (the default:
                ``updates_per_step`` steps per env step, each averaging the L learners'
                batches, effective batch L x B) or ``same_samples`` (the SpikeRL paper's
                regime: ``updates_per_step / L`` steps per env step, so the learners sample
                as many transitions per env step as one learner would).
            replay_capacity: transitions kept in each learner's replay shard (1M).
            save_replay: checkpoints hold every learner's replay memory (its size:
                transitions x (2 obs_dim + act_dim + 2) x 4 bytes); without it a restored run
                refills the replay with ``num_steps_sampled_before_learning_starts`` new
                transitions before updating again.
            max_nonfinite_updates: a gradient update with a NaN or Inf gradient is skipped
                and counted; after this many in a row, training stops with
                :class:`NonFiniteError` (1000).
            precision: ``fp32`` (the default), ``bf16`` (autocast around forward and loss,
                fp32 weights) or ``auto`` (bf16 where the learner's device computes it
                natively, i.e. CUDA compute capability 8.0+ or a CPU with AVX512-BF16/AMX;
                else fp32). bf16 is not the default: its learning is not yet shown equal to
                fp32's (docs/performance.md).
            allreduce_dtype: ``fp32``, or ``bf16`` to compress the gradient allreduce of
                data-parallel learners with DDP's bf16 communication hook.
            torch_distributed_backend: ``gloo``, ``nccl`` or ``mpi`` for data-parallel
                learners; ``auto`` (the default) lets Ray Train pick (NCCL with GPUs, Gloo
                without).
            async_sampling: remote env runners sample the next fragment while the learners
                train on the last one (needs ``num_env_runners >= 1``). The weights a runner
                acts with are then one training step older than without it.
        """
        super().training(**kwargs)
        for name, value in locals().items():
            if name not in ("self", "kwargs", "__class__") and value is not NotProvided:
                setattr(self, name, value)
        return self

    @override(AlgorithmConfig)
    def validate(self) -> None:
        self._quiet_new_stack_notice()
        super().validate()
        self._validate_actor_settings()
        self._validate_replay_settings(
            positive=("actor_lr", "critic_lr", "tau", "policy_delay"))
        if self.pre_tanh_penalty is None or self.pre_tanh_penalty < 0:
            self._value_error(f"pre_tanh_penalty must be >= 0, got {self.pre_tanh_penalty!r}")
        self._validate_energy_settings()

    @override(AlgorithmConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from spikerl_ray.td3.rl_module import TD3TorchRLModule

        return RLModuleSpec(module_class=TD3TorchRLModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self) -> type:
        from spikerl_ray.td3.learner import TD3TorchLearner

        return TD3TorchLearner

    @property
    @override(AlgorithmConfig)
    def _model_config_auto_includes(self) -> dict[str, Any]:
        return super()._model_config_auto_includes | self._actor_model_config() | {
            "compile_networks": bool(self.compile_networks),
            "exploration_noise": self.exploration_noise}


class TD3(ReplayAlgorithm):
    """TD3 with a learner-side replay memory; see :class:`TD3Config`."""

    LEARNERS_STATE = "td3_learners"  # the learners' random state (and replay), in checkpoints

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> TD3Config:
        return TD3Config()


register_trainable("TD3", TD3)
