"""A spiking actor in plain PyTorch, without spikerl-ray's classes (docs/actors.md).

Per observation, ``T`` timesteps from zero state: the normalized observation drives, at every
timestep, a learned linear input layer into current-based LIF neurons (``c = a c + W x + b;
v = m v (1 - s) + c; s = (v > threshold)``), a second such layer fed by the first one's
spikes, and a linear readout of the last spikes. The action is the tanh of the readout's mean
over the ``T`` timesteps. Spikes are a step function with a sigmoid's gradient (a surrogate
gradient), so the network trains by backpropagation through time.

Besides ``forward(obs)`` it declares every optional capability of the contract:

- pre-squash output: ``forward(obs, squash=False)`` (SAC's mean, TD3's pre-tanh penalty);
- spike counts: ``forward(obs, return_spikes=True)`` and ``timesteps`` (firing-rate columns);
- operation counts: ``synaptic_operations(counts, batch)`` (the energy estimate);
- a NIR graph: ``to_nir(dt)`` (``spikerl export``; needs the ``nir`` package).

Train it with ``PYTHONPATH=examples spikerl train --policy lif_actor:make_actor ...``
(examples/README.md).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    import nir

CURRENT_DECAY = 0.5  # a: the synaptic current keeps half of itself per timestep
VOLTAGE_DECAY = 0.75  # m: the membrane keeps three quarters
THRESHOLD = 0.5
SURROGATE_SLOPE = 4.0  # d spike / d v = slope * sigmoid'(slope (v - threshold)), peak 1


def spike(v: torch.Tensor) -> torch.Tensor:
    """``v > THRESHOLD`` as 0/1 forward; a steep sigmoid's gradient backward."""
    soft = torch.sigmoid(SURROGATE_SLOPE * (v - THRESHOLD))
    # soft - soft.detach() is exactly 0 forward and carries soft's gradient backward.
    return (v > THRESHOLD).to(v.dtype) + (soft - soft.detach())


def lif(synaptic: torch.Tensor) -> torch.Tensor:
    """Spikes ``(T, batch, n)`` of current-based LIF neurons for their synaptic input."""
    current = volt = s = torch.zeros_like(synaptic[0])
    out = []
    for x in synaptic:
        current = CURRENT_DECAY * current + x
        volt = VOLTAGE_DECAY * volt * (1.0 - s) + current
        s = spike(volt)
        out.append(s)
    return torch.stack(out)


class LIFActor(nn.Module):
    """Observation -> LIF layers -> linear readout averaged over ``timesteps`` -> tanh."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (128, 128),
                 timesteps: int = 5) -> None:
        super().__init__()
        sizes = [obs_dim, *hidden]
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.readout = nn.Linear(sizes[-1], act_dim)
        self.timesteps = timesteps

    def forward(self, obs: torch.Tensor, squash: bool = True, return_spikes: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Actions in (-1, 1) (the values before the tanh if not ``squash``); with
        ``return_spikes`` also each layer's spike count per neuron over time and batch."""
        x = obs.expand(self.timesteps, *obs.shape)  # the same input at every timestep
        counts: dict[str, torch.Tensor] = {}
        for i, fc in enumerate(self.fcs):
            x = lif(fc(x))
            counts[f"hidden{i}"] = x.detach().sum(dim=(0, 1))
        action = self.readout(x).mean(0)
        if squash:
            action = torch.tanh(action)
        return (action, counts) if return_spikes else action

    def synaptic_operations(self, counts: dict[str, torch.Tensor], batch: int
                            ) -> tuple[float, float]:
        """Per inference: a MAC per input weight and timestep (the input is real-valued), a
        synaptic operation per spike and target neuron after it."""
        first = self.fcs[0]
        macs = float(self.timesteps * first.in_features * first.out_features)
        targets = [fc.out_features for fc in self.fcs[1:]] + [self.readout.out_features]
        sops = sum(float(counts[f"hidden{i}"].sum()) * n / batch for i, n in enumerate(targets))
        return sops, macs

    def to_nir(self, dt: float) -> nir.NIRGraph:
        """Input (the normalized observation) -> ``Affine`` + ``CubaLIF`` per layer ->
        ``Affine`` readout -> output, one timestep per call; Euler with step ``dt`` gives the
        decays above back (``tau = dt / (1 - decay)``)."""
        import nir

        def affine(fc: nn.Linear) -> nir.Affine:
            return nir.Affine(weight=fc.weight.detach().cpu().numpy().astype(np.float32),
                              bias=fc.bias.detach().cpu().numpy().astype(np.float32))

        def full(n: int, value: float) -> np.ndarray:
            return np.full(n, value, dtype=np.float32)

        nodes: dict[str, nir.NIRNode] = {
            "input": nir.Input(input_type={"input": np.array([self.fcs[0].in_features])})}
        for i, fc in enumerate(self.fcs):
            n = fc.out_features
            nodes[f"hidden{i}_affine"] = affine(fc)
            nodes[f"hidden{i}_lif"] = nir.CubaLIF(
                tau_syn=full(n, dt / (1 - CURRENT_DECAY)), w_in=full(n, 1 / (1 - CURRENT_DECAY)),
                tau_mem=full(n, dt / (1 - VOLTAGE_DECAY)), r=full(n, 1 / (1 - VOLTAGE_DECAY)),
                v_leak=full(n, 0.0), v_threshold=full(n, THRESHOLD), v_reset=full(n, 0.0))
        nodes["readout"] = affine(self.readout)
        nodes["output"] = nir.Output(
            output_type={"output": np.array([self.readout.out_features])})
        return nir.NIRGraph(nodes=nodes, edges=list(itertools.pairwise(nodes)))


def make_actor(obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (128, 128),
               timesteps: int = 5) -> LIFActor:
    """The factory ``--policy lif_actor:make_actor`` names."""
    return LIFActor(obs_dim, act_dim, tuple(hidden), timesteps)
