"""RLlib's SAC with the actors of :mod:`policies` (REFERENCE.md, "The spiking actor under
RLlib's SAC and PPO")."""

from spikerl_ray.sac.sac import SpikingSAC, SpikingSACConfig

__all__ = ["SpikingSAC", "SpikingSACConfig"]
