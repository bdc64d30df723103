"""spikerl-ray: deep spiking reinforcement learning (SpikeRL, PopSAN, DSRL, ANN) on Ray.

Importing this package does not import Ray; the RLlib classes live in :mod:`spikerl_ray.td3`.
"""

__version__ = "0.1.0"
