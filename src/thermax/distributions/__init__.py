"""Normalized distributions with exact ``ln p`` and direct sampling."""

from ._autoregressive import AutoregressiveSpins, Z2Symmetrized
from ._base import AbstractDistribution, check_shape, sample_batch

__all__ = ["AbstractDistribution", "AutoregressiveSpins", "Z2Symmetrized", "check_shape",
           "sample_batch"]
