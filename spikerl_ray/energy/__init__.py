"""Energy, carbon and GPS-UP. The readers, the node monitor, the accounting and GPS-UP need no
Ray (they also run on a GPU machine without it); :mod:`spikerl_ray.energy.meter` runs one
monitor per node as Ray actors."""

from spikerl_ray.energy.accounting import (
    CARBON_REGIONS,
    DEFAULT_CARBON_INTENSITY,
    ENERGY_COLUMNS,
    ENERGY_FILE,
    EnergyLedger,
    carbon_intensity,
    load_energy,
)

__all__ = [
    "CARBON_REGIONS",
    "DEFAULT_CARBON_INTENSITY",
    "ENERGY_COLUMNS",
    "ENERGY_FILE",
    "EnergyLedger",
    "carbon_intensity",
    "load_energy",
]
