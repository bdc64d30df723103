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
