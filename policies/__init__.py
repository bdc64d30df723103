"""Spiking and ANN actors, critics and observation normalization in plain PyTorch.

This package never imports Ray: networks can be built, tested and exported on their own.
"""

from policies.actors import (
    ACTORS,
    MLPActor,
    SpikingActor,
    actor_kwargs_for_env,
    build_actor,
    dsrl_threshold,
)
from policies.critics import TwinQCritic
from policies.normalizer import RunningNormalizer

__all__ = [
    "ACTORS",
    "MLPActor",
    "RunningNormalizer",
    "SpikingActor",
    "TwinQCritic",
    "actor_kwargs_for_env",
    "build_actor",
    "dsrl_threshold",
]
