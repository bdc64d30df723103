"""The Ray-free SAC update (spikerl_ray.core.sac) against a plain eager reference of the loss
RLlib 2.60's SAC learner computes for continuous actions (the one it replaces)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ray.rllib.core.distribution.torch.torch_distribution import TorchSquashedGaussian

from policies import RunningNormalizer, TwinQCritic
from policies.gaussian import build_gaussian_actor
from spikerl_ray.core.replay import TransitionReplay
from spikerl_ray.core.sac import (
    ADAM_EPS,
    SACHyperparams,
    SACUpdate,
    Temperature,
    squashed_sample,
)
from spikerl_ray.core.td3 import adam

OBS_DIM, ACT_DIM = 3, 2


def _networks(policy: str = "spikerl"):
    torch.manual_seed(0)
    pi = build_gaussian_actor(policy, OBS_DIM, ACT_DIM, log_std="network", squash_mean=False)
    critic = TwinQCritic(OBS_DIM, ACT_DIM)
    target = copy.deepcopy(critic).requires_grad_(False)
    norm = RunningNormalizer(OBS_DIM)
    norm.update(torch.randn(200, OBS_DIM) * 3 + 1)
    # Start away from the target, as after some updates (the target lags).
    with torch.no_grad():
        for p in target.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return pi, critic, target, Temperature(0.5), norm


def _update(nets, precision="fp32", compile=False, compile_backend="inductor") -> SACUpdate:
    pi, critic, target, temperature, norm = nets
    return SACUpdate(pi, critic, temperature, target, norm, adam(pi.parameters(), 3e-4, ADAM_EPS),
                     adam(critic.parameters(), 3e-4, ADAM_EPS),
                     adam(temperature.parameters(), 3e-4, ADAM_EPS),
                     SACHyperparams(target_entropy=-float(ACT_DIM)), precision,
                     compile=compile, compile_backend=compile_backend)


def _batch(n: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    replay = TransitionReplay(n, OBS_DIM, ACT_DIM, seed=seed)
    replay.add({"obs": rng.normal(size=(n, OBS_DIM)) * 3,
                "actions": rng.uniform(-1, 1, (n, ACT_DIM)),
                "rewards": rng.normal(size=n) * 2,
                "next_obs": rng.normal(size=(n, OBS_DIM)) * 3,
                "terminateds": (rng.uniform(size=n) < 0.2).astype(np.float32)})
    return replay.sample(n)


def _reference_step(nets, batch, noise, gamma=0.99, tau=0.005, lr=3e-4):
    """One update as RLlib's SAC learner makes it, written out eagerly: its module's
    ``_forward_train_continuous`` (RLlib's TorchSquashedGaussian with the log-std clamped to
    [-5, 2], the critics' weights frozen for ``q_curr``), its learner's
    ``_compute_loss_for_module_continuous`` (Huber losses, alpha detached in the policy loss,
    ``-log_alpha (logp + target_entropy)``), separate Adam optimizers with eps 1e-7 for qf,
    qf_twin, policy and alpha, and the Polyak update of both target critics."""
    pi, critic, target, temperature, norm = nets
    log_alpha = temperature.log_alpha
    target_entropy = -float(ACT_DIM)
    obs, next_obs = norm(batch.obs), norm(batch.next_obs)

    def sample(inputs, eps):
        loc, log_std = inputs.chunk(2, dim=-1)
        log_std = log_std.clamp(-5.0, 2.0)
        u = loc + log_std.exp() * eps
        logp = torch.distributions.Normal(loc, log_std.exp()).log_prob(u).sum(-1)
        jacobian = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
        return torch.clamp(torch.tanh(u), -1, 1), logp - jacobian.sum(-1), loc, log_std

    actions, logp, loc, log_std = sample(pi(obs), noise[0])
    # The log-probability is RLlib's squashed Gaussian's (exact for interior actions).
    rllib = TorchSquashedGaussian(loc=loc, scale=log_std.exp()).logp(actions)
    assert torch.allclose(rllib, logp, atol=1e-3)
    next_actions, logp_next = [t.detach() for t in sample(pi(next_obs), noise[1])[:2]]
    for p in critic.parameters():
        p.requires_grad_(False)
    q_curr = torch.min(*critic(obs, actions))
    for p in critic.parameters():
        p.requires_grad_(True)
    q_target_next = torch.min(*target(next_obs, next_actions)).detach()
    q1, q2 = critic(obs, batch.actions)
    alpha = log_alpha.exp()
    target_q = (batch.rewards + gamma * (1.0 - batch.terminateds)
                * (q_target_next - alpha.detach() * logp_next)).detach()
    losses = {"qf": F.huber_loss(q1, target_q, delta=1.0),
              "qf_twin": F.huber_loss(q2, target_q, delta=1.0),
              "policy": torch.mean(alpha.detach() * logp - q_curr),
              "alpha": -torch.mean(log_alpha * (logp.detach() + target_entropy))}
    params = {"qf": list(critic.q1.parameters()), "qf_twin": list(critic.q2.parameters()),
              "policy": list(pi.parameters()), "alpha": [log_alpha]}
    optims = {k: torch.optim.Adam(v, lr=lr, eps=1e-7) for k, v in params.items()}
    grads = {}
    for name, optim in optims.items():
        optim.zero_grad(set_to_none=True)
        losses[name].backward(retain_graph=True)
        grads[name] = [p.grad.clone() for p in params[name]]
    for optim in optims.values():
        optim.step()
    with torch.no_grad():
        for t, s in zip(target.parameters(), critic.parameters()):
            t.mul_(1 - tau).add_(tau * s)
    return {k: v.detach() for k, v in losses.items()}, grads


@pytest.mark.parametrize("policy", ["spikerl", "ann"])
def test_one_update_equals_rllibs_sac_loss_written_out(policy):
    """Same weights, batch and noise: the losses, every gradient, the weights after the Adam
    steps and the target critics after Polyak averaging agree with the reference."""
    batch = _batch()
    noise = torch.randn((2, *batch.actions.shape), generator=torch.Generator().manual_seed(1))
    ours_nets, ref_nets = _networks(policy), _networks(policy)
    ours = _update(ours_nets)
    loss_q, loss_pi, loss_alpha, stats = ours.losses(batch, noise)
    for optim in ours.optims:
        optim.zero_grad(set_to_none=True)
    (loss_q + loss_pi + loss_alpha).backward()
    ref_losses, ref_grads = _reference_step(ref_nets, batch, noise)

    close = {"atol": 1e-5, "rtol": 1e-4}
    assert torch.allclose(stats["qf_loss"], ref_losses["qf"], **close)
    assert torch.allclose(stats["qf_twin_loss"], ref_losses["qf_twin"], **close)
    assert torch.allclose(loss_q, ref_losses["qf"] + ref_losses["qf_twin"], **close)
    assert torch.allclose(loss_pi, ref_losses["policy"], **close)
    assert torch.allclose(loss_alpha, ref_losses["alpha"], **close)
    pi, critic, target, temperature, _ = ours_nets
    ours_grads = {"qf": [p.grad for p in critic.q1.parameters()],
                  "qf_twin": [p.grad for p in critic.q2.parameters()],
                  "policy": [p.grad for p in pi.parameters()],
                  "alpha": [temperature.log_alpha.grad]}
    for name, grads in ref_grads.items():
        for a, b in zip(ours_grads[name], grads, strict=True):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), name
    # The policy gradient is real (the spiking actor's surrogate reaches every layer).
    assert all(g.abs().sum() > 0 for g in ours_grads["policy"] if g is not None)

    # Adam (fused, eps 1e-7) and Polyak: apply our step's optimizer part.
    from spikerl_ray.core.td3 import guarded_step, polyak_update
    for optim, found in zip(ours.optims, ours._found):
        guarded_step(optim, found)
    polyak_update(critic, target, ours.hp.tau)
    for mine, ref in zip(ours_nets[:4], ref_nets[:4]):
        for a, b in zip(mine.parameters(), ref.parameters(), strict=True):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


def test_squashed_log_prob_matches_rllibs_distribution():
    torch.manual_seed(0)
    inputs = torch.randn(256, 2 * ACT_DIM)
    inputs[:, ACT_DIM:] = inputs[:, ACT_DIM:] * 4  # log-stds beyond both clamps
    noise = torch.randn(256, ACT_DIM)
    actions, logp = squashed_sample(inputs, noise)
    loc, log_std = inputs.chunk(2, dim=-1)
    dist = TorchSquashedGaussian.from_logits(inputs)
    interior = actions.abs().max(-1).values < 0.99
    assert interior.sum() > 50
    assert torch.allclose(dist.logp(actions)[interior], logp[interior], atol=1e-3)
    assert torch.allclose(actions, torch.tanh(loc + log_std.clamp(-5.0, 2.0).exp() * noise))


def test_a_step_moves_policy_critic_temperature_and_targets():
    nets = _networks("ann")
    sac = _update(nets)
    before = [[p.detach().clone() for p in net.parameters()] for net in nets[:4]]
    stats = sac.step(_batch())
    for net, old in zip(nets[:4], before):
        assert not all(torch.equal(a, b) for a, b in zip(net.parameters(), old))
    assert {"qf_loss", "policy_loss", "alpha_loss", "alpha_value", "logp_mean"} <= stats.keys()
    # alpha starts at 0.5 and moves by about one learning rate (Adam's first step).
    assert stats["alpha_value"].item() == pytest.approx(0.5)
    assert abs(nets[3].log_alpha.item() - math.log(0.5)) == pytest.approx(3e-4, rel=1e-2)
    assert sac.read_nonfinite() == (0, 0)


def test_nonfinite_gradients_skip_every_step_and_the_targets():
    nets = _networks("ann")
    sac = _update(nets)
    batch = _batch()
    batch.rewards[0] = float("nan")
    before = [[p.detach().clone() for p in net.parameters()] for net in nets[:4]]
    sac.step(batch)
    for net, old in zip(nets[:4], before):
        assert all(torch.equal(a, b) for a, b in zip(net.parameters(), old))
    assert sac.read_nonfinite() == (1, 1)


def test_compiled_update_matches_eager():
    batch = _batch()
    eager, compiled = _update(_networks()), _update(_networks(), compile=True)
    for _ in range(2):
        torch.manual_seed(3)
        s_eager = eager.step(batch)
        torch.manual_seed(3)
        s_compiled = compiled.step(batch)
        for key in s_eager:
            assert torch.allclose(s_compiled[key], s_eager[key], atol=1e-4, rtol=1e-4), key
    for a, b in zip(eager.policy.parameters(), compiled.policy.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_bf16_update_runs_with_fp32_weights():
    nets = _networks()
    sac = _update(nets, precision="bf16")
    for _ in range(3):
        stats = sac.step(_batch())
    assert torch.isfinite(stats["qf_loss"]) and torch.isfinite(stats["policy_loss"])
    assert all(p.dtype == torch.float32 for net in nets[:4] for p in net.parameters())
