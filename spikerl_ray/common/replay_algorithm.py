"""The off-policy algorithm TD3 and SAC share: its config settings (:class:`ReplaySettings`:
replay on the learners, updates per env step, warm-up, data-parallel learners, precision,
compilation, overlapped sampling) and its training step (:class:`ReplayAlgorithm`: fragments
from vectorized env runners, each learner's share routed to it through the object store,
many gradient steps per learner call, weights out once per step; docs/architecture.md, data
flow). An algorithm names its learner (a :class:`~spikerl_ray.common.replay_learner.
ReplayTorchLearner`) and module in its config.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch.distributed
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.core import DEFAULT_MODULE_ID
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
from ray.util import log_once

from spikerl_ray.common.algorithm import MeteredAlgorithm
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
logger = logging.getLogger(__name__)
SAMPLE_TAG = "replay_sample"  # tags the overlapped sampling requests among a runner's calls

# The settings of ReplaySettings that `training()` takes (documented in its docstring).
REPLAY_SETTINGS = (
    "compile_networks", "precision", "num_steps_random_warmup",
    "num_steps_sampled_before_learning_starts", "updates_per_step", "data_parallel",
    "replay_capacity", "save_replay", "max_nonfinite_updates", "allreduce_dtype",
    "torch_distributed_backend", "async_sampling")


class CompileSettings:
    """Mixin for an :class:`AlgorithmConfig` whose networks ``torch.compile`` may compile
    (``compile_networks``) and whose learner may run in bf16 autocast (``precision``)."""

    def _init_compile_settings(self) -> None:
        # The fastest configuration whose learning is shown to match plain fp32
        # (docs/performance.md): compiled networks (the torch backend), in fp32; bf16 autocast
        # is opt-in (precision "bf16", or "auto": where the device computes it natively).
        # Without a working torch.compile, `validate` falls back to the eager fused backend.
        self.compile_networks = True
        self.precision = "fp32"

    def _validate_compile_settings(self) -> None:
        if self.precision not in PRECISION_CHOICES:
            self._value_error(f"precision must be one of {PRECISION_CHOICES}, got "
                              f"{self.precision!r}")
        if self.compile_networks:
            self._fall_back_if_compile_unavailable()

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


class ReplaySettings(CompileSettings):
    """Mixin for the config of a :class:`ReplayAlgorithm`. ``training()`` takes
    :data:`REPLAY_SETTINGS` (:meth:`_take_replay_settings`):

    - ``compile_networks``: compile with ``torch.compile`` the networks and each loss as one
      graph (learners), and acting (env runners); on by default. The first update and the
      first action compile (seconds). Where torch.compile cannot work here (no C++ compiler,
      no Triton for GPU learners, an unsupported platform), one warning says so and the
      networks run eagerly.
    - ``precision``: ``fp32`` (the default), ``bf16`` (autocast around forward and loss,
      fp32 weights) or ``auto`` (bf16 where the learner's device computes it natively, i.e.
      CUDA compute capability 8.0+ or a CPU with AVX512-BF16/AMX; else fp32).
    - ``num_steps_random_warmup``: env steps acting uniformly at random first;
      ``num_steps_sampled_before_learning_starts``: env steps before any update.
    - ``updates_per_step``: optimizer steps per sampled env step (1.0).
    - ``data_parallel``: how L >= 2 learners share them: ``same_steps`` (``updates_per_step``
      steps per env step, each averaging the L learners' batches, effective batch L x B) or
      ``same_samples`` (the SpikeRL paper's regime: ``updates_per_step / L`` steps per env
      step).
    - ``replay_capacity``: transitions kept in each learner's replay shard (1M).
    - ``save_replay``: checkpoints hold every learner's replay memory; without it a restored
      run refills the replay with ``num_steps_sampled_before_learning_starts`` new
      transitions before updating again.
    - ``max_nonfinite_updates``: a gradient update with a NaN or Inf gradient is skipped and
      counted; after this many in a row, training stops with :class:`NonFiniteError` (1000).
    - ``allreduce_dtype``: ``fp32``, or ``bf16`` to compress the gradient allreduce of
      data-parallel learners with DDP's bf16 communication hook.
    - ``torch_distributed_backend``: ``gloo``, ``nccl`` or ``mpi`` for data-parallel
      learners; ``auto`` (the default) lets Ray Train pick (NCCL with GPUs, Gloo without).
    - ``async_sampling``: remote env runners sample the next fragment while the learners
      train on the last one (needs ``num_env_runners >= 1``); the weights a runner acts with
      are then one training step older.
    """

    def _init_replay_settings(self) -> None:
        self._init_compile_settings()
        self.num_steps_random_warmup = 10_000
        self.num_steps_sampled_before_learning_starts = 1_000
        self.updates_per_step = 1.0
        self.data_parallel = "same_steps"  # DATA_PARALLEL_REGIMES
        self.replay_capacity = 1_000_000
        self.save_replay = False
        self.max_nonfinite_updates = 1000
        self.allreduce_dtype = "fp32"
        # "auto": the process group Ray Train starts (NCCL with GPUs, Gloo without); another
        # backend: a process group of its own over the same learners (ReplayTorchLearner).
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
        self.normalize_actions = True
        self.clip_actions = False
        from spikerl_ray.common.env_runner import TransitionEnvRunner

        self.env_runner_cls = TransitionEnvRunner

    def _take_replay_settings(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Sets the :data:`REPLAY_SETTINGS` found in ``kwargs``; returns the other entries."""
        for name in REPLAY_SETTINGS:
            if name in kwargs:
                setattr(self, name, kwargs.pop(name))
        return kwargs

    def _validate_replay_settings(self, positive: tuple[str, ...]) -> None:
        """Checks the replay settings, and that the settings named in ``positive`` are."""
        self._validate_compile_settings()
        for name in ("updates_per_step", "replay_capacity", "train_batch_size_per_learner",
                     "max_nonfinite_updates", *positive):
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
        if self.data_parallel not in DATA_PARALLEL_REGIMES:
            self._value_error(f"data_parallel must be one of {DATA_PARALLEL_REGIMES}, got "
                              f"{self.data_parallel!r}")
        if self.allreduce_dtype not in PRECISIONS:
            self._value_error(f"allreduce_dtype must be one of {PRECISIONS}, got "
                              f"{self.allreduce_dtype!r}")


def _add_and_train_own_route(learner: Any, routes: list, num_updates: int) -> dict:
    return learner.add_and_train(gather(*routes[learner.shard]), num_updates)


class ReplayAlgorithm(MeteredAlgorithm):
    """An off-policy algorithm with a learner-side replay memory (TD3, SAC); its config has
    :class:`ReplaySettings` and its learner is a :class:`~spikerl_ray.common.replay_learner.
    ReplayTorchLearner`. Checkpoints hold, under :attr:`LEARNERS_STATE`, every learner's
    :meth:`~spikerl_ray.common.replay_learner.ReplayTorchLearner.replay_state`."""

    LEARNERS_STATE = "replay_learners"

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
        """RLlib's state, plus every learner's replay state."""
        state = super().get_state(components, not_components=not_components, **kwargs)
        if self._check_component(self.LEARNERS_STATE, components, not_components):
            state[self.LEARNERS_STATE] = [r.get() for r in self.learner_group.foreach_learner(
                lambda learner: learner.replay_state())]
        return state

    @override(Algorithm)
    def set_state(self, state: dict) -> None:
        """RLlib's restore, then each learner's own random state (and replay shard), and fresh
        random streams for the env runners (:meth:`~TransitionEnvRunner.reseed`)."""
        super().set_state(state)
        learners = state.get(self.LEARNERS_STATE)
        if learners is None:
            return
        if len(learners) != max(self.config.num_learners, 1):
            raise ValueError(f"the checkpoint holds {len(learners)} learner states; this run "
                             f"has {max(self.config.num_learners, 1)} learners")
        for result in self.learner_group.foreach_learner(
                lambda learner, states: learner.set_replay_state(states[learner.shard]),
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
