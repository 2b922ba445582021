"""Classical Hamiltonians."""

from ._base import AbstractSystem
from ._fields import Phi4, RelaxedIsing, phi4_action
from ._spins import MAX_ENUMERATION_SITES, Ising2D, SherringtonKirkpatrick

__all__ = ["MAX_ENUMERATION_SITES", "AbstractSystem", "Ising2D", "Phi4", "RelaxedIsing",
           "SherringtonKirkpatrick", "phi4_action"]
