"""Bijections: invertible maps with exact log-Jacobians, the layers of normalizing flows."""

from ._affine import Affine, ElementwiseAffine, Identity, Scale
from ._base import AbstractBijection
from ._chain import Chain, Invert, Scan
from ._continuous import (
    ADJOINTS,
    RK4,
    SOLVERS,
    AbstractDivergence,
    ContinuousFlow,
    ExactDivergence,
    HutchinsonDivergence,
    continuous_flow,
    exact_log_det,
)
from ._coupling import AffineCoupling, channel_mask, checkerboard_mask
from ._elementwise import SinhArcsinh
from ._equivariant import (
    AbstractResidualBijection,
    Backflow,
    FermiNetLayer,
    backflow_flow,
    ferminet_flow,
)
from ._neuralrg import NeuralRG, PlaquetteRealNVP
from ._periodic import (
    PeriodicFermiNetLayer,
    minimum_image,
    periodic_distance,
    periodic_features,
    periodic_ferminet_flow,
)
from ._random_symmetry import AbstractRandomSymmetry, RandomLatticeSymmetry
from ._realnvp import lattice_real_nvp
from ._spectral import SpectralScale

__all__ = ["ADJOINTS", "RK4", "SOLVERS", "AbstractBijection", "AbstractDivergence",
           "AbstractRandomSymmetry", "AbstractResidualBijection", "Affine", "AffineCoupling",
           "Backflow", "Chain", "ContinuousFlow", "ElementwiseAffine", "ExactDivergence",
           "FermiNetLayer", "Identity", "RandomLatticeSymmetry", "backflow_flow",
           "ferminet_flow",
           "HutchinsonDivergence", "Invert", "NeuralRG", "PlaquetteRealNVP", "Scale", "Scan",
           "SinhArcsinh", "SpectralScale", "channel_mask", "checkerboard_mask",
           "continuous_flow", "exact_log_det", "lattice_real_nvp", "PeriodicFermiNetLayer",
           "minimum_image", "periodic_distance", "periodic_features",
           "periodic_ferminet_flow"]
