"""Plain-PyTorch reference implementations: the ground truth the kernels are checked against.

Nothing here calls ``torch.ops.shufflenet``. The shuffle is the view/transpose
form, the convolutions are ``nn.Conv2d``/``F.conv2d``, concatenation is
``torch.cat``, and the units follow torchvision's ``InvertedResidual`` (V2) and
the ShuffleNet V1 paper's unit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """``[N, C, *spatial]`` -> same shape; output channel ``i*groups + g`` is input ``g*(C/groups) + i``."""
    n, c = x.shape[:2]
    rest = x.shape[2:]
    return x.reshape(n, groups, c // groups, *rest).transpose(1, 2).reshape(n, c, *rest)


def pointwise_conv(
    x: Tensor, weight: Tensor, bias: Tensor | None, groups: int, shuffle_groups: int, relu: bool
) -> Tensor:
    """``channel_shuffle(act(conv2d(x, weight, bias, groups=groups)), shuffle_groups)``."""
    y = F.conv2d(x, weight, bias, groups=groups)
    if relu:
        y = F.relu(y)
    return channel_shuffle(y, shuffle_groups) if shuffle_groups > 1 else y


def depthwise_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Sequence[int] = (1, 1),
    padding: Sequence[int] = (1, 1),
    dilation: Sequence[int] = (1, 1),
    relu: bool = False,
) -> Tensor:
    """``act(conv2d(x, weight, bias, stride, padding, dilation, groups=C))``; weight ``[C, 1, kH, kW]``."""
    y = F.conv2d(x, weight, bias, tuple(stride), tuple(padding), tuple(dilation), groups=x.shape[1])
    return F.relu(y) if relu else y


def concat_shuffle(a: Tensor, b: Tensor, groups: int) -> Tensor:
    """``channel_shuffle(torch.cat([a, b], 1), groups)``."""
    return channel_shuffle(torch.cat([a, b], 1), groups)


def v2_unit(
    input: Tensor,
    proj_dw_weight: Tensor | None,
    proj_dw_bias: Tensor | None,
    proj_pw_weight: Tensor | None,
    proj_pw_bias: Tensor | None,
    pw1_weight: Tensor,
    pw1_bias: Tensor | None,
    dw_weight: Tensor,
    dw_bias: Tensor | None,
    pw2_weight: Tensor,
    pw2_bias: Tensor | None,
    stride: int,
) -> Tensor:
    """One ShuffleNet V2 unit with BN folded (the ``v2_unit`` op), from ``F.conv2d``.

    stride 1: input ``[N, 2B, H, W]``, ``x1, x2 = input.chunk(2, 1)``,
    ``y = relu(pw2(dw(relu(pw1(x2)))))``, output ``concat_shuffle(x1, y, 2)``.
    stride 2: ``p = relu(proj_pw(proj_dw(input, stride 2)))``, ``y`` as above on the whole
    input with the depthwise conv at stride 2, output ``concat_shuffle(p, y, 2)``, of
    spatial size ``ceil(H/2) x ceil(W/2)``. Depthwise convs are 3x3 with padding 1, no ReLU.
    """

    def branch(x: Tensor) -> Tensor:
        y = pointwise_conv(x, pw1_weight, pw1_bias, 1, 1, True)
        y = depthwise_conv2d(y, dw_weight, dw_bias, (stride, stride), (1, 1))
        return pointwise_conv(y, pw2_weight, pw2_bias, 1, 1, True)

    if stride == 1:
        x1, x2 = input.chunk(2, dim=1)
        return concat_shuffle(x1, branch(x2), 2)
    assert proj_dw_weight is not None and proj_pw_weight is not None, "stride 2 needs the projection weights"
    p = depthwise_conv2d(input, proj_dw_weight, proj_dw_bias, (stride, stride), (1, 1))
    p = pointwise_conv(p, proj_pw_weight, proj_pw_bias, 1, 1, True)
    return concat_shuffle(p, branch(input), 2)


def conv3x3_relu_maxpool(input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The ShuffleNet stem (the ``conv3x3_relu_maxpool`` op): conv 3x3 stride 2 padding 1,
    ReLU, max pool 3x3 stride 2 padding 1; ``[N, C_in, H, W]`` -> ``[N, C_out, H'', W'']``."""
    return F.max_pool2d(F.relu(F.conv2d(input, weight, bias, stride=2, padding=1)), 3, 2, 1)


