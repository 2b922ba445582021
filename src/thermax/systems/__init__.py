"""Classical Hamiltonians."""

from ._base import AbstractSystem
from ._spins import MAX_ENUMERATION_SITES, Ising2D, SherringtonKirkpatrick

__all__ = ["MAX_ENUMERATION_SITES", "AbstractSystem", "Ising2D", "SherringtonKirkpatrick"]
