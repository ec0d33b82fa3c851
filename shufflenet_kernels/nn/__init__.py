"""Modules over the fused ops."""

from .layers import ChannelShuffle, ConcatShuffle, DepthwiseConv2d, PointwiseConv2d
from .units import ConvBNReLU, ShuffleV1Unit, ShuffleV2Unit, StemMaxPool
from .zero_copy import ZeroCopyConv, ZeroCopyStage

__all__ = [
    "ChannelShuffle",
    "ConcatShuffle",
    "ConvBNReLU",
    "DepthwiseConv2d",
    "PointwiseConv2d",
    "ShuffleV1Unit",
    "ShuffleV2Unit",
    "StemMaxPool",
    "ZeroCopyConv",
    "ZeroCopyStage",
]
