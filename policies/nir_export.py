"""Export of a spiking actor to NIR, the Neuromorphic Intermediate Representation (nir 1.0.8).

An actor declares its graph with ``to_nir(dt)`` (:attr:`policies.capabilities.Capability.NIR`);
:func:`export_nir` adds what the host needs around it. The graph holds what a spiking library
or chip runs, one timestep per call, from zero state; what has no NIR primitive that the
importers (snnTorch 1.0.0, Norse 1.1.0) accept stays on the host and travels in the graph's
metadata, from which :class:`HostSide` rebuilds it: ``T`` and the observation normalizer;
for the built-in actors (:func:`spiking_actor_graph`) also the encoder (PopSAN's
Gaussian population with regular or Poisson spikes; DSRL's two-neuron currents) and the readout
(PopSAN's rate decoder; DSRL's integrator, a NIR ``CubaLI`` that neither importer takes). A
graph without them (a user's actor, docs/actors.md) takes the normalized observation at every
timestep, and the action is the tanh of its outputs' mean over the ``T`` timesteps.

Mapping (``docs/nir.md``). NIR's ``CubaLIF``, ``tau_syn I' = -I + w_in S`` and
``tau_mem v' = (v_leak - v) + r I``, integrated by forward Euler with step ``dt`` as snnTorch
and Norse do, is ``I <- (1 - dt/tau_syn) I + (dt/tau_syn) w_in S`` and
``v <- (1 - dt/tau_mem) v + (dt/tau_mem) r I``; spike where ``v > v_threshold``, then
``v <- v_reset``. With ``tau_syn = dt/(1 - a)``, ``w_in = 1/(1 - a)``, ``tau_mem = dt/(1 - b)``,
``r = 1/(1 - b)``, ``v_leak = v_reset = 0`` this is PopSAN's ``c = a c + W s;
v = b v (1 - s) + c; s = (v > th)`` (:class:`policies.spiking.CurrentLIF`), the synaptic input
``W s + bias`` being the ``Affine`` node before it.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable
from typing import Any

import nir
import numpy as np
import torch
from torch import nn

from policies.actors import SpikingActor
from policies.capabilities import Capability, require
from policies.normalizer import RunningNormalizer
from policies.spiking import (
    ENCODER_REGULAR_VTH,
    CurrentLIF,
    IntegratorReadout,
    PopulationDecoder,
    PopulationEncoder,
    TwoNeuronEncoder,
)

# snnTorch 1.0.0's importer hard-codes dt = 1e-4 (snntorch/import_nir.py); the time constants
# are written for it. Norse takes dt as an argument: pass the graph's metadata["dt"].
NIR_DT = 1e-4
DISCRETIZATION = ("forward-euler: I <- (1 - dt/tau_syn) I + (dt/tau_syn) w_in S; "
                  "v <- (1 - dt/tau_mem) v + (dt/tau_mem) r I; z = (v > v_threshold); "
                  "v <- v_reset where z")
INPUT_NODE, OUTPUT_NODE = "input", "output"
# Version of the metadata layout below (keys, host-side modules).
METADATA_FORMAT = 1

# The host-side modules by kind: the class, the names of its constructor arguments and how to
# read them from an instance (its tensors come from its state dict; both go in the metadata).
_HOST_KINDS: dict[str, tuple[type[nn.Module], tuple[str, ...], Callable[[Any], tuple]]] = {
    "running_normalizer": (RunningNormalizer, ("dim", "clip", "eps"),
                           lambda m: (int(m.mean.shape[0]), float(m.clip), float(m.eps))),
    "population_encoder": (PopulationEncoder, ("obs_dim", "pop_dim", "deterministic"),
                           lambda m: (m.obs_dim, m.pop_dim, bool(m.deterministic))),
    "two_neuron_encoder": (TwoNeuronEncoder, ("obs_dim", "scale"),
                           lambda m: (m.obs_dim, float(m.scale))),
    "population_decoder": (PopulationDecoder, ("act_dim", "pop_dim"),
                           lambda m: (m.act_dim, m.pop_dim)),
    "integrator_readout": (IntegratorReadout, ("in_features", "out_features", "alpha", "beta"),
                           lambda m: (m.fc.in_features, m.fc.out_features, float(m.alpha),
                                      float(m.beta))),
}


def _kind(module: nn.Module) -> str:
    for kind, (cls, _, _) in _HOST_KINDS.items():
        if type(module) is cls:
            return kind
    raise ValueError(f"{type(module).__name__} has no NIR export")


def cuba_lif(layer: CurrentLIF, dt: float = NIR_DT) -> nir.CubaLIF:
    """The NIR ``CubaLIF`` whose forward-Euler step with ``dt`` is ``layer``'s update (see the
    module docstring); float32 arrays of shape ``(out_features,)``."""
    for name, decay in (("cdecay", layer.cdecay), ("vdecay", layer.vdecay)):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"{name} {decay} has no CubaLIF time constant (needs 0 <= d < 1)")

    def full(value: float) -> np.ndarray:
        return np.full(layer.fc.out_features, value, dtype=np.float32)

    return nir.CubaLIF(
        tau_syn=full(dt / (1.0 - layer.cdecay)), tau_mem=full(dt / (1.0 - layer.vdecay)),
        r=full(1.0 / (1.0 - layer.vdecay)), v_leak=full(0.0), v_threshold=full(layer.threshold),
        v_reset=full(0.0), w_in=full(1.0 / (1.0 - layer.cdecay)))


def affine(linear: nn.Linear) -> nir.Affine:
    """The NIR ``Affine`` of a linear layer (float32 copies of its weight and bias)."""
    return nir.Affine(weight=linear.weight.detach().cpu().numpy().astype(np.float32),
                      bias=linear.bias.detach().cpu().numpy().astype(np.float32))


def _host_metadata(role: str, module: nn.Module) -> dict[str, Any]:
    kind = _kind(module)
    _, names, read = _HOST_KINDS[kind]
    config = dict(zip(names, read(module)))
    # 0-d tensors as numbers: nir.write compresses arrays, which HDF5 refuses for scalars.
    state = {k: v.item() if v.ndim == 0 else v.detach().cpu().numpy().copy()
             for k, v in module.state_dict().items()}
    assert not set(config) & set(state), (kind, config, state)
    return {f"{role}.kind": kind, **{f"{role}.{k}": v for k, v in {**config, **state}.items()}}


def spiking_actor_graph(actor: SpikingActor, dt: float) -> nir.NIRGraph:
    """The graph of a built-in spiking actor (``spikerl``, ``popsan`` or ``dsrl``; its
    ``to_nir``): ``Affine`` + ``CubaLIF`` per layer from the encoder's output to the last
    spiking layer's spikes, the encoder and the readout in its metadata."""
    layers = list(actor.layers)
    if not all(isinstance(layer, CurrentLIF) for layer in layers):
        raise ValueError("only CurrentLIF layers have a NIR export")
    nodes: dict[str, nir.NIRNode] = {
        INPUT_NODE: nir.Input(input_type={"input": np.array([layers[0].fc.in_features])})}
    for name, layer in zip(actor.layer_names, layers):
        nodes[f"{name}_affine"] = affine(layer.fc)
        nodes[f"{name}_lif"] = cuba_lif(layer, dt)
    nodes[OUTPUT_NODE] = nir.Output(output_type={"output": np.array([layers[-1].fc.out_features])})
    metadata: dict[str, Any] = {**_host_metadata("encoder", actor.encoder),
                                **_host_metadata("decoder", actor.readout)}
    if isinstance(actor.encoder, PopulationEncoder):
        metadata["encoder.threshold"] = ENCODER_REGULAR_VTH
    return nir.NIRGraph(nodes=nodes, edges=list(itertools.pairwise(nodes)), metadata=metadata)


