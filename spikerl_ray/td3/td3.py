"""TD3 (Fujimoto et al., 2018) on RLlib's new API stack, for spiking and ANN actors.

Shaped like RLlib's own algorithms: a config built with chained methods, an Algorithm whose
``training_step`` follows the data flow of docs/architecture.md (fragments from vectorized env runners, replay on the
learner, many gradient steps per learner call, weights out once per step), a TorchLearner and
an RLModule. Defaults are PopSAN's TD3 schedule (docs/methods.md).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch.distributed
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
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
from ray.util import log_once

from spikerl_ray.common.actor_config import ActorSettings
from spikerl_ray.common.algorithm import EnergySettings, MeteredAlgorithm
from spikerl_ray.common.fragments import (
    Fragment,
    gather,
    route_fragments,
    sample_fragments,
    sampler,
)
from spikerl_ray.core.distributed import DATA_PARALLEL_REGIMES, DISTRIBUTED_BACKENDS
from spikerl_ray.core.platform import PRECISION_CHOICES, PRECISIONS, compile_unavailable
from spikerl_ray.errors import NonFiniteError

NUM_UPDATES_LIFETIME = "num_gradient_updates_lifetime"
TD3_LEARNERS_STATE = "td3_learners"  # the learners' random state (and replay), in checkpoints
logger = logging.getLogger(__name__)
SAMPLE_TAG = "td3_sample"  # tags the overlapped sampling requests among a runner's calls


class TD3Config(ActorSettings, EnergySettings, AlgorithmConfig):
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
        # The fastest configuration whose learning is shown to match plain fp32
        # (docs/performance.md): compiled networks (the torch backend), in fp32; bf16 autocast
        # is opt-in (precision "bf16", or "auto": where the device computes it natively).
        # Without a working torch.compile, `validate` falls back to the eager fused backend.
        self.compile_networks = True
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
        self.data_parallel = "same_steps"  # DATA_PARALLEL_REGIMES
        self.replay_capacity = 1_000_000
        self.save_replay = False  # checkpoints hold the replay memory (else refilled on restore)
        # Updates skipped in a row for non-finite gradients before the run stops.
        self.max_nonfinite_updates = 1000
        self.train_batch_size_per_learner = 100
        self.precision = "fp32"
        self.allreduce_dtype = "fp32"
        # "auto": the process group Ray Train starts (NCCL with GPUs, Gloo without); another
        # backend: a process group of its own over the same learners (TD3TorchLearner.build).
        self.torch_distributed_backend = "auto"
        # Sampling: fragments of 50 steps per env (PopSAN's update_every), ~1000 env steps per
        # `train()` call.
        self.rollout_fragment_length = 50
        self.min_sample_timesteps_per_iteration = 1000
        self.min_time_s_per_iteration = None
        self.async_sampling = False
        # Fault tolerance (RLlib's, set with `fault_tolerance()`): Ray restarts a remote env
        # runner whose process died; RLlib probes it before the next training step and hands
        # it the current weights (observation statistics included). The dead runner's fragment
        # is simply missing from that step (docs/reliability.md).
        self.restart_failed_env_runners = True
        # Energy (spikerl_ray.energy): a monitor on every node the run uses.
        self._init_energy_settings()
        self.normalize_actions = True
        self.clip_actions = False
        from spikerl_ray.common.env_runner import TransitionEnvRunner

        self.env_runner_cls = TransitionEnvRunner

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
        if self.precision not in PRECISION_CHOICES:
            self._value_error(f"precision must be one of {PRECISION_CHOICES}, got "
                              f"{self.precision!r}")
        if self.compile_networks:
            self._fall_back_if_compile_unavailable()
        for name in ("actor_lr", "critic_lr", "tau", "updates_per_step", "replay_capacity",
                     "policy_delay", "train_batch_size_per_learner", "max_nonfinite_updates"):
            if not getattr(self, name) or getattr(self, name) <= 0:
                self._value_error(f"{name} must be positive, got {getattr(self, name)!r}")
        backend = self.torch_distributed_backend
        if backend not in DISTRIBUTED_BACKENDS:
            self._value_error(f"torch_distributed_backend must be one of "
                              f"{DISTRIBUTED_BACKENDS}, got {backend!r}")
        if backend == "mpi" and not torch.distributed.is_mpi_available():
            self._value_error("the MPI backend is not available in this PyTorch build "
                              "(torch.distributed.is_mpi_available() is False); install a "
                              "PyTorch built with MPI, or use gloo (CPUs) or nccl (GPUs)")
        if backend == "nccl" and not self.num_gpus_per_learner:
            self._value_error("the NCCL backend needs GPU learners; set "
                              "num_gpus_per_learner (--gpus-per-learner) or use gloo")
        if self.async_sampling and self.num_env_runners < 1 and not self.in_evaluation:
            self._value_error("async_sampling overlaps remote env runners with learning; "
                              "it needs num_env_runners >= 1 (--env-runners)")
        if self.pre_tanh_penalty is None or self.pre_tanh_penalty < 0:
            self._value_error(f"pre_tanh_penalty must be >= 0, got {self.pre_tanh_penalty!r}")
        self._validate_energy_settings()
        if self.data_parallel not in DATA_PARALLEL_REGIMES:
            self._value_error(f"data_parallel must be one of {DATA_PARALLEL_REGIMES}, got "
                              f"{self.data_parallel!r}")
        if self.allreduce_dtype not in PRECISIONS:
            self._value_error(f"allreduce_dtype must be one of {PRECISIONS}, got "
                              f"{self.allreduce_dtype!r}")

    def _fall_back_if_compile_unavailable(self) -> None:
        """Turns compilation off, with one warning, where torch.compile cannot work for the
        env runners (CPU) or the learners (CUDA with GPUs)."""
        devices = ["cpu"] + (["cuda"] if self.num_gpus_per_learner else [])
        reason = next(filter(None, map(compile_unavailable, devices)), None)
        if reason is None:
            return
        if log_once("spikerl_compile_unavailable"):
            logger.warning("torch.compile cannot run here (%s); the networks run eagerly "
                           "(pass --no-compile to silence this)", reason)
        self.compile_networks = False

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


def _add_and_train_own_route(learner: Any, routes: list, num_updates: int) -> dict:
    return learner.add_and_train(gather(*routes[learner.shard]), num_updates)


class TD3(MeteredAlgorithm):
    """TD3 with a learner-side replay memory; see :class:`TD3Config`."""

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> TD3Config:
        return TD3Config()

    @override(Algorithm)
    def step(self) -> dict:
        """One metered iteration, then the actor's statistics (once per iteration)."""
        results = super().step()
        # Learners hold identical weights (DDP), so the first one's statistics are the actor's.
        health = [r.get() for r in self.learner_group.foreach_learner(
            lambda learner: learner.actor_health())]
        results.setdefault(LEARNER_RESULTS, {}).setdefault(DEFAULT_MODULE_ID, {}).update(
            health[0])
        return results

    @override(Algorithm)
    def get_state(self, components: Any = None, *, not_components: Any = None,
                  **kwargs: Any) -> dict:
        """RLlib's state, plus every learner's :meth:`~TD3TorchLearner.td3_state`."""
        state = super().get_state(components, not_components=not_components, **kwargs)
        if self._check_component(TD3_LEARNERS_STATE, components, not_components):
            state[TD3_LEARNERS_STATE] = [r.get() for r in self.learner_group.foreach_learner(
                lambda learner: learner.td3_state())]
        return state

    @override(Algorithm)
    def set_state(self, state: dict) -> None:
        """RLlib's restore, then each learner's own random state (and replay shard), and fresh
        random streams for the env runners (:meth:`~TransitionEnvRunner.reseed`)."""
        super().set_state(state)
        learners = state.get(TD3_LEARNERS_STATE)
        if learners is None:
            return
        if len(learners) != max(self.config.num_learners, 1):
            raise ValueError(f"the checkpoint holds {len(learners)} learner states; this run "
                             f"has {max(self.config.num_learners, 1)} learners")
        for result in self.learner_group.foreach_learner(
                lambda learner, states: learner.set_td3_state(states[learner.shard]),
                states=learners):
            result.get()  # raises a learner's error here
        generation = int(self.metrics.peek((ENV_RUNNER_RESULTS,
                                            NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0))
        self.env_runner_group.foreach_env_runner(lambda runner: runner.reseed(generation))

    def _sample_overlapped(self, lifetime: int) -> list[Fragment]:
        """Collects the fragments requested in the last iteration (requesting them now if
        none are in flight) and requests the next ones, which the runners sample while the
        learners train. Weights synced afterwards queue behind that request on each runner.
        A runner that failed drops its request; once restored it gets the next one."""
        cfg, group = self.config, self.env_runner_group
        if group.num_in_flight_async_reqs(tag=SAMPLE_TAG) == 0:
            group.foreach_env_runner_async(
                sampler(lifetime < cfg.num_steps_random_warmup, by_reference=True),
                tag=SAMPLE_TAG)
        ready = group.fetch_ready_async_reqs(tags=SAMPLE_TAG, timeout_seconds=None)
        results = [r for _, r in sorted(ready, key=lambda r: r[0])]
        sampled = lifetime + sum(rows for _, rows, _ in results)
        group.foreach_env_runner_async(
            sampler(sampled < cfg.num_steps_random_warmup, by_reference=True),
            tag=SAMPLE_TAG)
        return results

    @override(Algorithm)
    def training_step(self) -> None:
        cfg = self.config
        lifetime = self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME),
                                     default=0)
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            results = (self._sample_overlapped(lifetime) if cfg.async_sampling else
                       sample_fragments(self, lifetime < cfg.num_steps_random_warmup,
                                        by_reference=True))
        self.metrics.aggregate([m for _, _, m in results], key=ENV_RUNNER_RESULTS)
        num_shards = max(cfg.num_learners, 1)
        routes = route_fragments(results, num_shards)
        new_steps = sum(rows for _, rows, _ in results)
        learning = lifetime + new_steps >= cfg.num_steps_sampled_before_learning_starts
        # DDP runs the L learners in lockstep: every optimizer step averages their L batches.
        # "same_samples" (the SpikeRL paper's regime) divides the steps among them.
        per_step = cfg.updates_per_step / (num_shards if cfg.data_parallel == "same_samples"
                                           else 1)
        num_updates = int(round(new_steps * per_step)) if learning else 0

        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            # Each learner fetches its own transitions from the object store (a local learner
            # is the driver's own).
            results = self.learner_group.foreach_learner(
                _add_and_train_own_route, routes=routes, num_updates=num_updates)
        stats = [r.get() for r in results]
        # Learners step in lockstep: the update counts are any one learner's (DDP averages
        # the gradients, so all skip the same updates); dropped transitions add up; losses
        # average.
        first = stats[0]
        self.metrics.log_value((LEARNER_RESULTS, DEFAULT_MODULE_ID, NUM_UPDATES_LIFETIME),
                               first["num_updates"], reduce="lifetime_sum")
        self.metrics.log_value((LEARNER_RESULTS, DEFAULT_MODULE_ID, "nonfinite_transitions"),
                               sum(s["nonfinite_transitions"] for s in stats), reduce="sum")
        for key in first.keys() - {"num_updates", "nonfinite_transitions"}:
            self.metrics.log_value((LEARNER_RESULTS, DEFAULT_MODULE_ID, key),
                                   float(np.mean([s[key] for s in stats])), window=1)
        if first["nonfinite_streak"] >= cfg.max_nonfinite_updates:
            raise NonFiniteError(
                f"{first['nonfinite_streak']} gradient updates in a row had NaN or Inf "
                f"gradients and were skipped (max_nonfinite_updates={cfg.max_nonfinite_updates})"
                "; the weights hold their last finite values")

        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(from_worker_or_learner_group=self.learner_group,
                                               inference_only=True)


register_trainable("TD3", TD3)
