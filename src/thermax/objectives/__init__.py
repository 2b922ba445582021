"""Free-energy objectives, gradient estimators and batch statistics."""

from ._free_energy import AbstractFreeEnergy, ScoreFunctionFreeEnergy
from ._pathwise import PathwiseFreeEnergy, stop_gradient_parameters
from ._stats import FreeEnergyStats, ImportanceStats, mean_and_stderr
from ._thermodynamics import free_energy_derivatives

__all__ = ["AbstractFreeEnergy", "FreeEnergyStats", "ImportanceStats", "PathwiseFreeEnergy",
           "ScoreFunctionFreeEnergy", "free_energy_derivatives", "mean_and_stderr",
           "stop_gradient_parameters"]