QUANTIZATION = "quantization"


def quantized_metadata(setting: dict[str, Any]) -> dict[str, Any]:
    """The graph metadata of a deployment setting
    (:meth:`policies.quantize.QuantizedActor.setting`), flat under ``quantization.``: the
    weight scheme, state bits and timesteps, and per fixed-point layer its scale (float weight
    = integer weight / scale; zero-point 0), integer threshold and decay constants."""
    flat = {f"{QUANTIZATION}.{k}": v for k, v in setting.items()
            if k != "layers" and v is not None}
    for layer, values in setting.get("layers", {}).items():
        flat |= {f"{QUANTIZATION}.{layer}.{k}": v for k, v in values.items()}
    return flat


def _only_node(graph: nir.NIRGraph, cls: type[nir.NIRNode]) -> str:
    names = [name for name, node in graph.nodes.items() if isinstance(node, cls)]
    if len(names) != 1:
        raise ValueError(f"an actor's NIR graph needs exactly one {cls.__name__} node, "
                         f"found {len(names)}")
    return names[0]


def export_nir(actor: nn.Module, normalizer: RunningNormalizer | None = None,
               dt: float = NIR_DT) -> nir.NIRGraph:
    """The NIR graph of an actor that declares one (``actor.to_nir(dt)``; see the module
    docstring), with the host side in its metadata: ``T``, ``dt`` and ``normalizer``, the
    observation normalizer the actor is fed through (kept on the host).
    :class:`~policies.capabilities.MissingCapability` (a ``ValueError``) for an actor that
    declares none (``ann``)."""
    require(actor, Capability.NIR, "NIR export")
    graph = actor.to_nir(dt)
    metadata: dict[str, Any] = {
        **graph.metadata, "spikerl_nir_format": METADATA_FORMAT, "timesteps": actor.timesteps,
        "dt": dt, "discretization": DISCRETIZATION,
        "input_node": _only_node(graph, nir.Input), "output_node": _only_node(graph, nir.Output)}
    if normalizer is not None:
        metadata.update(_host_metadata("normalizer", normalizer))
    return nir.NIRGraph(nodes=graph.nodes, edges=graph.edges, metadata=metadata)


