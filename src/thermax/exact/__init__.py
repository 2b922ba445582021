"""Exact and reference results: Kaufman, Onsager, enumeration."""

from ._enumerate import (
    MAX_SPINS,
    all_spin_configurations,
    enumerate_free_energy,
    enumerate_thermodynamics,
)
from ._ising import kaufman_log_z, onsager_free_energy_per_site

__all__ = ["MAX_SPINS", "all_spin_configurations", "enumerate_free_energy",
           "enumerate_thermodynamics", "kaufman_log_z", "onsager_free_energy_per_site"]
