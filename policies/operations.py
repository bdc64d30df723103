"""Operations per inference and the neuromorphic energy estimate they imply.

An *inference* is one observation in, one action out (``T`` timesteps for a spiking actor).

- A **synaptic operation** (SOP) is one spike reaching one synapse: each spike into a layer fed
  by spikes counts that layer's fan-out (its number of output neurons); each output spike into
  PopSAN's decoder counts one (it adds to its action's rate).
- A **multiply-accumulate** (MAC) is counted for every weight applied to a real value: all of
  an ANN's layers, DSRL's first layer (its two-neuron coding presents currents, not spikes, at
  every timestep) and PopSAN's decoder (rates times weights).

Neuron state updates (decays, thresholds), the encoder's receptive fields and the final tanh
are not counted, as in the SNN papers' estimates. The energy uses the 45 nm figures those
papers use (Horowitz, ISSCC 2014; docs/methods.md): 0.9 pJ per accumulate, 4.6 pJ per MAC. It is an estimate for
neuromorphic hardware, never a measurement.

An actor declares its counts with a ``synaptic_operations(counts, batch)`` method
(:attr:`policies.capabilities.Capability.OPERATIONS`); the built-in actors' methods call
:func:`spiking_operations` and :func:`dense_macs`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from policies.capabilities import Capability, require

if TYPE_CHECKING:
    from policies.actors import SpikingActor

PJ_PER_SYNAPTIC_OP = 0.9
PJ_PER_MAC = 4.6

OPERATION_NAMES = ("synaptic_ops", "macs", "inference_energy_pj")


def dense_macs(module: nn.Module) -> float:
    """MACs of one inference through every ``nn.Linear`` of ``module`` once (an ANN)."""
    return float(sum(m.in_features * m.out_features for m in module.modules()
                     if isinstance(m, nn.Linear)))


def spiking_operations(actor: SpikingActor, counts: dict[str, torch.Tensor], batch: int
                       ) -> tuple[float, float]:
    """Synaptic operations and MACs per inference of a built-in spiking actor, from the spike
    ``counts`` it returned for a batch of ``batch`` observations."""
    sops = macs = 0.0
    inputs = [counts.get("encoder")] + [counts[name] for name in actor.layer_names]
    for spikes_in, layer in zip(inputs, [*actor.layers, actor.readout]):
        fc = getattr(layer, "fc", None)
        if fc is None:  # PopSAN's decoder: accumulate spikes into rates, weigh the rates
            sops += float(spikes_in.sum()) / batch
            macs += float(layer.act_dim * layer.pop_dim)
        elif spikes_in is None:  # real-valued input at every timestep
            macs += float(actor.timesteps * fc.in_features * fc.out_features)
        else:
            sops += float(spikes_in.sum()) * fc.out_features / batch
    return sops, macs


def inference_operations(actor: nn.Module, counts: dict[str, torch.Tensor], batch: int
                         ) -> dict[str, float]:
    """Synaptic operations, MACs and estimated energy (pJ) per inference, averaged over a
    batch of ``batch`` observations, from the spike ``counts`` the actor returned for it
    (``actor(obs, return_spikes=True)``; empty for an actor without spike counts).
    :class:`~policies.capabilities.MissingCapability` for an actor that declares no
    ``synaptic_operations``."""
    require(actor, Capability.OPERATIONS, "operation counting")
    sops, macs = actor.synaptic_operations(counts, batch)
    return {"synaptic_ops": float(sops), "macs": float(macs),
            "inference_energy_pj": PJ_PER_SYNAPTIC_OP * sops + PJ_PER_MAC * macs}
