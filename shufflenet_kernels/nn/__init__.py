"""Modules over the fused ops."""

from .layers import ChannelShuffle, ConcatShuffle, DepthwiseConv2d, PointwiseConv2d

__all__ = ["ChannelShuffle", "ConcatShuffle", "DepthwiseConv2d", "PointwiseConv2d"]