def _plain(value: Any) -> Any:
    """A metadata value as written, after an HDF5 round trip (bytes, numpy scalars)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _host_module(metadata: dict[str, Any], role: str) -> nn.Module | None:
    """Rebuilds the host-side module that :func:`_host_metadata` stored under ``role``."""
    if f"{role}.kind" not in metadata:
        return None
    cls, names, _ = _HOST_KINDS[_plain(metadata[f"{role}.kind"])]
    prefix = f"{role}."
    values = {k[len(prefix):]: v for k, v in metadata.items() if k.startswith(prefix)}
    config = {k: _plain(values[k]) for k in names}
    if "timesteps" in inspect.signature(cls).parameters:  # the encoders
        config["timesteps"] = int(_plain(metadata["timesteps"]))
    module = cls(**config)
    module.load_state_dict({k: torch.as_tensor(np.asarray(values[k]))
                            for k in module.state_dict()})
    return module


class HostSide(nn.Module):
    """What runs on the host around an exported graph, rebuilt from its metadata: raw
    observations to the graph's input for all ``T`` timesteps (:meth:`encode`), and the
    graph's output over ``T`` timesteps to actions in (-1, 1) (:meth:`decode`). Without an
    encoder (a user's graph) the input is the normalized observation at every timestep;
    without a decoder the action is the tanh of the outputs' mean over time."""

    def __init__(self, metadata: dict[str, Any]) -> None:
        super().__init__()
        self.timesteps = int(_plain(metadata["timesteps"]))
        self.normalizer = _host_module(metadata, "normalizer")
        self.encoder = _host_module(metadata, "encoder")
        self.decoder = _host_module(metadata, "decoder")

    @torch.no_grad()
    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw observations ``(batch, obs_dim)`` to the graph's input, ``(T, batch, n)``."""
        x = obs.float()
        if self.normalizer is not None:
            x = self.normalizer(x)
        if self.encoder is None:
            return x.expand(self.timesteps, *x.shape)
        return self.encoder(x)

    @torch.no_grad()
    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        """The graph's outputs ``(T, batch, m)`` to actions in (-1, 1)."""
        return torch.tanh(outputs.mean(0) if self.decoder is None else self.decoder(outputs))


# The host-side kinds of a graph without an encoder or a decoder in its metadata.
NO_ENCODER, NO_DECODER = "observation", "mean"

_INPUTS = {
    NO_ENCODER: "the normalized observation x at one timestep (real values, the same at every "
                "timestep)",
    "population_encoder": "encoder spikes (0 or 1) at one timestep: neuron k of observation "
                          "dimension i at index i * pop_dim + k",
    "two_neuron_encoder": "input currents at one timestep (real values, the same at every "
                          "timestep): max(x_i / encoder.scale, 0) at index i, "
                          "max(-x_i / encoder.scale, 0) at index obs_dim + i",
}
_OUTPUTS = {
    NO_DECODER: "the actor's output at one timestep (real values)",
    "population_decoder": "output-population spikes at one timestep: neuron k of action j at "
                          "index j * pop_dim + k",
    "integrator_readout": "spikes of the last hidden layer at one timestep (the integrator "
                          "readout runs on the host)",
}
_NORMALIZE = ("x = clip((obs - normalizer.mean) / sqrt(normalizer.var + normalizer.eps), "
              "-normalizer.clip, normalizer.clip); ")
_HOST_BEFORE = {
    NO_ENCODER: "x at every timestep",
    "population_encoder": "a = exp(-(x_i - encoder.mean)^2 / (2 encoder.std^2)) for the pop_dim "
                          "neurons of each x_i; regular spikes: u += a, spike where u > "
                          "encoder.threshold, then u -= encoder.threshold (Poisson where "
                          "encoder.deterministic is false: spike where a uniform draw < a)",
    "two_neuron_encoder": "currents [max(x / encoder.scale, 0), max(-x / encoder.scale, 0)] at "
                          "every timestep",
}
_HOST_AFTER = {
    NO_DECODER: "action = tanh(mean over the T timesteps of the outputs)",
    "population_decoder": "rates = mean over the T timesteps of the output spikes; action_j = "
                          "tanh(sum_k decoder.weight[j, k] rates[j * pop_dim + k] + "
                          "decoder.bias[j])",
    "integrator_readout": "i = decoder.alpha i + decoder.fc.weight s + decoder.fc.bias; "
                          "v = decoder.beta v + i over the T timesteps (from zero); action = "
                          "tanh(v_T). NIR could carry it as an Affine and a CubaLI (tau_syn = "
                          "dt/(1-alpha), w_in = 1/(1-alpha), tau_mem = dt/(1-beta), r = "
                          "1/(1-beta)), but neither snnTorch 1.0.0 nor Norse 1.1.0 imports "
                          "CubaLI, so it stays on the host",
}


def _fixed_point(meta: dict[str, Any]) -> dict[str, str]:
    """The contract's ``fixed_point`` entry for a quantized graph (none for a float one)."""
    scheme = meta.get(f"{QUANTIZATION}.weights", "fp32")
    if scheme == "fp32":
        return {}
    return {"fixed_point": (
        f"weights {scheme}: every Affine weight and bias is an integer; the float layer is "
        f"integer / {QUANTIZATION}.LAYER.scale (zero-point 0) and v_threshold an integer in "
        f"the same units. On Loihi: current and voltage in {meta[f'{QUANTIZATION}.state_bits']}"
        f"-bit registers, synaptic input and threshold shifted left by "
        f"{meta[f'{QUANTIZATION}.state_shift']} bits, decays x <- trunc(x (4096 - delta) / "
        f"4096) with delta = {QUANTIZATION}.LAYER.current_delta and voltage_delta (the "
        "CubaLIF time constants are the decays these give; docs/deployment.md)")}


def contract(graph: nir.NIRGraph) -> dict[str, Any]:
    """The input and output contract of a graph from :func:`export_nir`, as plain JSON data:
    what goes in and comes out at each timestep and what the host does around it."""
    meta = {k: _plain(v) for k, v in graph.metadata.items()}
    encoder = meta.get("encoder.kind", NO_ENCODER)
    decoder = meta.get("decoder.kind", NO_DECODER)
    return {
        "nir_version": nir.version, "timesteps": meta["timesteps"], "dt": meta["dt"],
        "discretization": meta["discretization"],
        "input": {"node": meta["input_node"], "dtype": "float32",
                  "shape": [int(n) for n in graph.nodes[meta["input_node"]].input_type["input"]],
                  "per_timestep": _INPUTS[encoder]},
        "output": {"node": meta["output_node"], "dtype": "float32",
                   "shape": [int(n) for n in
                             graph.nodes[meta["output_node"]].output_type["output"]],
                   "per_timestep": _OUTPUTS[decoder]},
        "run": f"reset every neuron's state to zero, then call the graph once per timestep "
               f"for T = {meta['timesteps']} timesteps (snnTorch's importer assumes "
               f"dt = 1e-4; pass dt = {meta['dt']} to Norse's from_nir)",
        "host_before": (_NORMALIZE if "normalizer.kind" in meta else "x = obs; ")
                       + _HOST_BEFORE[encoder],
        "host_after": _HOST_AFTER[decoder],
        **_fixed_point(meta),
        "metadata_keys": sorted(meta),
    }
