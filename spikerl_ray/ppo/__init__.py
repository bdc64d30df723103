"""RLlib's PPO with the actors of :mod:`policies` (REFERENCE.md, "The spiking actor under
RLlib's SAC and PPO")."""

from spikerl_ray.ppo.ppo import SpikingPPO, SpikingPPOConfig

__all__ = ["SpikingPPO", "SpikingPPOConfig"]
