"""Normalized distributions with exact ``ln p`` and direct sampling."""

from ._autoregressive import AutoregressiveSpins, Z2Symmetrized
from ._base import AbstractDistribution, check_shape, sample_batch
from ._flow import StandardNormal, Transformed, lattice_flow
from ._sets import (
    AbstractSetDistribution,
    AutoregressiveSet,
    FreeFermionSets,
    allowed_states,
    pretrain_sets,
)

__all__ = ["AbstractDistribution", "AutoregressiveSpins", "StandardNormal", "Transformed",
           "Z2Symmetrized", "check_shape", "lattice_flow", "sample_batch"]
__all__ += ["AbstractSetDistribution", "AutoregressiveSet", "FreeFermionSets",
            "allowed_states", "pretrain_sets"]
