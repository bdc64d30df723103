"""Spiking building blocks: population encoders, current-based LIF layers, decoders.

Constants come from PopSAN (Tang, Kumar, Michmizos, CoRL 2020) and DSRL (Akl et al., 2023),
as listed, with the public code's file and line, in docs/methods.md. Every layer runs in *multi-step* mode: inputs and outputs
carry a leading time dimension ``T``. Because the networks are feed-forward, a layer's synaptic
input for all ``T`` timesteps is one matrix product over ``(T x batch)``; only the elementwise
membrane recurrence loops over ``T``. :func:`reference_lif_step` keeps the plain per-timestep
form the PopSAN code uses, for equivalence tests.

Two backends compute the same thing (tested against each other, forward and gradients):
``"torch"`` runs the recurrence as plain autograd ops (the readable reference); ``"fused"``
runs it as one autograd function per layer whose backward is the hand-written BPTT, which
removes per-timestep autograd overhead. The backend is chosen explicitly, never switched
silently.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# PopSAN encoder: "regular" (deterministic) spikes fire when the accumulated activation
# exceeds 0.999 (ENCODER_REGULAR_VTH in the PopSAN code).
ENCODER_REGULAR_VTH = 0.999
# PopSAN hidden neurons: current decay 0.5, voltage decay 0.75, threshold 0.5.
POPSAN_CDECAY = 0.5
POPSAN_VDECAY = 0.75
POPSAN_VTH = 0.5
# PopSAN rectangular pseudo-gradient: 1 where |v - vth| < 0.5.
POPSAN_GRAD_WINDOW = 0.5
# Surrogate gradients of the spike function: PopSAN's rectangle, which passes nothing to a
# neuron farther than ``window`` from threshold, or an arctangent (SpikingJelly's ``ATan``)
# scaled to the same height (1) and area (2 x window), which never passes exactly zero.
SURROGATES = ("rect", "atan")


def surrogate_grad(v: torch.Tensor, threshold: float, window: float, kind: str) -> torch.Tensor:
    """d spike / d v: ``1[|v - th| < window]`` (``rect``) or
    ``1 / (1 + (pi (v - th) / (2 window))^2)`` (``atan``: same peak and area, no dead zone)."""
    if kind == "rect":
        return (v - threshold).abs().lt(window).to(v.dtype)
    return 1.0 / (1.0 + ((v - threshold) * (math.pi / (2.0 * window))).square())


def _check_surrogate(kind: str) -> str:
    if kind not in SURROGATES:
        raise ValueError(f"surrogate must be one of {SURROGATES}, got {kind!r}")
    return kind


class _StraightThroughSpike(torch.autograd.Function):
    """Heaviside forward, identity backward (PopSAN's encoder pseudo-gradient)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, threshold: float) -> torch.Tensor:  # type: ignore[override]
        return (x > threshold).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad, None


class _SurrogateSpike(torch.autograd.Function):
    """Heaviside forward; backward the surrogate gradient of :func:`surrogate_grad`."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, threshold: float, window: float,  # type: ignore[override]
                kind: str) -> torch.Tensor:
        ctx.save_for_backward(v)
        ctx.consts = (threshold, window, kind)
        return (v > threshold).to(v.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (v,) = ctx.saved_tensors
        return grad * surrogate_grad(v, *ctx.consts).to(grad.dtype), None, None, None


def straight_through_spike(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Spikes where ``x > threshold``; the gradient passes through unchanged."""
    return _StraightThroughSpike.apply(x, threshold)


def surrogate_spike(v: torch.Tensor, threshold: float, window: float,
                    kind: str = "rect") -> torch.Tensor:
    """Spikes where ``v > threshold``; the ``kind`` surrogate gradient (see
    :func:`surrogate_grad`)."""
    return _SurrogateSpike.apply(v, threshold, window, kind)


BACKENDS = ("torch", "fused")
# "auto": the plain ``torch`` ops when the networks are compiled (the compiler fuses them
# best), else the hand-written ``fused`` BPTT (the fastest eager path; docs/performance.md).
BACKEND_CHOICES = ("auto", *BACKENDS)


def resolve_backend(backend: str, compiled: bool) -> str:
    """``backend`` (one of :data:`BACKEND_CHOICES`) with "auto" resolved for networks that
    are, or are not, ``compiled``."""
    if backend == "auto":
        return "torch" if compiled else "fused"
    return _check_backend(backend)


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"spiking backend must be one of {BACKENDS}, got {backend!r}")
    return backend


