"""RLlib's PPO with the actors of :mod:`policies` (docs/algorithms.md)."""

from spikerl_ray.ppo.ppo import SpikingPPO, SpikingPPOConfig

__all__ = ["SpikingPPO", "SpikingPPOConfig"]
