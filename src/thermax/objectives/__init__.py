"""Free-energy objectives, gradient estimators and batch statistics."""

from ._free_energy import AbstractFreeEnergy, ScoreFunctionFreeEnergy
from ._stats import FreeEnergyStats, ImportanceStats, mean_and_stderr

__all__ = ["AbstractFreeEnergy", "FreeEnergyStats", "ImportanceStats",
           "ScoreFunctionFreeEnergy", "mean_and_stderr"]
