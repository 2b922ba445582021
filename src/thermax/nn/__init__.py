"""Neural-network building blocks: masked layers, autoregressive networks, conditioners,
velocity fields and potentials of continuous flows."""

from ._autoregressive import MADE, AbstractMaskedChain, PixelCNN
from ._conditioners import AbstractConditioner, ConvConditioner, MLPConditioner
from ._masked import AbstractMaskedOp, MaskedConv2d, MaskedDense, prelu
from ._sets import AbstractSetNet, SetMADE, SetTransformer
from ._velocity import AbstractVelocityField, jacobian_trace
from ._velocity_fields import (
    AbstractPotential,
    BackflowField,
    ConvPotential,
    MLPPotential,
    MLPVelocity,
    MongeAmpereField,
    OneHiddenLayerPotential,
    ParticlePotential,
    SymmetrizedPotential,
    TranslationInvariantPotential,
)

__all__ = ["MADE", "AbstractConditioner", "AbstractMaskedChain", "AbstractMaskedOp",
           "AbstractPotential", "AbstractVelocityField", "BackflowField", "ConvConditioner",
           "ConvPotential",
           "MLPConditioner", "MLPPotential", "MLPVelocity", "MaskedConv2d", "MaskedDense",
           "MongeAmpereField", "OneHiddenLayerPotential", "ParticlePotential", "PixelCNN",
           "SymmetrizedPotential", "TranslationInvariantPotential", "jacobian_trace",
           "prelu"]
__all__ += ["AbstractSetNet", "SetMADE", "SetTransformer"]
