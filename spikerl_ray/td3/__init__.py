"""TD3 for spiking and ANN actors on RLlib's new API stack."""

from spikerl_ray.td3.td3 import TD3, TD3Config

__all__ = ["TD3", "TD3Config"]
