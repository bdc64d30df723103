"""Methods: a network plus the training recipe its paper (or this project) uses.

A *policy* is a network of :mod:`policies`; a *method* is what is compared: the network and
the settings it is trained with (each constant and its source: docs/methods.md).
``spikerl train --method``, Tune experiments and reports read the recipes here; a recipe's
settings are :class:`~spikerl_ray.run.RunSettings` fields, and explicit settings override them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Weight of the pre-tanh penalty of the ``spikerl`` recipe. Measured on Hopper-v5 (seed 0,
# docs/learning_quality.md): 1.0 kept the output population responsive (action spread about
# 0.2 at 8,000 steps), 0.1 delayed the collapse but did not stop it, 0 collapsed by 2,000.
SPIKERL_PRE_TANH_PENALTY = 1.0


@dataclass(frozen=True)
class Method:
    """A method: its network (a name of :data:`policies.ACTORS`), the RunSettings of its
    recipe, and whether it trains with data-parallel learners (then an experiment's learner
    count applies to it; other methods train with one learner, as their papers did)."""

    name: str
    policy: str
    summary: str
    settings: dict[str, Any] = field(default_factory=dict)
    data_parallel: bool = False


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("spikerl", "spikerl",
           "SpikeRL: PopSAN's network with the deterministic encoder, data-parallel learners "
           "in bf16 autocast; a pre-tanh penalty keeps its output population from saturating "
           "into a constant action",
           # "same_steps": with L learners as many optimizer steps per env step as with one,
           # so that comparisons at equal env steps do not handicap it; the SpikeRL paper's
           # regime, 1/L of the steps per learner, is data_parallel="same_samples".
           {"precision": "bf16", "pre_tanh_penalty": SPIKERL_PRE_TANH_PENALTY,
            "data_parallel": "same_steps"},
           data_parallel=True),
    Method("popsan", "popsan",
           "PopSAN: Poisson encoder on Hopper and Walker2d, one fp32 learner, PopSAN's TD3 "
           "schedule"),
    Method("dsrl", "dsrl",
           "DSRL: two-neuron encoder, LIF 400-300, integrator readout; lr 1e-3 for both "
           "networks, 1,000 warm-up steps",
           {"actor_lr": 1e-3, "critic_lr": 1e-3, "warmup_steps": 1000}),
    Method("ann", "ann", "an MLP actor 256-256 (the TD3 authors' code since 2019; the paper "
           "used 400-300), PopSAN's TD3 schedule"),
)}

