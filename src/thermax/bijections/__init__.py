"""Bijections: invertible maps with exact log-Jacobians, the layers of normalizing flows."""

from ._affine import Affine, ElementwiseAffine
from ._base import AbstractBijection
from ._chain import Chain, Invert, Scan
from ._coupling import AffineCoupling, channel_mask, checkerboard_mask
from ._elementwise import SinhArcsinh
from ._neuralrg import NeuralRG, PlaquetteRealNVP
from ._realnvp import lattice_real_nvp
from ._spectral import SpectralScale

__all__ = ["AbstractBijection", "Affine", "AffineCoupling", "Chain", "ElementwiseAffine",
           "Invert", "NeuralRG", "PlaquetteRealNVP", "Scan", "SinhArcsinh", "SpectralScale",
           "channel_mask",
           "checkerboard_mask", "lattice_real_nvp"]