def v2_unit_(
    buffer: Tensor,
    branch_channels: Tensor,
    pw1_weight: Tensor,
    pw1_bias: Tensor | None,
    dw_weight: Tensor,
    dw_bias: Tensor | None,
    pw2_weight: Tensor,
    pw2_bias: Tensor | None,
) -> Tensor:
    """The stride-1 V2 unit in place on channels ``branch_channels`` of ``buffer`` (the
    ``v2_unit_`` op), from ``F.conv2d``: ``x = buffer[:, branch_channels]``,
    ``y = relu(pw2(dw(relu(pw1(x)))))`` (depthwise 3x3, stride 1, padding 1, no ReLU),
    ``buffer[:, branch_channels[i]] = y[:, i]``. Returns ``buffer``."""
    x = buffer.index_select(1, branch_channels)
    y = pointwise_conv(x, pw1_weight, pw1_bias, 1, 1, True)
    y = depthwise_conv2d(y, dw_weight, dw_bias, (1, 1), (1, 1))
    y = pointwise_conv(y, pw2_weight, pw2_bias, 1, 1, True)
    return buffer.index_copy_(1, branch_channels, y)


class ChannelShuffle(nn.Module):
    """Reference channel shuffle module."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        return channel_shuffle(x, self.groups)


class PointwiseConv2d(nn.Module):
    """Grouped 1x1 conv, optional ReLU, then channel shuffle (``shuffle_groups`` 1 = none)."""

    def __init__(
        self, in_channels: int, out_channels: int, groups: int = 1, shuffle_groups: int = 1,
        bias: bool = False, relu: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, groups=groups, bias=bias)
        self.shuffle_groups = shuffle_groups
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        return pointwise_conv(x, self.conv.weight, self.conv.bias, self.conv.groups, self.shuffle_groups, self.relu)


class DepthwiseConv2d(nn.Module):
    """Depthwise conv (groups = channels), optional ReLU."""

    def __init__(
        self, channels: int, kernel_size: int = 3, stride: int = 1, padding: int | None = None,
        dilation: int = 1, bias: bool = False, relu: bool = False,
    ) -> None:
        super().__init__()
        pad = dilation * (kernel_size - 1) // 2 if padding is None else padding
        self.conv = nn.Conv2d(channels, channels, kernel_size, stride, pad, dilation, groups=channels, bias=bias)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return F.relu(y) if self.relu else y


class ConcatShuffle(nn.Module):
    """``channel_shuffle(cat([a, b], 1), groups)``."""

    def __init__(self, groups: int = 2) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return concat_shuffle(a, b, self.groups)


class ShuffleV2Unit(nn.Module):
    """torchvision's ``InvertedResidual`` (ShuffleNet V2 unit), same module names.

    stride 1: split channels in half, branch2 on the second half, concat, shuffle(2).
    stride 2: branch1 (dw 3x3 s2 -> BN -> 1x1 -> BN -> ReLU) and branch2 on the whole input.
    """

    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        if not 1 <= stride <= 3:
            raise ValueError(f"ShuffleV2Unit: stride must be in [1, 3], got {stride}")
        self.stride = stride
        branch_features = oup // 2
        if stride == 1 and inp != branch_features << 1:
            raise ValueError(f"ShuffleV2Unit: with stride 1, inp ({inp}) must equal oup ({oup})")
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, branch_features, 1, bias=False),
                nn.BatchNorm2d(branch_features),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else branch_features, branch_features, 1, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
            nn.Conv2d(branch_features, branch_features, 3, stride, 1, groups=branch_features, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.Conv2d(branch_features, branch_features, 1, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleV1Unit(nn.Module):
    """ShuffleNet V1 unit (paper Fig. 2b/2c).

    1x1 group conv (groups, or 1 when ``first_group`` is False) -> BN -> ReLU -> shuffle
    -> 3x3 depthwise (stride) -> BN -> 1x1 group conv -> BN, then add the input (stride 1)
    or concat a 3x3 avg-pooled input (stride 2), then ReLU. Bottleneck = out/4.
    """

    def __init__(self, inp: int, oup: int, groups: int, stride: int, first_group: bool = True) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ShuffleV1Unit: stride must be 1 or 2, got {stride}")
        self.stride = stride
        self.groups = groups
        out_branch = oup - inp if stride == 2 else oup
        if stride == 1 and inp != oup:
            raise ValueError(f"ShuffleV1Unit: with stride 1, inp ({inp}) must equal oup ({oup})")
        mid = oup // 4
        g1 = groups if first_group else 1
        self.first_groups = g1
        self.conv1 = nn.Conv2d(inp, mid, 1, groups=g1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_branch, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_branch)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        if self.first_groups > 1:
            y = channel_shuffle(y, self.first_groups)
        y = self.bn2(self.conv2(y))
        y = self.bn3(self.conv3(y))
        if self.stride == 1:
            return F.relu(x + y)
        return F.relu(torch.cat([F.avg_pool2d(x, 3, 2, 1), y], 1))
