"""Health statistics of an actor on a batch of observations, and the collapse detector.

A spiking actor can collapse to a constant action: its output population saturates (every
neuron either silent or firing at every timestep for every observation), so the decoded action
no longer depends on the observation, and a surrogate gradient with a dead zone (PopSAN's
rectangle) passes nothing back through it (docs/learning_quality.md). These statistics make
that visible every training iteration; they cost one forward pass without gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from policies.capabilities import Capability, detect
from policies.operations import OPERATION_NAMES, inference_operations

# Layers whose statistics are reported (a PopSAN actor's; DSRL has no "output", the ANN none;
# a user's actor names its layers in its spike counts).
REPORTED_LAYERS = ("hidden0", "hidden1", "output")
# |pre-tanh| above 3 means tanh > 0.995: the action sits at its bound and its gradient through
# the tanh is under 1% of its value at 0 (the issue measured two thirds beyond 3 when collapsed).
PRE_TANH_SATURATED = 3.0
# The detector's default: warn when at least this fraction of the output population is
# saturated (silent or always firing over the whole batch). Collapsed runs measured 1.0.
OUTPUT_SATURATION_WARNING = 0.9


def statistic_names() -> tuple[str, ...]:
    """Names of the statistics :func:`actor_statistics` can return, in report order."""
    per_layer = tuple(f"{kind}_{layer}" for layer in REPORTED_LAYERS
                      for kind in ("rate", "silent", "always"))
    return per_layer + ("action_std", "pre_tanh_abs", "pre_tanh_saturated") + OPERATION_NAMES


@torch.no_grad()
def actor_statistics(actor: Callable[..., Any], obs: torch.Tensor, timesteps: int | None,
                     network: nn.Module | None = None) -> dict[str, float]:
    """Statistics of an actor on normalized observations ``(batch, obs_dim)``, as far as its
    capabilities (:mod:`policies.capabilities`) allow; never an error for a lacking one.

    ``actor`` is the actor module or its ``forward`` (which runs a compiled actor eagerly);
    ``network`` the actor module when ``actor`` is its ``forward`` (capabilities are read from
    it); ``timesteps`` its T (None without one).

    - ``rate_L``: mean firing rate of layer ``L`` (spikes per neuron per timestep);
    - ``silent_L`` / ``always_L``: fraction of ``L``'s neurons that never fire / fire at every
      timestep, over the whole batch (spike counts and ``timesteps`` needed; layers of
      :data:`REPORTED_LAYERS` only);
    - ``action_std``: the spread of the actions over the observations (std per action
      dimension, averaged); near 0 means a constant action (every actor);
    - ``pre_tanh_abs`` and ``pre_tanh_saturated``: mean ``|u|`` of the pre-tanh outputs and the
      fraction beyond :data:`PRE_TANH_SATURATED` (pre-squash output needed);
    - its synaptic operations, MACs and estimated neuromorphic energy per inference
      (:func:`policies.operations.inference_operations`; operation counts needed).
    """
    module = network if network is not None else actor
    capabilities = detect(module)
    pre_squash = Capability.PRE_SQUASH in capabilities
    spiking = Capability.SPIKE_COUNTS in capabilities
    kwargs: dict[str, bool] = {"squash": False} if pre_squash else {}
    if spiking:
        out, counts = actor(obs, return_spikes=True, **kwargs)
    else:
        out, counts = actor(obs, **kwargs), {}
    out = out.float()
    batch = obs.shape[0]
    action = torch.tanh(out) if pre_squash else out
    stats: dict[str, float] = {"action_std": float(action.std(dim=0, unbiased=False).mean())}
    if pre_squash:
        stats["pre_tanh_abs"] = float(out.abs().mean())
        stats["pre_tanh_saturated"] = float((out.abs() > PRE_TANH_SATURATED).float().mean())
    for layer in REPORTED_LAYERS:
        if layer not in counts or timesteps is None:
            continue
        c = counts[layer].float()
        full = float(timesteps * batch)
        stats[f"rate_{layer}"] = float(c.mean() / full)
        stats[f"silent_{layer}"] = float((c == 0).float().mean())
        stats[f"always_{layer}"] = float((c == full).float().mean())
    if Capability.OPERATIONS in capabilities:
        stats |= inference_operations(module, counts, batch)
    return stats


def output_saturation(stats: dict[str, float]) -> float:
    """Fraction of the output population that is silent or always firing (nan without one)."""
    if "silent_output" not in stats:
        return math.nan
    return stats["silent_output"] + stats["always_output"]


def collapse_warning(stats: dict[str, float],
                     threshold: float = OUTPUT_SATURATION_WARNING) -> str | None:
    """A one-line warning when the output population is mostly saturated, else None."""
    saturated = output_saturation(stats)
    if not saturated >= threshold:  # also False for nan (no output population)
        return None
    return (f"{saturated:.0%} of the actor's output neurons are saturated (silent or firing at "
            f"every timestep; action spread {stats.get('action_std', math.nan):.3f}): the "
            "spiking actor may have collapsed to a constant action (docs/learning_quality.md)")
