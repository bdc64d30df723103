"""The learner machinery TD3 and SAC share: a replay shard on the learner's device, fed with
the fragments of its env runners and drawn from for many gradient steps per call
(docs/architecture.md, data flow); the observation statistics summed over learners; DDP
wrapping of the trained networks for data-parallel learners; the checkpointed random state
and replay; the actor's health statistics. The update math is in :mod:`spikerl_ray.core`
(:class:`~spikerl_ray.core.td3.TD3Update`, :class:`~spikerl_ray.core.sac.SACUpdate`).

With more than one learner each trained network is wrapped in ``DistributedDataParallel`` and
every gradient that is applied is computed through the DDP wrapper, so gradients really are
averaged across learners.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

import numpy as np
import torch
import torch.distributed as dist
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from policies.diagnostics import actor_statistics
from spikerl_ray.core.distributed import bf16_allreduce_hook
from spikerl_ray.core.replay import Batch, TransitionReplay, finite_rows
from spikerl_ray.core.td3 import adam
from spikerl_ray.resources import set_torch_threads

# Observations the actor's health statistics are measured on, each iteration (the newest ones).
HEALTH_PROBE_OBS = 500


class UpdateRule(Protocol):
    """What a replay learner runs: :class:`~spikerl_ray.core.td3.TD3Update` or
    :class:`~spikerl_ray.core.sac.SACUpdate`."""

    num_updates: int

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient update on ``batch``; its statistics as tensors."""

    def read_nonfinite(self) -> tuple[int, int]:
        """Updates skipped for non-finite gradients, and the longest run of them."""