class _FusedRegularEncoder(torch.autograd.Function):
    """PopSAN's deterministic encoder over T steps with a straight-through gradient.

    ``volt_t = volt_{t-1} + act - vth * s_{t-1};  s_t = (volt_t > vth)``; the backward treats
    ``ds/dvolt = 1`` and keeps the dependence of the reset on earlier spikes, exactly as
    autograd does on the plain loop.
    """

    @staticmethod
    def forward(ctx, act: torch.Tensor, timesteps: int) -> torch.Tensor:  # type: ignore[override]
        out = act.new_empty((timesteps, *act.shape))
        volt = torch.zeros_like(act)
        for t in range(timesteps):
            volt.add_(act)
            torch.gt(volt, ENCODER_REGULAR_VTH, out=out[t])
            volt.sub_(out[t], alpha=ENCODER_REGULAR_VTH)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        g_volt = torch.zeros_like(grad[0])
        g_act = torch.zeros_like(grad[0])
        for t in range(grad.shape[0] - 1, -1, -1):
            # volt_{t+1} = volt_t + act - vth * s_t, and s_t passes its gradient straight.
            g_volt = grad[t] - ENCODER_REGULAR_VTH * g_volt + g_volt
            g_act.add_(g_volt)
        return g_act, None


class _FusedCurrentLIF(torch.autograd.Function):
    """The current-based LIF recurrence over T steps with hand-written BPTT.

    Forward, per step: ``c = a c + I;  v = b v (1 - s) + c;  s = (v > th)``.
    Backward, from the last step down (``h`` the surrogate gradient at ``v_t``):
    ``g_s = dL/ds_t - b v_t g_v'``, ``g_v = g_s h + b (1 - s_t) g_v'``, ``g_c = g_v + a g_c'``,
    ``dL/dI_t = g_c``, where primes are the values of step ``t + 1``.
    """

    @staticmethod
    def forward(ctx, synaptic: torch.Tensor, cdecay: float, vdecay: float,  # type: ignore[override]
                threshold: float, window: float, surrogate: str) -> torch.Tensor:
        spikes = torch.empty_like(synaptic)
        volts = torch.empty_like(synaptic)
        current = torch.zeros_like(synaptic[0])
        volt = torch.zeros_like(current)
        for t in range(synaptic.shape[0]):
            current.mul_(cdecay).add_(synaptic[t])
            if t:
                volt.mul_(1.0 - spikes[t - 1]).mul_(vdecay)
            volt.add_(current)
            volts[t] = volt
            torch.gt(volt, threshold, out=spikes[t])
        ctx.save_for_backward(volts, spikes)
        ctx.consts = (cdecay, vdecay, threshold, window, surrogate)
        return spikes

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        volts, spikes = ctx.saved_tensors
        cdecay, vdecay, threshold, window, surrogate = ctx.consts
        g_syn = torch.empty_like(grad)
        g_v = torch.zeros_like(grad[0])
        g_c = torch.zeros_like(grad[0])
        for t in range(grad.shape[0] - 1, -1, -1):
            v, s = volts[t], spikes[t]
            g_s = grad[t] - vdecay * v * g_v
            h = surrogate_grad(v, threshold, window, surrogate).to(grad.dtype)
            g_v = g_s * h + vdecay * (1.0 - s) * g_v
            g_c = g_v + cdecay * g_c
            g_syn[t] = g_c
        return g_syn, None, None, None, None, None


