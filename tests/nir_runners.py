"""Runs an exported NIR graph in snnTorch 1.0.0 and Norse 1.1.0 as their importers intend: one
timestep per call, state carried between calls, and records every CubaLIF layer's spikes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nir
import torch

Spikes = dict[str, torch.Tensor]


def _recorder(net: torch.nn.Module, cls: type, pick: Callable[[Any], torch.Tensor]
              ) -> dict[str, list[torch.Tensor]]:
    """Forward hooks that collect ``pick(output)`` of every ``cls`` module of ``net`` by
    name, one tensor per call."""
    seen: dict[str, list[torch.Tensor]] = {}
    for name, module in net.named_modules():
        if isinstance(module, cls):
            module.register_forward_hook(
                lambda mod, args, out, name=name: seen.setdefault(name, []).append(pick(out)))
    return seen


def _stacked(seen: dict[str, list[torch.Tensor]]) -> Spikes:
    return {name: torch.stack(steps) for name, steps in seen.items()}


def import_snntorch(graph: nir.NIRGraph) -> torch.nn.Module:
    from snntorch.import_nir import import_from_nir

    return import_from_nir(graph)


def run_snntorch(net: torch.nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, Spikes]:
    """The imported graph on ``inputs`` ``(T, batch, n)``: its outputs ``(T, batch, m)`` and
    the spikes of each ``Synaptic`` layer. snnTorch keeps the state inside each neuron
    (``init_hidden``), so every one is reset first."""
    import snntorch

    for module in net.modules():
        if isinstance(module, snntorch.Synaptic):
            module.reset_mem()
    seen = _recorder(net, snntorch.Synaptic, lambda spikes: spikes)
    with torch.no_grad():
        outputs = torch.stack([net(x)[0] for x in inputs])
    return outputs, _stacked(seen)


def import_norse(graph: nir.NIRGraph) -> torch.nn.Module:
    import norse.torch as norse

    return norse.from_nir(graph, dt=float(graph.metadata["dt"]))


def run_norse(net: torch.nn.Module, inputs: torch.Tensor
              ) -> tuple[torch.Tensor, Spikes, Spikes]:
    """As :func:`run_snntorch` for Norse, whose graph takes and returns its state (``None``
    to start from zero); also each layer's membrane after its reset (Norse's ``CubaLIF``
    returns ``(spikes, (synapse state, LIF state))``)."""
    from norse.torch.utils.import_nir import CubaLIF

    seen = _recorder(net, CubaLIF, lambda out: out[0])
    volts = _recorder(net, CubaLIF, lambda out: out[1][1].v)
    state, outputs = None, []
    with torch.no_grad():
        for x in inputs:
            out, state = net(x, state)
            outputs.append(out)
    return torch.stack(outputs), _stacked(seen), _stacked(volts)
