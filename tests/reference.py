"""Plain per-timestep forward pass of a spiking actor, as the PopSAN/SpikeRL code writes it.

Every layer is called once per timestep on that timestep's input, with fresh state tensors
created each step. It is the readable reference the batched-timestep and fused forms are
tested against, and the actor of the reference training loop in ``benchmarks/throughput.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from policies.actors import SpikingActor
from policies.spiking import CurrentLIF, reference_lif_step

# How far a fast path may be from its reference, per dtype, as SpikingJelly states it: 1e-5 in
# fp32, 2e-2 in bf16; outputs in absolute terms, gradients relative to max(|reference|, 1).
EQUIVALENCE_TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def max_differences(ref: nn.Module, fast: nn.Module, out_ref: torch.Tensor,
                    out_fast: torch.Tensor) -> tuple[float, float]:
    """The largest absolute difference of two outputs, and of the gradients of
    ``out.float().pow(2).sum()`` over matching parameters of ``ref`` and ``fast``, each
    gradient difference divided by ``max(|reference gradient|, 1)`` (compare both with
    :data:`EQUIVALENCE_TOL`)."""
    out_diff = (out_fast.float() - out_ref.float()).abs().max().item()
    g_ref = torch.autograd.grad(out_ref.float().pow(2).sum(), list(ref.parameters()))
    g_fast = torch.autograd.grad(out_fast.float().pow(2).sum(), list(fast.parameters()))
    grad_diff = max(((b.float() - a.float()).abs().max() / a.abs().max().clamp(min=1.0)).item()
                    for a, b in zip(g_ref, g_fast))
    return out_diff, grad_diff


def reference_forward(actor: SpikingActor, obs: torch.Tensor, squash: bool = True
                      ) -> torch.Tensor:
    """``actor(obs, squash=squash)`` computed timestep by timestep (LIF layers only; PopSAN
    and SpikeRL)."""
    spikes_in = actor.encoder(obs)
    layers: list[CurrentLIF] = list(actor.layers)  # type: ignore[arg-type]
    states = [tuple(torch.zeros(obs.shape[0], layer.fc.out_features, dtype=obs.dtype,
                                device=obs.device) for _ in range(3)) for layer in layers]
    out_spikes = []
    for t in range(spikes_in.shape[0]):
        x = spikes_in[t]
        for i, layer in enumerate(layers):
            c, v, s = reference_lif_step(*states[i], layer.fc(x), layer.cdecay, layer.vdecay,
                                         layer.threshold, layer.window, layer.surrogate)
            states[i] = (c, v, s)
            x = s
        out_spikes.append(x)
    pre = actor.readout(torch.stack(out_spikes))
    return torch.tanh(pre) if squash else pre


class ReferenceActor(nn.Module):
    """Wraps a PopSAN-style :class:`SpikingActor` to run :func:`reference_forward`."""

    def __init__(self, actor: SpikingActor) -> None:
        super().__init__()
        self.actor = actor

    def forward(self, obs: torch.Tensor, squash: bool = True) -> torch.Tensor:
        return reference_forward(self.actor, obs, squash)
