"""SAC with the actors of :mod:`policies`, on TD3's replay learner (docs/algorithms.md)."""

from spikerl_ray.sac.sac import SpikingSAC, SpikingSACConfig

__all__ = ["SpikingSAC", "SpikingSACConfig"]