class ReplayTorchLearner(TorchLearner):
    """A TorchLearner with a device-side replay shard; a subclass builds its networks' update
    (:attr:`update_rule`, in ``build`` after ``super().build()``, wrapping the networks it
    trains with :meth:`data_parallel_wrap`).

    RLlib's generic ``update(batch)`` path is not used: the algorithm calls
    :meth:`add_and_train`, which keeps the replay next to the networks.
    """

    update_rule: UpdateRule

    @override(TorchLearner)
    def build(self) -> None:
        super().build()
        module = self.module[DEFAULT_MODULE_ID].unwrapped()
        cfg = self.config
        if cfg.num_learners > 0:  # a remote learner: its own process (a local one: the driver's)
            set_torch_threads(cfg, "learner")
        seed = None if cfg.seed is None else int(cfg.seed) + 7919 * self.shard
        self.replay = TransitionReplay(
            cfg.replay_capacity, int(module.observation_space.shape[0]),
            int(module.action_space.shape[0]), device=self.device, seed=seed)
        # The learners' process group: the one Ray Train started (its backend chosen by Ray:
        # NCCL with GPUs, Gloo without), or one over the same ranks with the backend asked for.
        self.process_group = None
        if self.data_parallel and cfg.torch_distributed_backend != "auto":
            self.process_group = dist.new_group(backend=cfg.torch_distributed_backend)
        self.ddp_modules: tuple[nn.Module, ...] = ()
        # Transitions the replay must hold again before updates resume (set on a restore
        # without the saved replay memory: the warm-up before learning, per shard).
        self._refill = 0

    def data_parallel_wrap(self, *nets: nn.Module) -> tuple[nn.Module, ...]:
        """``nets`` each wrapped in DDP (which broadcasts rank 0's weights), with the bf16
        allreduce hook if ``allreduce_dtype`` asks for it; unchanged for one learner. Targets
        must be copied from the wrapped networks afterwards."""
        if not self.data_parallel:
            return nets
        device_ids = [self.device] if self.device.type == "cuda" else None
        wrapped = tuple(DistributedDataParallel(net, device_ids=device_ids,
                                                process_group=self.process_group)
                        for net in nets)
        if self.config.allreduce_dtype == "bf16":
            for ddp in wrapped:
                ddp.register_comm_hook(self.process_group, bf16_allreduce_hook)
        self.ddp_modules += wrapped
        return wrapped

    def register_adams(self, module_id: str, nets: Mapping[str, tuple[nn.Module, float]],
                       eps: float = 1e-8) -> None:
        """One fused Adam (:func:`~spikerl_ray.core.td3.adam`) per named network, with its
        learning rate."""
        for name, (net, lr) in nets.items():
            params = self.get_parameters(net)
            self.register_optimizer(module_id=module_id, optimizer_name=name,
                                    optimizer=adam(params, lr, eps), params=params,
                                    lr_or_lr_schedule=lr)

    @property
    def shard(self) -> int:
        """This learner's replay shard (its rank among the data-parallel learners; 0 alone)."""
        return dist.get_rank() if self.data_parallel else 0

    @property
    def data_parallel(self) -> bool:
        """Whether this learner is one of several training one model with DDP."""
        return self.config.num_learners > 1

    @override(TorchLearner)
    def _make_modules_ddp_if_necessary(self) -> None:
        # RLlib would wrap the whole RLModule; the update calls the networks directly, which
        # would bypass that wrapper's hooks, so `build` wraps each of them instead.
        return

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict,
                                fwd_out: dict) -> torch.Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} trains through add_and_train (replay on the learner); "
            "RLlib's generic update(batch) path would merge its losses into one step.")

    def _all_reduce(self, tensor: torch.Tensor, op: Any = dist.ReduceOp.SUM) -> torch.Tensor:
        if self.data_parallel:
            dist.all_reduce(tensor, op=op, group=self.process_group)
        return tensor

    def add_and_train(self, transitions: Mapping[str, np.ndarray] | None,
                      num_updates: int) -> dict[str, float]:
        """Adds new transitions to this learner's replay shard and folds their observations
        into the running statistics (summed over all learners, so every learner normalizes
        alike), then runs ``num_updates`` gradient steps on batches from the shard.

        Under DDP every learner must be called with the same ``num_updates``; updates start
        once every shard holds a batch.
        """
        module = self.module[DEFAULT_MODULE_ID].unwrapped()
        obs_dim = int(module.observation_space.shape[0])
        dropped = 0
        if transitions is not None and len(transitions["rewards"]):
            transitions, dropped = finite_rows(transitions)
        if transitions is not None and len(transitions["rewards"]):
            self.replay.add(transitions)
            obs = torch.as_tensor(transitions["obs"], device=self.device)
        else:
            obs = torch.zeros((0, obs_dim), device=self.device)
        moments = self._all_reduce(module.obs_normalizer.moments(obs))
        module.obs_normalizer.update_from_moments(moments)

        batch_size = self.config.train_batch_size_per_learner
        smallest = self._all_reduce(torch.tensor([len(self.replay)], device=self.device),
                                    dist.ReduceOp.MIN)
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        done = 0
        if int(smallest.item()) >= max(batch_size, self._refill):
            for _ in range(num_updates):
                for k, v in self.update_rule.step(self.replay.sample(batch_size)).items():
                    sums[k] = sums.get(k, 0.0) + v
                    counts[k] = counts.get(k, 0) + 1
                done += 1
        out = {k: float(v) / counts[k] for k, v in sums.items()}
        skipped, streak = self.update_rule.read_nonfinite()
        out.update(num_updates=done, replay_size=len(self.replay),
                   nonfinite_transitions=dropped, nonfinite_updates=skipped,
                   nonfinite_streak=streak)
        return out

    def replay_state(self) -> dict[str, Any]:
        """What a checkpoint needs beyond RLlib's learner state (weights, optimizers): the
        random state (replay sampling, the update's noise), the update count and, with
        ``save_replay``, the replay memory."""
        state = {"replay_generator": self.replay.generator.get_state(),
                 "torch_rng": torch.get_rng_state(),
                 "num_updates": self.update_rule.num_updates}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.config.save_replay:
            state["replay"] = self.replay.state_dict()
        return state

    def set_replay_state(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`replay_state`. Without a saved replay memory, updates wait until the
        replay again holds the warm-up (``num_steps_sampled_before_learning_starts``, split
        over the learners)."""
        self.replay.generator.set_state(state["replay_generator"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.update_rule.num_updates = int(state["num_updates"])
        if "replay" in state:
            self.replay.load_state_dict(state["replay"])
        else:
            self._refill = (self.config.num_steps_sampled_before_learning_starts
                            // max(self.config.num_learners, 1))

    def actor_health(self) -> dict[str, float]:
        """Firing, saturation and operation statistics of the actor on the newest observations
        (:func:`policies.diagnostics.actor_statistics`; empty before any transition).
        ``forward`` is called directly so that a compiled actor runs eagerly here instead of
        compiling for this batch."""
        if not len(self.replay):
            return {}
        module = self.module[DEFAULT_MODULE_ID].unwrapped()
        obs = module.normalize(self.replay.recent_obs(HEALTH_PROBE_OBS))
        return actor_statistics(module.actor.forward, obs,
                                getattr(module.actor, "timesteps", None), module.actor)
