"""The TD3 update (Fujimoto, van Hoof, Meger, 2018), written to read like the paper.

Target policy smoothing, clipped double Q, delayed actor updates and Polyak averaging, each in
a few lines. Works on any actor from :mod:`policies` (spiking or not). Under ``bf16`` the
forward passes and losses run in bfloat16 autocast while weights and optimizer state stay fp32;
losses are reduced in fp32 and no loss scaling is needed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from spikerl_ray.core.platform import PRECISIONS
from spikerl_ray.core.replay import Batch


@dataclass(frozen=True)
class TD3Hyperparams:
    """TD3 constants; defaults are the TD3 paper's and PopSAN's (docs/methods.md)."""

    gamma: float = 0.99
    tau: float = 0.005  # Polyak 0.995
    policy_noise: float = 0.2  # target smoothing noise, in units of the action limit
    noise_clip: float = 0.5
    policy_delay: int = 2
    # Weight of the mean squared pre-tanh output added to the actor loss (0: plain TD3). It
    # keeps a spiking actor off the tanh's saturated edge (docs/learning_quality.md).
    pre_tanh_penalty: float = 0.0


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast for ``"bf16"``; a no-op for ``"fp32"``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def critic_loss(actor_target: nn.Module, critic: nn.Module, critic_target: nn.Module,
                normalize: Callable[[torch.Tensor], torch.Tensor], batch: Batch,
                hp: TD3Hyperparams) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped double-Q TD loss with target policy smoothing."""
    obs, next_obs = normalize(batch.obs), normalize(batch.next_obs)
    with torch.no_grad():
        noise = (torch.randn_like(batch.actions) * hp.policy_noise).clamp(
            -hp.noise_clip, hp.noise_clip)
        next_action = (actor_target(next_obs) + noise).clamp(-1.0, 1.0)
        q1_next, q2_next = critic_target(next_obs, next_action)
        target = batch.rewards + hp.gamma * (1.0 - batch.terminateds) * torch.min(
            q1_next, q2_next).float()
    q1, q2 = critic(obs, batch.actions)
    loss = F.mse_loss(q1.float(), target) + F.mse_loss(q2.float(), target)
    return loss, {"q1_mean": q1.detach().float().mean(), "target_mean": target.mean()}


def actor_loss(actor: nn.Module, critic: nn.Module,
               normalize: Callable[[torch.Tensor], torch.Tensor], batch: Batch,
               pre_tanh_penalty: float = 0.0) -> torch.Tensor:
    """Deterministic policy gradient: maximize Q1(s, pi(s)); plus ``pre_tanh_penalty`` times
    the mean squared pre-tanh output ``u`` of ``pi(s) = tanh(u)``."""
    obs = normalize(batch.obs)
    if not pre_tanh_penalty:  # any actor: forward(obs) alone is the minimal contract
        q1, _ = critic(obs, actor(obs))
        return -q1.float().mean()
    pre = actor(obs, squash=False)
    q1, _ = critic(obs, torch.tanh(pre))
    return -q1.float().mean() + pre_tanh_penalty * pre.float().square().mean()


def adam(params: Iterable[torch.Tensor], lr: float, eps: float = 1e-8) -> torch.optim.Adam:
    """TD3's Adam (PopSAN: Adam for actor and critic), as PyTorch's fused implementation:
    one kernel per step over all parameters (CPU and CUDA), the same update as the default.
    SAC passes RLlib's ``eps`` (:data:`spikerl_ray.core.sac.ADAM_EPS`)."""
    return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)


