"""The SAC update (Haarnoja et al., 2018, with the learned temperature of the 2018 follow-up),
computed as RLlib 2.60's SAC learner computes it for continuous actions (the loss it
replaces, docs/algorithms.md):

- critic: Huber loss (delta 1) of each twin Q against the entropy-regularized target
  ``r + gamma (1 - terminated) (min Q_target(s', a') - alpha log pi(a'|s'))``, ``a' ~ pi(s')``;
- actor: ``alpha log pi(a|s) - min Q(s, a)`` with ``a`` reparameterized, the critics' weights
  held fixed;
- temperature: ``-log_alpha (log pi(a|s) + target_entropy)``, target entropy ``-act_dim``;
- all three from the same weights, then one Adam step each and Polyak averaging of the
  critics' targets (tau 0.005) every update.

The policy gives ``[mean, log_std]`` (:class:`policies.gaussian.GaussianActor`); actions are
``tanh(mean + std * noise)`` with the change-of-variables correction of the log-probability.
The noise is drawn outside the losses and passed in, so that a compiled loss draws what an
eager one does. Under ``bf16`` the networks run in bfloat16 autocast while weights, optimizer
state and the loss reductions stay fp32, as in :mod:`spikerl_ray.core.td3`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from spikerl_ray.core.replay import Batch
from spikerl_ray.core.td3 import SkippedUpdates, autocast, guarded_step, polyak_update

# RLlib's TorchSquashedGaussian clamps the log-std it is given to [-5, 2]
# (ray.rllib.utils.numpy.MIN_LOG_NN_OUTPUT, MAX_LOG_NN_OUTPUT); acting and learning here do too.
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
# Adam's epsilon in RLlib's SAC learner (all three optimizers).
ADAM_EPS = 1e-7


@dataclass(frozen=True)
class SACHyperparams:
    """SAC constants; defaults are RLlib's SAC's (and the SAC paper's)."""

    gamma: float = 0.99
    tau: float = 0.005
    target_entropy: float = -1.0  # RLlib's "auto": -act_dim


class Temperature(nn.Module):
    """The learned entropy temperature: ``forward()`` returns ``log_alpha`` (shape ``(1,)``).
    A module, so that data-parallel learners average its gradient with DDP like the others."""

    def __init__(self, initial_alpha: float = 1.0) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.full((1,), math.log(initial_alpha)))

    def forward(self) -> torch.Tensor:
        return self.log_alpha


