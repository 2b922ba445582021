"""Classical Hamiltonians."""

from ._base import AbstractSystem
from ._fields import Phi4, RelaxedIsing, phi4_action
from ._particles import PARTICLE_DIMS, CoulombTrap
from ._spins import MAX_ENUMERATION_SITES, Ising2D, SherringtonKirkpatrick

__all__ = ["MAX_ENUMERATION_SITES", "PARTICLE_DIMS", "AbstractSystem", "CoulombTrap", "Ising2D",
           "Phi4", "RelaxedIsing", "SherringtonKirkpatrick", "phi4_action"]