class PopulationEncoder(nn.Module):
    """Gaussian receptive-field population coding of each observation dimension (PopSAN).

    Each of ``obs_dim`` inputs drives ``pop_dim`` neurons whose activation is
    ``exp(-(x - mean)^2 / (2 std^2))``; means start evenly spaced over ``mean_range`` and stds at
    ``sqrt(0.15)`` (PopSAN defaults); both are learnable. ``deterministic=True`` emits PopSAN's
    "regular" spikes (integrate the activation, fire above 0.999, subtract 0.999); otherwise
    Poisson spikes (Bernoulli with the activation as probability). Both use a straight-through
    gradient, so the means and stds are trained.
    """

    def __init__(
        self,
        obs_dim: int,
        pop_dim: int = 10,
        timesteps: int = 5,
        mean_range: tuple[float, float] = (-3.0, 3.0),
        std: float = math.sqrt(0.15),
        deterministic: bool = True,
        backend: str = "torch",
    ) -> None:
        super().__init__()
        self.obs_dim, self.pop_dim, self.timesteps = obs_dim, pop_dim, timesteps
        self.deterministic = deterministic
        self.backend = _check_backend(backend)
        means = torch.linspace(mean_range[0], mean_range[1], pop_dim).repeat(obs_dim, 1)
        self.mean = nn.Parameter(means.reshape(1, obs_dim * pop_dim))
        self.std = nn.Parameter(torch.full((1, obs_dim * pop_dim), std))

    @property
    def out_features(self) -> int:
        return self.obs_dim * self.pop_dim

    def activation(self, obs: torch.Tensor) -> torch.Tensor:
        """Receptive-field activations in [0, 1], shape ``(batch, obs_dim * pop_dim)``."""
        x = obs.repeat_interleave(self.pop_dim, dim=-1)
        return torch.exp(-0.5 * (x - self.mean).pow(2) / self.std.pow(2))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Spike trains of shape ``(T, batch, obs_dim * pop_dim)``."""
        act = self.activation(obs)
        if not self.deterministic:
            # Bernoulli spikes: 1 where draw < act; the gradient passes straight to act.
            draws = torch.rand((self.timesteps, *act.shape), dtype=act.dtype, device=act.device)
            return straight_through_spike(act - draws, 0.0)
        if self.backend == "fused":
            return _FusedRegularEncoder.apply(act, self.timesteps)
        spikes = []
        volt = torch.zeros_like(act)
        for _ in range(self.timesteps):
            volt = volt + act
            s = straight_through_spike(volt, ENCODER_REGULAR_VTH)
            volt = volt - s * ENCODER_REGULAR_VTH
            spikes.append(s)
        return torch.stack(spikes)


def reference_lif_step(
    current: torch.Tensor,
    volt: torch.Tensor,
    spike: torch.Tensor,
    synaptic_input: torch.Tensor,
    cdecay: float = POPSAN_CDECAY,
    vdecay: float = POPSAN_VDECAY,
    threshold: float = POPSAN_VTH,
    window: float = POPSAN_GRAD_WINDOW,
    surrogate: str = "rect",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One timestep of PopSAN's current-based LIF neuron, written as in the PopSAN code.

    ``c = cdecay*c + I;  v = vdecay*v*(1 - s) + c;  s = (v > threshold)``.
    """
    current = current * cdecay + synaptic_input
    volt = volt * vdecay * (1.0 - spike) + current
    spike = surrogate_spike(volt, threshold, window, surrogate)
    return current, volt, spike