def squashed_sample(inputs: torch.Tensor, noise: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``tanh(mean + std * noise)`` for ``inputs = [mean, log_std]`` (log-std clamped to
    [:data:`LOG_STD_MIN`, :data:`LOG_STD_MAX`]) and its log-probability, summed over action
    dimensions, in fp32: the Gaussian's minus ``log(1 - tanh(u)^2)`` written stably as
    ``2 (log 2 - u - softplus(-2u))`` (RLlib's ``TorchSquashedGaussian.rsample_and_logp``)."""
    mean, log_std = inputs.float().chunk(2, dim=-1)
    log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
    u = mean + log_std.exp() * noise
    gaussian = -0.5 * noise.square() - log_std - 0.5 * math.log(2.0 * math.pi)
    jacobian = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
    return torch.tanh(u), (gaussian - jacobian).sum(-1)


def critic_loss(policy: nn.Module, critic: nn.Module, critic_target: nn.Module,
                normalize: Callable[[torch.Tensor], torch.Tensor], batch: Batch,
                log_alpha: torch.Tensor, next_noise: torch.Tensor, gamma: float
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Huber loss of both Q heads against the entropy-regularized clipped double-Q target."""
    obs, next_obs = normalize(batch.obs), normalize(batch.next_obs)
    with torch.no_grad():
        next_action, next_logp = squashed_sample(policy(next_obs), next_noise)
        q1_next, q2_next = critic_target(next_obs, next_action)
        next_v = torch.min(q1_next, q2_next).float() - log_alpha.exp() * next_logp
        target = batch.rewards + gamma * (1.0 - batch.terminateds) * next_v
    q1, q2 = critic(obs, batch.actions)
    loss_q1 = F.huber_loss(q1.float(), target, delta=1.0)
    loss_q2 = F.huber_loss(q2.float(), target, delta=1.0)
    return loss_q1 + loss_q2, {"qf_loss": loss_q1.detach(), "qf_twin_loss": loss_q2.detach(),
                               "qf_mean": q1.detach().float().mean(),
                               "target_mean": target.mean()}


def actor_and_temperature_loss(policy: nn.Module, critic: nn.Module, temperature: nn.Module,
                               normalize: Callable[[torch.Tensor], torch.Tensor],
                               batch: Batch, noise: torch.Tensor, target_entropy: float
                               ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The policy loss ``mean(alpha log pi - min Q)`` on reparameterized actions (``critic``
    must not require gradients) and the temperature loss."""
    obs = normalize(batch.obs)
    action, logp = squashed_sample(policy(obs), noise)
    q1, q2 = critic(obs, action)
    log_alpha = temperature()
    alpha = log_alpha.detach().exp()
    loss_pi = (alpha * logp - torch.min(q1, q2).float()).mean()
    loss_alpha = -(log_alpha * (logp.detach() + target_entropy)).mean()
    return loss_pi, loss_alpha, {"logp_mean": logp.detach().mean(),
                                 "alpha_value": alpha.squeeze(0)}


class SACUpdate:
    """Runs SAC gradient steps on given networks and optimizers.

    Args:
        policy, critic, temperature: the trained networks (DDP-wrapped for data-parallel
            learners): the Gaussian policy, the twin critic and the :class:`Temperature`.
        critic_target: the critics' target copy.
        normalize: observation normalization applied to sampled raw observations.
        policy_optim, critic_optim, temperature_optim: their optimizers.
        policy_for_target, critic_for_actor_loss, temperature_for_target: the unwrapped
            policy, critic and temperature, used where no gradient of their own weights is
            taken (the target's next actions and alpha; the critic in the policy loss, whose
            own gradients DDP would wait for); default ``policy``, ``critic``,
            ``temperature``.
        compile, compile_backend: compile each loss into one graph with ``torch.compile``
            (as :class:`~spikerl_ray.core.td3.TD3Update`).
    """

    def __init__(self, policy: nn.Module, critic: nn.Module, temperature: nn.Module,
                 critic_target: nn.Module, normalize: Callable[[torch.Tensor], torch.Tensor],
                 policy_optim: torch.optim.Optimizer, critic_optim: torch.optim.Optimizer,
                 temperature_optim: torch.optim.Optimizer, hp: SACHyperparams,
                 precision: str = "fp32", policy_for_target: nn.Module | None = None,
                 critic_for_actor_loss: nn.Module | None = None,
                 temperature_for_target: nn.Module | None = None, compile: bool = False,
                 compile_backend: str = "inductor") -> None:
        self.policy, self.critic, self.temperature = policy, critic, temperature
        self.policy_for_target = policy_for_target or policy
        self.critic_for_actor_loss = critic_for_actor_loss or critic
        self.temperature_for_target = temperature_for_target or temperature
        self.critic_target, self.normalize = critic_target, normalize
        self.optims = (critic_optim, policy_optim, temperature_optim)
        self.hp, self.precision = hp, precision
        self.num_updates = 0
        device = next(iter(critic.parameters())).device
        self._found = [torch.zeros((), device=device) for _ in self.optims]
        self._nonfinite = SkippedUpdates(device)
        self._critic_loss, self._actor_loss = critic_loss, actor_and_temperature_loss
        if compile:
            self._critic_loss = torch.compile(critic_loss, dynamic=False,
                                              backend=compile_backend)
            self._actor_loss = torch.compile(actor_and_temperature_loss, dynamic=False,
                                             backend=compile_backend)

    def losses(self, batch: Batch, noise: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The critic, policy and temperature losses of one update from the current weights;
        ``noise[0]`` reparameterizes the actions at ``obs``, ``noise[1]`` those at
        ``next_obs``."""
        with autocast(self.precision, batch.obs.device):
            loss_q, stats = self._critic_loss(
                self.policy_for_target, self.critic, self.critic_target, self.normalize,
                batch, self.temperature_for_target().detach(), noise[1], self.hp.gamma)
            frozen = [p for p in self.critic_for_actor_loss.parameters() if p.requires_grad]
            for p in frozen:
                p.requires_grad_(False)
            try:
                loss_pi, loss_alpha, more = self._actor_loss(
                    self.policy, self.critic_for_actor_loss, self.temperature,
                    self.normalize, batch, noise[0], self.hp.target_entropy)
            finally:
                for p in frozen:
                    p.requires_grad_(True)
        return loss_q, loss_pi, loss_alpha, stats | more

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One SAC update: the three losses, one backward pass, the critic, policy and
        temperature steps, the targets. A step whose gradients are not finite is skipped
        (:func:`~spikerl_ray.core.td3.guarded_step`; a skipped critic step skips the others
        and the target update) and counted."""
        noise = torch.randn((2, *batch.actions.shape), device=batch.obs.device)
        loss_q, loss_pi, loss_alpha, stats = self.losses(batch, noise)
        for optim in self.optims:
            optim.zero_grad(set_to_none=True)
        (loss_q + loss_pi + loss_alpha).backward()
        skipped = None
        for optim, found in zip(self.optims, self._found):
            guarded_step(optim, found, also_skip=skipped)
            skipped = found
        polyak_update(self.critic, self.critic_target, self.hp.tau * (1.0 - skipped))
        self.num_updates += 1
        self._nonfinite.add(skipped)
        return stats | {"policy_loss": loss_pi.detach(), "alpha_loss": loss_alpha.detach()}

    def read_nonfinite(self) -> tuple[int, int]:
        """Updates skipped for non-finite gradients since the last call, and the longest run
        of them (:meth:`~spikerl_ray.core.td3.SkippedUpdates.read`)."""
        return self._nonfinite.read()
