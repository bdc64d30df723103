"""Actor networks by name: the built-ins ``spikerl``, ``popsan``, ``dsrl`` and ``ann``, or a
user's factory named ``"package.module:factory"`` (docs/actors.md).

Every actor maps (already normalized) observations ``(batch, obs_dim)`` to actions in
``(-1, 1)``; the caller scales them to the action bounds. The built-ins declare every optional
capability of :mod:`policies.capabilities`: with ``squash=False`` they return the values before
their final tanh (for a pre-tanh penalty, saturation statistics and distribution heads);
spiking actors can also return the number of spikes each layer emitted, for firing rates and
energy estimates (counting is skipped unless asked for), count their operations and export
to NIR.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from policies.capabilities import DOCS, takes_keyword
from policies.mlp import mlp
from policies.operations import dense_macs, spiking_operations
from policies.spiking import (
    CurrentLIF,
    IntegratorReadout,
    PopulationDecoder,
    PopulationEncoder,
    TwoNeuronEncoder,
)

if TYPE_CHECKING:
    import nir

SpikeCounts = dict[str, torch.Tensor]

# DSRL (Akl et al., 2023) LIF thresholds per environment; 1.0 where the paper gives none.
DSRL_THRESHOLDS: dict[str, float] = {"HalfCheetah": 0.8, "Hopper": 2.0, "Ant": 2.5}


# PopSAN used Poisson encoder spikes for these environments (TD3/DDPG), deterministic elsewhere.
POPSAN_POISSON_ENVS = frozenset({"Hopper", "Walker2d"})


def _family(env_id: str | None) -> str:
    return (env_id or "").split("-")[0]


def dsrl_threshold(env_id: str | None) -> float:
    """DSRL's LIF threshold for a Gymnasium id such as ``"Hopper-v5"`` (1.0 if unlisted)."""
    return DSRL_THRESHOLDS.get(_family(env_id), 1.0)


def actor_kwargs_for_env(name: str, env_id: str | None) -> dict[str, Any]:
    """The per-environment settings each method's paper used: DSRL's threshold, PopSAN's
    Poisson encoder on Hopper and Walker2d. SpikeRL and the ANN need none."""
    if name == "dsrl":
        return {"threshold": dsrl_threshold(env_id)}
    if name == "popsan":
        return {"deterministic_encoder": _family(env_id) not in POPSAN_POISSON_ENVS}
    return {}


class SpikingActor(nn.Module):
    """An encoder, a stack of spiking layers and a readout, run for ``T`` timesteps."""

    def __init__(self, encoder: nn.Module, layers: list[nn.Module], readout: nn.Module,
                 layer_names: list[str]) -> None:
        super().__init__()
        self.encoder = encoder
        self.layers = nn.ModuleList(layers)
        self.readout = readout
        self.layer_names = layer_names

    @property
    def timesteps(self) -> int:
        """T, the number of timesteps the network runs per observation."""
        return int(self.encoder.timesteps)

    def forward(self, obs: torch.Tensor, return_spikes: bool = False, squash: bool = True
                ) -> torch.Tensor | tuple[torch.Tensor, SpikeCounts]:
        """Actions in (-1, 1) (pre-tanh values if not ``squash``); with ``return_spikes`` also
        the spike count of each layer, summed over time and batch, as a tensor per neuron
        (divide by T x batch for rates)."""
        x = self.encoder(obs)
        counts: SpikeCounts = {}
        if return_spikes and isinstance(self.encoder, PopulationEncoder):
            counts["encoder"] = x.detach().sum(dim=(0, 1))
        for name, layer in zip(self.layer_names, self.layers):
            x = layer(x)
            if return_spikes:
                counts[name] = x.detach().sum(dim=(0, 1))
        action = self.readout(x)
        if squash:
            action = torch.tanh(action)
        return (action, counts) if return_spikes else action

    def synaptic_operations(self, counts: SpikeCounts, batch: int) -> tuple[float, float]:
        """Synaptic operations and MACs per inference (:mod:`policies.operations`)."""
        return spiking_operations(self, counts, batch)

    def to_nir(self, dt: float) -> nir.NIRGraph:
        """The NIR graph of the spiking layers, the host side in its metadata
        (:func:`policies.nir_export.spiking_actor_graph`; needs the ``nir`` package)."""
        from policies.nir_export import spiking_actor_graph

        return spiking_actor_graph(self, dt)