@torch.no_grad()
def guarded_step(optimizer: torch.optim.Optimizer, found_inf: torch.Tensor,
                 also_skip: torch.Tensor | None = None) -> None:
    """Applies ``optimizer.step()`` unless a gradient holds a NaN or an Inf (or ``also_skip``
    is 1.0); then nothing changes (weights, moments, step count). Sets ``found_inf`` to 1.0
    when it skips.

    A fused optimizer (:func:`adam`) skips on the device, as under AMP's GradScaler, with no
    host synchronization; any other optimizer is checked on the host."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"]
             if p.grad is not None]
    found_inf.zero_()
    torch._amp_foreach_non_finite_check_and_unscale_(
        grads, found_inf, torch.ones((), device=found_inf.device))
    if also_skip is not None:
        torch.maximum(found_inf, also_skip, out=found_inf)
    if optimizer.defaults.get("fused"):
        optimizer.found_inf = found_inf  # read by the fused kernel
        optimizer.step()
    elif not found_inf.item():
        optimizer.step()


@torch.no_grad()
def polyak_update(source: nn.Module, target: nn.Module, tau: float | torch.Tensor) -> None:
    """``target <- (1 - tau) * target + tau * source`` for every parameter (``tau`` a number
    or a 0-d tensor on the parameters' device).

    A tensor ``tau`` goes in as one weight tensor per parameter (expanded views):
    ``_foreach_lerp_`` with a 0-d tensor as its scalar weight would read it back with
    ``.item()``, a host sync per update on a GPU that also makes the update impossible to
    capture as a CUDA graph. The result is bit-identical to the scalar weight's."""
    tgt, src = list(target.parameters()), list(source.parameters())
    if torch.is_tensor(tau):
        tau = [tau.expand_as(t) for t in tgt]
    torch._foreach_lerp_(tgt, src, tau)


class SkippedUpdates:
    """Counts, on the device, the updates skipped for non-finite gradients: in all, the
    current run of skipped updates, and the longest run since :meth:`read`."""

    def __init__(self, device: torch.device) -> None:
        self._skipped = torch.zeros((), device=device)
        self._streak = torch.zeros((), device=device)
        self._longest = torch.zeros((), device=device)

    def add(self, skipped: torch.Tensor) -> None:
        """Counts one update; ``skipped``: 1.0 if it was skipped, else 0.0 (no host sync)."""
        self._skipped += skipped
        self._streak.add_(skipped).mul_(skipped)  # +1 if skipped, else back to 0
        torch.maximum(self._longest, self._streak, out=self._longest)

    def read(self) -> tuple[int, int]:
        """Updates skipped since the last call, and the longest run of consecutive skipped
        updates among them (a run that began before counts whole); one host sync."""
        skipped, longest = int(self._skipped.item()), int(self._longest.item())
        self._skipped.zero_()
        self._longest.zero_()
        return skipped, longest


class TD3Update:
    """Runs TD3 gradient steps on given networks and optimizers.

    Args:
        actor, critic: the trained networks; DDP-wrapped for data-parallel learners, so that
            every forward whose gradients are applied runs through DDP's allreduce hooks.
        actor_target, critic_target: their target copies.
        normalize: observation normalization applied to sampled raw observations.
        actor_optim, critic_optim: optimizers of ``actor`` and ``critic``.
        critic_for_actor_loss: the critic as seen by the actor loss (default ``critic``).
            Under DDP this is the unwrapped critic: the actor loss only needs the gradient
            through it, its own parameter gradients are discarded, and a DDP forward whose
            twin head gets no gradient would stall DDP's reducer.
        compile: compile each loss (networks, normalization, target and loss arithmetic) into
            one graph with ``torch.compile``; its backward is compiled with it. The first
            update compiles (seconds); it computes what the eager update computes.
        compile_backend: the ``torch.compile`` backend: ``"inductor"`` (generated kernels), or
            ``"eager"`` to trace the same graphs without generating code (quick checks).
    """

    def __init__(self, actor: nn.Module, critic: nn.Module, actor_target: nn.Module,
                 critic_target: nn.Module, normalize: Callable[[torch.Tensor], torch.Tensor],
                 actor_optim: torch.optim.Optimizer, critic_optim: torch.optim.Optimizer,
                 hp: TD3Hyperparams, precision: str = "fp32",
                 critic_for_actor_loss: nn.Module | None = None, compile: bool = False,
                 compile_backend: str = "inductor") -> None:
        self.actor, self.critic = actor, critic
        self.critic_for_actor_loss = critic_for_actor_loss or critic
        self.actor_target, self.critic_target = actor_target, critic_target
        self.normalize = normalize
        self.actor_optim, self.critic_optim = actor_optim, critic_optim
        self.hp, self.precision = hp, precision
        self.num_updates = 0
        # Non-finite guard, on the device.
        device = next(iter(actor.parameters())).device
        self._found = {"critic": torch.zeros((), device=device),
                       "actor": torch.zeros((), device=device)}
        self._nonfinite = SkippedUpdates(device)
        self._critic_loss, self._actor_loss = critic_loss, actor_loss
        if compile:
            self._critic_loss = torch.compile(critic_loss, dynamic=False,
                                              backend=compile_backend)
            self._actor_loss = torch.compile(actor_loss, dynamic=False, backend=compile_backend)

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One TD3 update: critic every call; actor and targets every ``policy_delay`` calls.
        A step whose gradients are not finite is skipped (:func:`guarded_step`) and counted."""
        device = batch.obs.device
        with autocast(self.precision, device):
            loss_q, stats = self._critic_loss(self.actor_target, self.critic,
                                              self.critic_target, self.normalize, batch, self.hp)
        self.critic_optim.zero_grad(set_to_none=True)
        loss_q.backward()
        guarded_step(self.critic_optim, self._found["critic"])
        stats["critic_loss"] = loss_q.detach()
        self.num_updates += 1
        skipped = self._found["critic"]
        if self.num_updates % self.hp.policy_delay == 0:
            with autocast(self.precision, device):
                loss_pi = self._actor_loss(self.actor, self.critic_for_actor_loss,
                                           self.normalize, batch, self.hp.pre_tanh_penalty)
            self.actor_optim.zero_grad(set_to_none=True)
            loss_pi.backward()
            # A step whose critic update was skipped skips its actor update too.
            guarded_step(self.actor_optim, self._found["actor"], also_skip=skipped)
            skipped = self._found["actor"]
            tau = self.hp.tau * (1.0 - skipped)  # a skipped update moves no target either
            polyak_update(self.actor, self.actor_target, tau)
            polyak_update(self.critic, self.critic_target, tau)
            stats["actor_loss"] = loss_pi.detach()
        self._nonfinite.add(skipped)
        return stats

    def read_nonfinite(self) -> tuple[int, int]:
        """Updates skipped for non-finite gradients since the last call, and the longest run
        of consecutive skipped updates among the steps since then (a run that began before
        counts whole); one host sync."""
        return self._nonfinite.read()
