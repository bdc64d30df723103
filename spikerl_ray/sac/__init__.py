"""RLlib's SAC with the actors of :mod:`policies` (docs/algorithms.md)."""

from spikerl_ray.sac.sac import SpikingSAC, SpikingSACConfig

__all__ = ["SpikingSAC", "SpikingSACConfig"]
