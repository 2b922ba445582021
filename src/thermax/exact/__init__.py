"""Exact and reference results: Kaufman, Onsager, enumeration, the phi^4 reference, the
Coulomb pair and Coulomb-cluster ground states."""

from ._coulomb import (
    SHELL_GAP,
    WIGNER_2D,
    CoulombGroundState,
    coulomb_ground_state,
    coulomb_pair_free_energy,
    coulomb_pair_log_z,
)
from ._enumerate import (
    MAX_SPINS,
    all_spin_configurations,
    enumerate_free_energy,
    enumerate_thermodynamics,
)
from ._fermions import (
    ELECTRON_GAS_2D_POLARISED,
    MAX_SETS,
    QUANTUM_DOT_REFERENCE,
    FreeFermionThermodynamics,
    all_sets,
    free_fermion_ground_state,
    free_fermion_log_z,
    free_fermion_thermodynamics,
    oscillator_levels_2d,
    oscillator_orbitals_2d,
    suffix_log_esp,
)
from ._ising import kaufman_log_z, onsager_free_energy_per_site
from ._kaufman_thermo import ising_thermodynamics, ising_thermodynamics_curve
from ._phi4 import (
    PHI4_REFERENCE,
    phi4_hopping,
    phi4_reference_free_energy,
    phi4_reference_lookup,
    phi4_site_log_z,
    phi4_thermodynamic_integration,
)

__all__ = ["MAX_SPINS", "PHI4_REFERENCE", "SHELL_GAP", "WIGNER_2D", "CoulombGroundState",
           "all_spin_configurations", "coulomb_ground_state", "coulomb_pair_free_energy",
           "coulomb_pair_log_z", "enumerate_free_energy", "enumerate_thermodynamics",
           "ising_thermodynamics", "ising_thermodynamics_curve",
           "kaufman_log_z", "onsager_free_energy_per_site", "phi4_hopping",
           "phi4_reference_free_energy", "phi4_reference_lookup", "phi4_site_log_z",
           "phi4_thermodynamic_integration"]
__all__ += ["ELECTRON_GAS_2D_POLARISED", "MAX_SETS", "QUANTUM_DOT_REFERENCE",
            "FreeFermionThermodynamics", "all_sets",
            "free_fermion_ground_state", "free_fermion_log_z", "free_fermion_thermodynamics",
            "oscillator_levels_2d", "oscillator_orbitals_2d", "suffix_log_esp"]
