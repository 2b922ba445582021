"""Neural-network building blocks: masked layers, autoregressive networks, conditioners."""

from ._autoregressive import MADE, AbstractMaskedChain, PixelCNN
from ._conditioners import AbstractConditioner, ConvConditioner, MLPConditioner
from ._masked import AbstractMaskedOp, MaskedConv2d, MaskedDense, prelu

__all__ = ["MADE", "AbstractConditioner", "AbstractMaskedChain", "AbstractMaskedOp",
           "ConvConditioner", "MLPConditioner", "MaskedConv2d", "MaskedDense", "PixelCNN",
           "prelu"]
