"""The TD3 learner: its replay shard lives on the learner's device, and one call runs many
gradient steps (docs/architecture.md, data flow). The update math is :mod:`spikerl_ray.core.td3`.

With more than one learner, the actor and the critic are each wrapped in
``DistributedDataParallel`` and every gradient that is applied is computed through the DDP
wrapper, so gradients really are averaged across learners (SpikeRL's public code calls
``ddp.module`` and never averages).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.distributed as dist
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override
from torch.nn.parallel import DistributedDataParallel

from policies.diagnostics import actor_statistics
from spikerl_ray.core.distributed import bf16_allreduce_hook
from spikerl_ray.core.platform import resolve_precision
from spikerl_ray.core.replay import TransitionReplay, finite_rows
from spikerl_ray.core.td3 import TD3Hyperparams, TD3Update, adam
from spikerl_ray.resources import set_torch_threads

# Observations the actor's health statistics are measured on, each iteration (the newest ones).
HEALTH_PROBE_OBS = 500


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
        if cfg.num_learners > 0:  # a remote learner: its own process (a local one: the driver's)
            set_torch_threads(cfg, "learner")
        seed = None if cfg.seed is None else int(cfg.seed) + 7919 * self.shard
        self.replay = TransitionReplay(
            cfg.replay_capacity, int(module.observation_space.shape[0]),
            int(module.action_space.shape[0]), device=self._device, seed=seed)
        actor, critic = module.actor, module.critic
        # The learners' process group: the one Ray Train started (its backend chosen by Ray:
        # NCCL with GPUs, Gloo without), or one over the same ranks with the backend asked for.
        self.process_group = None
        if self.data_parallel and cfg.torch_distributed_backend != "auto":
            self.process_group = dist.new_group(backend=cfg.torch_distributed_backend)
        if self.data_parallel:
            device_ids = [self._device] if self._device.type == "cuda" else None
            # DDP broadcasts rank 0's weights; the targets then start as copies (TD3 init).
            actor, critic = (DistributedDataParallel(net, device_ids=device_ids,
                                                     process_group=self.process_group)
                             for net in (module.actor, module.critic))
            module.target_actor.load_state_dict(module.actor.state_dict())
            module.target_critic.load_state_dict(module.critic.state_dict())
            if cfg.allreduce_dtype == "bf16":
                for ddp in (actor, critic):
                    ddp.register_comm_hook(self.process_group, bf16_allreduce_hook)
        self.ddp_modules = (actor, critic) if self.data_parallel else ()
        # Transitions the replay must hold again before updates resume (set on a restore
        # without the saved replay memory: TD3's warm-up before learning, per shard).
        self._refill = 0
        self._td3 = TD3Update(
            actor=actor, critic=critic, actor_target=module.target_actor,
            critic_target=module.target_critic, normalize=module.normalize,
            actor_optim=self.get_optimizer(DEFAULT_MODULE_ID, "actor"),
            critic_optim=self.get_optimizer(DEFAULT_MODULE_ID, "critic"),
            hp=TD3Hyperparams(gamma=cfg.gamma, tau=cfg.tau, policy_noise=cfg.target_noise,
                              noise_clip=cfg.target_noise_clip, policy_delay=cfg.policy_delay,
                              pre_tanh_penalty=cfg.pre_tanh_penalty),
            precision=resolve_precision(cfg.precision, self._device.type),
            critic_for_actor_loss=module.critic,
            compile=cfg.compile_networks)

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
        # RLlib would wrap the whole RLModule; TD3 calls the actor and critic directly, which
        # would bypass that wrapper's hooks, so `build` wraps each of them instead.
        return

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        module = self.module[module_id].unwrapped()
        for name, net, lr in (("actor", module.actor, config.actor_lr),
                              ("critic", module.critic, config.critic_lr)):
            params = self.get_parameters(net)
            self.register_optimizer(module_id=module_id, optimizer_name=name,
                                    optimizer=adam(params, lr), params=params,
                                    lr_or_lr_schedule=lr)

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict,
                                fwd_out: dict) -> torch.Tensor:
        raise NotImplementedError(
            "TD3 trains through TD3TorchLearner.add_and_train (replay on the learner); "
            "RLlib's generic update(batch) path would merge the critic and delayed actor "
            "losses into one backward pass.")

    def _all_reduce(self, tensor: torch.Tensor, op: Any = dist.ReduceOp.SUM) -> torch.Tensor:
        if self.data_parallel:
            dist.all_reduce(tensor, op=op, group=self.process_group)
        return tensor

    def add_and_train(self, transitions: Mapping[str, np.ndarray] | None,
                      num_updates: int) -> dict[str, float]:
        """Adds new transitions to this learner's replay shard and folds their observations
        into the running statistics (summed over all learners, so every learner normalizes
        alike), then runs ``num_updates`` TD3 gradient steps on batches from the shard.

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
            obs = torch.as_tensor(transitions["obs"], device=self._device)
        else:
            obs = torch.zeros((0, obs_dim), device=self._device)
        moments = self._all_reduce(module.obs_normalizer.moments(obs))
        module.obs_normalizer.update_from_moments(moments)

        batch_size = self.config.train_batch_size_per_learner
        smallest = self._all_reduce(torch.tensor([len(self.replay)], device=self._device),
                                    dist.ReduceOp.MIN)
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        done = 0
        if int(smallest.item()) >= max(batch_size, self._refill):
            for _ in range(num_updates):
                for k, v in self._td3.step(self.replay.sample(batch_size)).items():
                    sums[k] = sums.get(k, 0.0) + v
                    counts[k] = counts.get(k, 0) + 1
                done += 1
        out = {k: float(v) / counts[k] for k, v in sums.items()}
        skipped, streak = self._td3.read_nonfinite()
        out.update(num_updates=done, replay_size=len(self.replay),
                   nonfinite_transitions=dropped, nonfinite_updates=skipped,
                   nonfinite_streak=streak)
        return out

    def td3_state(self) -> dict[str, Any]:
        """What a checkpoint needs beyond RLlib's learner state (weights, optimizers): the
        random state (replay sampling, target noise), the update count (the phase of the
        delayed actor update) and, with ``save_replay``, the replay memory."""
        state = {"replay_generator": self.replay.generator.get_state(),
                 "torch_rng": torch.get_rng_state(), "num_updates": self._td3.num_updates}
        if self._device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self._device)
        if self.config.save_replay:
            state["replay"] = self.replay.state_dict()
        return state

    def set_td3_state(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`td3_state`. Without a saved replay memory, updates wait until the
        replay again holds TD3's warm-up (``num_steps_sampled_before_learning_starts``,
        split over the learners)."""
        self.replay.generator.set_state(state["replay_generator"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self._device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self._device)
        self._td3.num_updates = int(state["num_updates"])
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
