"""Neural-network building blocks: masked layers and autoregressive networks."""

from ._autoregressive import MADE, AbstractMaskedChain, PixelCNN
from ._masked import AbstractMaskedOp, MaskedConv2d, MaskedDense, prelu

__all__ = ["MADE", "AbstractMaskedChain", "AbstractMaskedOp", "MaskedConv2d", "MaskedDense",
           "PixelCNN", "prelu"]