class CurrentLIF(nn.Module):
    """A fully connected layer of current-based LIF neurons (PopSAN's hidden neuron).

    Input and output are spike trains ``(T, batch, features)``. The synaptic input of all ``T``
    timesteps is one matrix product; the membrane recurrence then loops over ``T``.
    ``surrogate`` picks the pseudo-gradient: ``rect`` (PopSAN) or ``atan``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        cdecay: float = POPSAN_CDECAY,
        vdecay: float = POPSAN_VDECAY,
        threshold: float = POPSAN_VTH,
        window: float = POPSAN_GRAD_WINDOW,
        backend: str = "torch",
        surrogate: str = "rect",
    ) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)
        self.cdecay, self.vdecay = cdecay, vdecay
        self.threshold, self.window = threshold, window
        self.backend = _check_backend(backend)
        self.surrogate = _check_surrogate(surrogate)

    def forward(self, spikes_in: torch.Tensor) -> torch.Tensor:
        synaptic = self.fc(spikes_in)  # one GEMM over (T x batch)
        if self.backend == "fused":
            return _FusedCurrentLIF.apply(synaptic, self.cdecay, self.vdecay, self.threshold,
                                          self.window, self.surrogate)
        current = torch.zeros_like(synaptic[0])
        volt = torch.zeros_like(current)
        spike = torch.zeros_like(current)
        out = []
        for t in range(synaptic.shape[0]):
            current, volt, spike = reference_lif_step(
                current, volt, spike, synaptic[t], self.cdecay, self.vdecay,
                self.threshold, self.window, self.surrogate,
            )
            out.append(spike)
        return torch.stack(out)


class PopulationDecoder(nn.Module):
    """PopSAN's decoder: per action, a learned weighted sum of its population's firing rates.

    Input: output-layer spikes ``(T, batch, act_dim * pop_dim)``; output: the pre-tanh value of
    each action (the actor applies the tanh; callers scale by the action limit). Weights use the
    default init of PopSAN's grouped Conv1d.
    """

    def __init__(self, act_dim: int, pop_dim: int = 10) -> None:
        super().__init__()
        self.act_dim, self.pop_dim = act_dim, pop_dim
        bound = 1.0 / math.sqrt(pop_dim)
        self.weight = nn.Parameter(torch.empty(act_dim, pop_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(act_dim).uniform_(-bound, bound))

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        rates = spikes.mean(dim=0).reshape(-1, self.act_dim, self.pop_dim)
        return (rates * self.weight).sum(-1) + self.bias


class TwoNeuronEncoder(nn.Module):
    """DSRL's two-neuron input coding: ``x`` becomes currents ``max(x, 0)`` and ``max(-x, 0)``.

    DSRL scales by a running maximum of ``|x|``; here observations arrive z-scored and clipped
    to ``[-scale, scale]`` by the shared normalizer, so dividing by ``scale`` bounds them the
    same way. The same currents are presented at every one of ``T`` timesteps.
    """

    def __init__(self, obs_dim: int, timesteps: int = 5, scale: float = 3.0) -> None:
        super().__init__()
        self.obs_dim, self.timesteps, self.scale = obs_dim, timesteps, scale

    @property
    def out_features(self) -> int:
        return 2 * self.obs_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs / self.scale
        currents = torch.cat([x.clamp(min=0.0), (-x).clamp(min=0.0)], dim=-1)
        return currents.unsqueeze(0).expand(self.timesteps, *currents.shape)


class IntegratorReadout(nn.Module):
    """DSRL's output: non-spiking neurons integrating input; membrane potential after T steps.

    ``i = alpha*i + W s;  v = beta*v + i``; returns ``v_T`` (the actor applies the tanh).
    """

    def __init__(self, in_features: int, out_features: int, alpha: float = 0.5,
                 beta: float = 0.5) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)
        self.alpha, self.beta = alpha, beta

    def forward(self, spikes_in: torch.Tensor) -> torch.Tensor:
        synaptic = self.fc(spikes_in)
        current = torch.zeros_like(synaptic[0])
        volt = torch.zeros_like(current)
        for t in range(synaptic.shape[0]):
            current = self.alpha * current + synaptic[t]
            volt = self.beta * volt + current
        return volt
