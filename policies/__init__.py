"""Spiking and ANN actors, critics and observation normalization in plain PyTorch.

This package never imports Ray: networks can be built, tested and exported on their own.
Actors are built-ins or users' factories (``"package.module:factory"``, docs/actors.md); what
an actor can do beyond ``forward(obs)`` is read from the module (:mod:`policies.capabilities`).
"""

from policies.actors import (
    ACTORS,
    MLPActor,
    SpikingActor,
    actor_kwargs_for_env,
    build_actor,
    dsrl_threshold,
    is_builtin,
    resolve_factory,
)
from policies.capabilities import Capability, MissingCapability, detect, require
from policies.critics import TwinQCritic
from policies.normalizer import RunningNormalizer

__all__ = [
    "ACTORS",
    "Capability",
    "MLPActor",
    "MissingCapability",
    "RunningNormalizer",
    "SpikingActor",
    "TwinQCritic",
    "actor_kwargs_for_env",
    "build_actor",
    "detect",
    "dsrl_threshold",
    "is_builtin",
    "require",
    "resolve_factory",
]
