"""Free-energy objectives, gradient estimators and batch statistics."""

from ._free_energy import AbstractFreeEnergy, ScoreFunctionFreeEnergy
from ._pathwise import PathwiseFreeEnergy, stop_gradient_parameters
from ._stats import FreeEnergyStats, ImportanceStats, mean_and_stderr

__all__ = ["AbstractFreeEnergy", "FreeEnergyStats", "ImportanceStats", "PathwiseFreeEnergy",
           "ScoreFunctionFreeEnergy", "mean_and_stderr", "stop_gradient_parameters"]