class MLPActor(nn.Module):
    """The ANN baseline: MLP with ReLU hidden layers and a tanh output (TD3 paper, 256-256)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (256, 256)) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, act_dim)

    def forward(self, obs: torch.Tensor, return_spikes: bool = False, squash: bool = True
                ) -> torch.Tensor | tuple[torch.Tensor, SpikeCounts]:
        action = self.net(obs)
        if squash:
            action = torch.tanh(action)
        return (action, {}) if return_spikes else action

    def synaptic_operations(self, counts: SpikeCounts, batch: int) -> tuple[float, float]:
        """No synaptic operations; a MAC per weight (:mod:`policies.operations`)."""
        return 0.0, dense_macs(self)


def popsan_actor(obs_dim: int, act_dim: int, *, hidden: tuple[int, ...] = (256, 256),
                 encoder_pop: int = 10, decoder_pop: int = 10, timesteps: int = 5,
                 deterministic_encoder: bool = True, surrogate: str = "rect",
                 backend: str = "torch") -> SpikingActor:
    """PopSAN (CoRL 2020): population encoder (10 per input), 256-256 current-based LIF,
    an LIF output population (10 per action) and a learned rate decoder; T = 5; PopSAN's
    rectangular surrogate gradient. ``backend``: ``"torch"`` (plain autograd) or ``"fused"``
    (hand-written BPTT)."""
    encoder = PopulationEncoder(obs_dim, encoder_pop, timesteps,
                                deterministic=deterministic_encoder, backend=backend)
    sizes = [encoder.out_features, *hidden, act_dim * decoder_pop]
    layers = [CurrentLIF(a, b, backend=backend, surrogate=surrogate)
              for a, b in zip(sizes[:-1], sizes[1:])]
    names = [f"hidden{i}" for i in range(len(hidden))] + ["output"]
    return SpikingActor(encoder, layers, PopulationDecoder(act_dim, decoder_pop), names)


def spikerl_actor(obs_dim: int, act_dim: int, **overrides: Any) -> SpikingActor:
    """SpikeRL (ICONS 2025): PopSAN's network with the deterministic encoder everywhere."""
    overrides.setdefault("deterministic_encoder", True)
    return popsan_actor(obs_dim, act_dim, **overrides)


def dsrl_actor(obs_dim: int, act_dim: int, *, hidden: tuple[int, ...] = (400, 300),
               threshold: float = 1.0, timesteps: int = 5, decay: float = 0.5,
               backend: str = "torch") -> SpikingActor:
    """DSRL (Frontiers in Neurorobotics 2023): two-neuron input coding, LIF 400-300 with
    current and voltage decay 0.5 and a per-environment threshold, integrator readout; T = 5.
    The surrogate gradient is rectangular over ``(0, 2 x threshold)``, PopSAN's shape scaled
    to DSRL's threshold."""
    encoder = TwoNeuronEncoder(obs_dim, timesteps)
    sizes = [encoder.out_features, *hidden]
    layers = [CurrentLIF(a, b, cdecay=decay, vdecay=decay, threshold=threshold,
                         window=threshold, backend=backend)
              for a, b in zip(sizes[:-1], sizes[1:])]
    names = [f"hidden{i}" for i in range(len(hidden))]
    readout = IntegratorReadout(sizes[-1], act_dim, alpha=decay, beta=decay)
    return SpikingActor(encoder, layers, readout, names)


def ann_actor(obs_dim: int, act_dim: int, *, hidden: tuple[int, ...] = (256, 256)
              ) -> MLPActor:
    """The ANN baseline of the TD3 paper: MLP 256-256, ReLU, tanh. It has no spiking layers,
    so it takes no spiking ``backend`` (:func:`build_actor` passes none)."""
    return MLPActor(obs_dim, act_dim, hidden)


ACTORS: dict[str, Callable[..., nn.Module]] = {
    "spikerl": spikerl_actor,
    "popsan": popsan_actor,
    "dsrl": dsrl_actor,
    "ann": ann_actor,
}


def is_builtin(policy: str) -> bool:
    """Whether ``policy`` names a built-in actor (a key of :data:`ACTORS`)."""
    return policy in ACTORS


# A user's actor factory, importable as ``package.module:factory`` (docs/actors.md).
FACTORY_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def names_factory(policy: str) -> bool:
    """Whether ``policy`` has the form ``package.module:factory`` (nothing is imported)."""
    return bool(FACTORY_PATTERN.match(policy))


def resolve_factory(policy: str) -> Callable[..., nn.Module]:
    """The factory ``policy`` names: a key of :data:`ACTORS`, or ``"package.module:factory"``
    (the module imported with :func:`importlib.import_module`). ``ValueError`` with the reason
    when it names none."""
    if is_builtin(policy):
        return ACTORS[policy]
    if not names_factory(policy):
        raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(sorted(ACTORS))} "
                         f"or name your own factory as 'package.module:factory' ({DOCS})")
    module_name, _, attribute = policy.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"policy {policy!r}: cannot import module {module_name!r} "
                         f"({type(exc).__name__}: {exc}); is its folder on PYTHONPATH?") from exc
    if not hasattr(module, attribute):
        raise ValueError(f"policy {policy!r}: module {module_name!r} has no attribute "
                         f"{attribute!r}")
    factory = getattr(module, attribute)
    if not callable(factory):
        raise ValueError(f"policy {policy!r}: {module_name}.{attribute} is a "
                         f"{type(factory).__name__}, not a factory(obs_dim, act_dim)")
    return factory


def build_actor(policy: str, obs_dim: int, act_dim: int, **overrides: Any) -> nn.Module:
    """``factory(obs_dim, act_dim, **overrides)`` for the factory ``policy`` names
    (:func:`resolve_factory`). A ``backend`` override (the spiking backend the framework passes
    to every actor) reaches only a factory whose signature takes it, by name or ``**kwargs``.
    ``ValueError`` if the factory returns something other than a ``torch.nn.Module``."""
    factory = resolve_factory(policy)
    if "backend" in overrides and not takes_keyword(factory, "backend"):
        overrides = {k: v for k, v in overrides.items() if k != "backend"}
    actor = factory(obs_dim, act_dim, **overrides)
    if not isinstance(actor, nn.Module):
        raise ValueError(f"policy {policy!r} returned a {type(actor).__name__}, not a "
                         "torch.nn.Module")
    return actor
