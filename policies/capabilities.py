"""What an actor can do beyond the minimal contract, read from the module itself.

The minimal contract (docs/actors.md): ``forward(obs)`` maps normalized observations
``(batch, obs_dim)`` to actions ``(batch, act_dim)`` in [-1, 1]. Everything else is optional, and
declared by the module rather than by its class:

- :attr:`Capability.PRE_SQUASH`: ``forward`` has a ``squash`` parameter; ``squash=False`` returns
  the values before the final tanh.
- :attr:`Capability.SPIKE_COUNTS`: ``forward`` has a ``return_spikes`` parameter (then it returns
  ``(actions, {layer: spike count per neuron, summed over time and batch})``) and the module an
  int ``timesteps`` attribute.
- :attr:`Capability.OPERATIONS`: a ``synaptic_operations(counts, batch)`` method returning
  ``(synaptic operations, MACs)`` per inference (:mod:`policies.operations`).
- :attr:`Capability.NIR`: a ``to_nir(dt)`` method returning the ``nir.NIRGraph`` of the actor
  alone (:mod:`policies.nir_export`), and an int ``timesteps`` attribute.

Detection looks at the module, not at a wrapper around it (``DistributedDataParallel``,
``torch.compile``'s ``OptimizedModule``): pass the unwrapped actor.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

DOCS = "docs/actors.md"


class Capability(enum.Enum):
    """An optional capability; its value says what declares it."""

    PRE_SQUASH = "pre-squash output (forward(obs, squash=False))"
    SPIKE_COUNTS = ("spike counts (forward(obs, return_spikes=True) and an int timesteps "
                    "attribute)")
    OPERATIONS = "operation counts (a synaptic_operations(counts, batch) method)"
    # Worded so that an ANN's refusal says what it lacks: spiking layers.
    NIR = ("spiking layers to export (a to_nir(dt) method returning a nir.NIRGraph, and an "
           "int timesteps attribute)")


class MissingCapability(ValueError):
    """An actor lacks the capability that a feature needs (one line, naming both)."""


def takes_keyword(fn: Callable[..., Any], name: str, *, via_kwargs: bool = True) -> bool:
    """Whether ``fn`` can be called with the keyword argument ``name``: a parameter of that
    name, or (with ``via_kwargs``) a ``**kwargs`` parameter."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature to read
        return False
    return any((p.name == name and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
               or (via_kwargs and p.kind is p.VAR_KEYWORD) for p in parameters)


def _has_timesteps(actor: nn.Module) -> bool:
    timesteps = getattr(actor, "timesteps", None)
    return isinstance(timesteps, int) and not isinstance(timesteps, bool)


def _forward_names(actor: nn.Module, name: str) -> bool:
    # A parameter named so: **kwargs alone declares nothing.
    return takes_keyword(actor.forward, name, via_kwargs=False)


def has(actor: nn.Module, capability: Capability) -> bool:
    """Whether ``actor`` declares ``capability`` (see the module docstring)."""
    if capability is Capability.PRE_SQUASH:
        return _forward_names(actor, "squash")
    if capability is Capability.SPIKE_COUNTS:
        return _forward_names(actor, "return_spikes") and _has_timesteps(actor)
    if capability is Capability.OPERATIONS:
        return callable(getattr(actor, "synaptic_operations", None))
    return callable(getattr(actor, "to_nir", None)) and _has_timesteps(actor)


def detect(actor: nn.Module) -> frozenset[Capability]:
    """Every capability ``actor`` declares."""
    return frozenset(c for c in Capability if has(actor, c))


def require(actor: nn.Module, capability: Capability, feature: str,
            policy: str | None = None) -> None:
    """Raises :class:`MissingCapability` unless ``actor`` declares ``capability``, which
    ``feature`` (e.g. ``"SAC"``) needs; ``policy`` names the actor (default: its class)."""
    if not has(actor, capability):
        raise MissingCapability(f"actor {policy or type(actor).__name__} has no "
                                f"{capability.value}, which {feature} needs; see {DOCS}")
