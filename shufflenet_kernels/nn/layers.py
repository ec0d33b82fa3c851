"""Drop-in modules over the fused ops, with ``nn.Conv2d``-compatible parameters."""

from __future__ import annotations

from torch import Tensor, nn

from .. import functional as F
from ..backend import Backend, check_backend


class ChannelShuffle(nn.Module):
    """Channel shuffle (like ``nn.ChannelShuffle``) that keeps the memory format."""

    def __init__(self, groups: int, *, backend: Backend = "auto") -> None:
        super().__init__()
        check_backend(backend)
        self.groups = groups
        self.backend = backend

    def forward(self, x: Tensor) -> Tensor:
        return F.channel_shuffle(x, self.groups, backend=self.backend)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class ConcatShuffle(nn.Module):
    """``channel_shuffle(cat([a, b], 1), groups)`` in one pass (ShuffleNet V2's merge)."""

    def __init__(self, groups: int = 2, *, backend: Backend = "auto") -> None:
        super().__init__()
        check_backend(backend)
        self.groups = groups
        self.backend = backend

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return F.concat_shuffle(a, b, self.groups, backend=self.backend)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class PointwiseConv2d(nn.Conv2d):
    """Grouped 1x1 conv + optional ReLU + channel shuffle fused into the store.

    Parameters are those of ``nn.Conv2d(in_channels, out_channels, 1, groups=groups,
    bias=bias)``, so its weights load unchanged; ``shuffle_groups`` (1 = none) and
    ``relu`` select the fused epilogue.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        groups: int = 1,
        shuffle_groups: int = 1,
        bias: bool = False,
        relu: bool = False,
        *,
        backend: Backend = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(in_channels, out_channels, 1, groups=groups, bias=bias, device=device, dtype=dtype)
        check_backend(backend)
        if shuffle_groups <= 0 or out_channels % shuffle_groups != 0:
            raise ValueError(
                f"PointwiseConv2d: out_channels ({out_channels}) must be divisible by shuffle_groups ({shuffle_groups})"
            )
        self.shuffle_groups = shuffle_groups
        self.relu = relu
        self.backend = backend

    def forward(self, x: Tensor) -> Tensor:
        return F.pointwise_conv(
            x, self.weight, self.bias, self.groups, self.shuffle_groups, self.relu, backend=self.backend
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", shuffle_groups={self.shuffle_groups}, relu={self.relu}"


class DepthwiseConv2d(nn.Conv2d):
    """Depthwise conv (``groups = channels``) with fused bias and optional ReLU.

    Parameters are those of ``nn.Conv2d(channels, channels, kernel_size, stride,
    padding, dilation, groups=channels, bias=bias)``; padding defaults to "same" for
    stride 1 (``dilation * (kernel_size - 1) // 2``).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        bias: bool = False,
        relu: bool = False,
        *,
        backend: Backend = "auto",
        device=None,
        dtype=None,
    ) -> None:
        pad = dilation * (kernel_size - 1) // 2 if padding is None else padding
        super().__init__(
            channels, channels, kernel_size, stride, pad, dilation, groups=channels, bias=bias,
            device=device, dtype=dtype,
        )
        check_backend(backend)
        self.relu = relu
        self.backend = backend

    def forward(self, x: Tensor) -> Tensor:
        return F.depthwise_conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.relu, backend=self.backend
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", relu={self.relu}"
