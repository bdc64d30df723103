"""A spiking actor in simulated fixed point, as a neuromorphic chip (Intel's Loihi) runs it.

A setting (:class:`QuantSpec`) names the weight scheme, the width of the neuron state and the
number of timesteps ``T``. :func:`quantize_actor` turns a built-in spiking actor into another
:class:`~policies.actors.SpikingActor` (a :class:`QuantizedActor`) whose spiking layers are
:class:`FixedPointLIF`; the encoder and the readout stay on the host in float, as in PopSAN's
Loihi deployment and in our NIR export (:class:`policies.nir_export.HostSide`). The forward
pass, spike counts and operation counts are therefore those of every spiking actor
(:mod:`policies.operations`); only the layers compute differently.

Per layer (``docs/deployment.md``, constants and sources in ``docs/methods.md``):

- weights and bias share one symmetric scale, ``s = q / max|W, b|`` with ``q`` = 127 (int8),
  7 (int4) or 255 (``popsan``), zero-point 0; integers ``round(W s)`` (``popsan``: truncated
  toward zero, as PopSAN's ``loihi_realization/utility.py`` does), and the float layer is
  ``W_int / s``. The bias is a synapse too (PopSAN feeds it from an always-spiking bias
  neuron), so it takes the weights' format;
- the threshold becomes the integer ``round(th s)`` (``popsan``: ``int(th s)``);
- the state: synaptic input and threshold shifted left by 6 bits into signed ``state_bits``
  registers (24 on Loihi), saturated at their bounds; each decay a 12-bit constant
  ``delta = round((1 - d) 4096)`` applied as ``x <- trunc(x (4096 - delta) / 4096)``.

The current-based LIF update is the float one (:class:`policies.spiking.CurrentLIF`):
``c = a c + W s + b;  v = b_v v (1 - s) + c;  s = (v > th)``, here in integers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from policies.actors import SpikingActor
from policies.spiking import CurrentLIF

if TYPE_CHECKING:
    import nir

# Weight schemes and the largest integer magnitude each allows ("fp32": no quantization).
WEIGHT_MAX = {"int8": 127, "int4": 7, "popsan": 255}
WEIGHT_SCHEMES = ("fp32", *WEIGHT_MAX)
# Loihi: 24-bit current and voltage, 12-bit decay constants, input and threshold << 6.
LOIHI_STATE_BITS = 24
DECAY_BITS = 12
STATE_SHIFT = 6
# The state widths a setting may ask for.
STATE_BITS_RANGE = (8, 32)


@dataclass(frozen=True)
class QuantSpec:
    """A deployment setting: the weight scheme (:data:`WEIGHT_SCHEMES`), the width of the
    current and voltage registers (None: float for ``fp32``, Loihi's 24 bits otherwise) and the
    timesteps ``T`` (None: the trained ones). ``ValueError`` for an impossible setting."""

    weights: str = "fp32"
    state_bits: int | None = None
    timesteps: int | None = None

    def __post_init__(self) -> None:
        if self.weights not in WEIGHT_SCHEMES:
            raise ValueError(f"weights {self.weights!r}: choose one of "
                             f"{', '.join(WEIGHT_SCHEMES)}")
        if self.timesteps is not None and self.timesteps < 1:
            raise ValueError(f"timesteps must be at least 1, got {self.timesteps}")
        if self.weights == "fp32":
            if self.state_bits is not None:
                raise ValueError("state bits need fixed-point weights (int8, int4 or popsan); "
                                 "fp32 keeps the float state")
            return
        if self.state_bits is None:
            object.__setattr__(self, "state_bits", LOIHI_STATE_BITS)
        low, high = STATE_BITS_RANGE
        if not low <= self.state_bits <= high:
            raise ValueError(f"state bits must be between {low} and {high} (Loihi: "
                             f"{LOIHI_STATE_BITS}), got {self.state_bits}")

    def is_trained(self, trained: int | None) -> bool:
        """Whether this setting is the trained network itself (fp32 at the ``trained`` T)."""
        return self.weights == "fp32" and self.timesteps in (None, trained)

    def describe(self, trained: int | None) -> dict[str, Any]:
        """The setting as plain data, ``T`` resolved against the ``trained`` one."""
        return {"weights": self.weights, "state_bits": self.state_bits,
                "timesteps": self.timesteps or trained, "trained_timesteps": trained}


# PopSAN's Loihi deployment as one setting (combra-lab/pop-spiking-deep-rl, loihi_realization).
POPSAN_LOIHI = QuantSpec("popsan", LOIHI_STATE_BITS, 5)


def loihi_decay(retention: float) -> int:
    """Loihi's 12-bit decay constant ``delta`` for a layer keeping ``retention`` of its state
    per step (``x <- x (4096 - delta) / 4096``)."""
    delta = round((1.0 - retention) * 2**DECAY_BITS)
    if not 0 <= delta <= 2**DECAY_BITS:
        raise ValueError(f"decay {retention} has no {DECAY_BITS}-bit decay constant")
    return delta


def _decay(x: torch.Tensor, delta: int) -> torch.Tensor:
    """``x (4096 - delta) / 4096`` rounded toward zero, as Loihi does."""
    return torch.div(x * (2**DECAY_BITS - delta), 2**DECAY_BITS, rounding_mode="trunc")


class FixedPointLIF(CurrentLIF):
    """A :class:`~policies.spiking.CurrentLIF` layer quantized per the module docstring.

    ``fc`` holds the integer weights and bias (as floats, so the synaptic input ``W s + b``
    is exact), ``threshold`` the integer threshold and ``cdecay``/``vdecay`` the retentions
    Loihi's decay constants give, so the NIR export (:func:`policies.nir_export.cuba_lif`)
    reads the integer network; ``scale`` maps it back (float weight = integer / scale).
    """

    def __init__(self, layer: CurrentLIF, weights: str, state_bits: int) -> None:
        deltas = loihi_decay(layer.cdecay), loihi_decay(layer.vdecay)
        unity = 2**DECAY_BITS
        w, b = layer.fc.weight.detach(), layer.fc.bias.detach()
        largest = float(torch.cat([w.abs().flatten(), b.abs()]).max())
        if largest == 0.0:
            raise ValueError("a layer with all weights and biases zero has no scale")
        q = WEIGHT_MAX[weights]
        scale = q / largest
        to_int = torch.trunc if weights == "popsan" else torch.round
        threshold = int(to_int(torch.tensor(layer.threshold * scale, dtype=torch.float64)))
        with torch.random.fork_rng(devices=[]):  # the Linear's random init is overwritten:
            # leave the global stream (a Poisson encoder's draws) as it was
            super().__init__(layer.fc.in_features, layer.fc.out_features,
                             cdecay=(unity - deltas[0]) / unity,
                             vdecay=(unity - deltas[1]) / unity, threshold=float(threshold),
                             window=layer.window, surrogate=layer.surrogate)
        with torch.no_grad():  # float32 products, as PopSAN's numpy code computes them
            self.fc.weight.copy_(to_int(w * scale).clamp(-q, q))
            self.fc.bias.copy_(to_int(b * scale).clamp(-q, q))
        self.requires_grad_(False)
        self.current_delta, self.voltage_delta = deltas
        self.scale, self.state_bits = scale, state_bits
        self.state_limit = 2 ** (state_bits - 1) - 1
        self.state_threshold = threshold << STATE_SHIFT
        if not 0 <= self.state_threshold < self.state_limit:
            raise ValueError(f"the integer threshold {threshold} (x 2^{STATE_SHIFT} in the "
                             f"state) does not fit a {state_bits}-bit state")

    def forward(self, spikes_in: torch.Tensor) -> torch.Tensor:
        """Spikes ``(T, batch, out)`` for inputs ``(T, batch, in)``: spikes, or real-valued
        currents (DSRL's first layer), whose synaptic input is rounded to the state's
        resolution."""
        synaptic = torch.round(self.fc(spikes_in).double() * 2**STATE_SHIFT).long()
        current = torch.zeros_like(synaptic[0])
        volt = torch.zeros_like(current)
        spike = torch.zeros_like(current, dtype=torch.bool)
        out = []
        for t in range(synaptic.shape[0]):
            current = (_decay(current, self.current_delta) + synaptic[t]).clamp(
                -self.state_limit, self.state_limit)
            volt = (_decay(volt.masked_fill(spike, 0), self.voltage_delta) + current).clamp(
                -self.state_limit, self.state_limit)
            spike = volt > self.state_threshold
            out.append(spike)
        return torch.stack(out).to(spikes_in.dtype)


class QuantizedActor(SpikingActor):
    """A spiking actor deployed at a :class:`QuantSpec`: host-side encoder and readout in
    float, run for the setting's ``T``; :class:`FixedPointLIF` layers unless ``fp32``."""

    def __init__(self, actor: SpikingActor, spec: QuantSpec) -> None:
        encoder = copy.deepcopy(actor.encoder)
        encoder.timesteps = spec.timesteps or actor.timesteps
        if spec.weights == "fp32":
            layers = [copy.deepcopy(layer) for layer in actor.layers]
        else:
            layers = [FixedPointLIF(layer, spec.weights, spec.state_bits)
                      for layer in actor.layers]
        super().__init__(encoder, layers, copy.deepcopy(actor.readout), list(actor.layer_names))
        self.spec = spec
        self.trained_timesteps = actor.timesteps
        self.eval()

    def setting(self) -> dict[str, Any]:
        """The setting and, for fixed point, each layer's scale, integer threshold and decay
        constants (plain data)."""
        layers = {name: {"scale": layer.scale, "threshold": int(layer.threshold),
                         "current_delta": layer.current_delta,
                         "voltage_delta": layer.voltage_delta}
                  for name, layer in zip(self.layer_names, self.layers)
                  if isinstance(layer, FixedPointLIF)}
        return {**self.spec.describe(self.trained_timesteps),
                **({"zero_point": 0, "state_shift": STATE_SHIFT, "decay_bits": DECAY_BITS,
                    "layers": layers} if layers else {})}

    def to_nir(self, dt: float) -> nir.NIRGraph:
        """The NIR graph of :meth:`SpikingActor.to_nir` (integer weights and thresholds for
        fixed point) with the setting in its metadata
        (:func:`policies.nir_export.quantized_metadata`)."""
        from policies.nir_export import quantized_metadata

        graph = super().to_nir(dt)
        graph.metadata.update(quantized_metadata(self.setting()))
        return graph


def quantize_actor(actor: nn.Module, spec: QuantSpec) -> QuantizedActor:
    """``actor`` (a built-in spiking actor, :class:`~policies.actors.SpikingActor` of
    :class:`~policies.spiking.CurrentLIF` layers) deployed at ``spec``. ``ValueError`` naming
    the reason for any other actor, or a ``T`` above the trained one."""
    if not isinstance(actor, SpikingActor):
        kind = "has no spiking layers" if not hasattr(actor, "timesteps") else \
            "is not a built-in spiking actor (spikerl, popsan, dsrl)"
        raise ValueError(f"{type(actor).__name__} {kind}: nothing to run in fixed point")
    if not all(isinstance(layer, CurrentLIF) for layer in actor.layers):
        raise ValueError("only CurrentLIF layers have a fixed-point simulation")
    if spec.timesteps is not None and spec.timesteps > actor.timesteps:
        raise ValueError(f"timesteps {spec.timesteps} exceed the trained {actor.timesteps}; "
                         f"choose 1 to {actor.timesteps}")
    return QuantizedActor(actor, spec)
