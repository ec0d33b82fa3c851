"""Memory-access cost (MAC) and FLOPs of every op, from shapes and the element size.

MAC, as the ShuffleNet V2 paper defines it, is the memory an op must touch: the bytes
of every tensor it reads once (inputs, weights, bias; for a backward op also the saved
tensors it needs) plus the bytes of every tensor it writes once (outputs). It is the
floor of the traffic any implementation has, so ``mac_bytes / time`` is the bandwidth
an implementation achieves and can be compared with a device-to-device copy.

FLOPs are counted as **multiply-adds** (one per product accumulated), the convention of
the ShuffleNet papers; bias additions, ReLU and pure data movement count zero, and so do
the additions of a gradient reduction (``grad_bias``). Convolution taps that fall in the
zero padding are counted, as in the papers' tables.

Shapes are ``[N, C, H, W]`` tuples; ``elem_size`` is bytes per element (see
``dtype_size``). Every function returns a ``Cost`` whose ``mac_bytes`` and ``flops`` are
exact integers. The paper's element-count forms for a 1x1 convolution are at the end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "Cost",
    "channel_shuffle_backward_cost",
    "channel_shuffle_cost",
    "concat_shuffle_backward_cost",
    "concat_shuffle_cost",
    "conv1x1_flops",
    "conv1x1_mac",
    "conv1x1_mac_groups",
    "conv1x1_mac_lower_bound",
    "conv3x3_relu_maxpool_cost",
    "conv_output_hw",
    "copy_cost",
    "depthwise_conv2d_backward_cost",
    "depthwise_conv2d_cost",
    "dtype_size",
    "numel",
    "pointwise_conv_backward_cost",
    "pointwise_conv_cost",
    "v2_unit_cost",
]


@dataclass(frozen=True)
class Cost:
    """Bytes an op must read and write once (``mac_bytes``) and its multiply-adds (``flops``)."""

    mac_bytes: int
    flops: int

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.mac_bytes + other.mac_bytes, self.flops + other.flops)

    @property
    def arithmetic_intensity(self) -> float:
        """Multiply-adds per byte moved (0 for pure data movement)."""
        return self.flops / self.mac_bytes if self.mac_bytes else 0.0


def dtype_size(dtype: torch.dtype) -> int:
    """Bytes per element of ``dtype`` (4 for float32, 2 for float16/bfloat16, 8 for float64)."""
    return torch.empty((), dtype=dtype).element_size()


def numel(shape: Sequence[int]) -> int:
    """Number of elements of a tensor of ``shape``."""
    return math.prod(int(s) for s in shape)


def _check_nchw(shape: Sequence[int], name: str) -> tuple[int, int, int, int]:
    if len(shape) != 4:
        raise ValueError(f"{name} must be a 4-D shape [N, C, H, W], got {tuple(shape)}")
    n, c, h, w = (int(s) for s in shape)
    return n, c, h, w


def _check_groups(groups: int, channels: int, name: str, what: str) -> None:
    if groups <= 0 or channels % groups:
        raise ValueError(f"{name} ({groups}) must be positive and divide {what} ({channels})")


def conv_output_hw(
    h: int,
    w: int,
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> tuple[int, int]:
    """Output ``(H_out, W_out)`` of a 2-D convolution (same formula as ``nn.Conv2d``)."""
    out = [
        (size + 2 * padding[d] - dilation[d] * (kernel[d] - 1) - 1) // stride[d] + 1
        for d, size in enumerate((h, w))
    ]
    return out[0], out[1]


def copy_cost(nbytes: int) -> Cost:
    """``dst.copy_(src)`` of ``nbytes``: reads and writes ``nbytes`` each, so MAC = 2 * nbytes."""
    return Cost(2 * int(nbytes), 0)


# ---- data movement ---------------------------------------------------------------


def channel_shuffle_cost(shape: Sequence[int], elem_size: int) -> Cost:
    """``channel_shuffle`` of a tensor of ``shape`` (any rank): read it once, write it once."""
    return Cost(2 * numel(shape) * elem_size, 0)


def channel_shuffle_backward_cost(shape: Sequence[int], elem_size: int) -> Cost:
    """Backward of ``channel_shuffle``: the inverse shuffle of the gradient (same bytes)."""
    return channel_shuffle_cost(shape, elem_size)


def concat_shuffle_cost(shape_a: Sequence[int], shape_b: Sequence[int], elem_size: int) -> Cost:
    """``concat_shuffle(a, b, groups)``: read ``a`` and ``b`` once, write the ``[N, Ca+Cb, ...]`` output once.

    A channel slice input (the V2 split) is read in place: only its own elements count.
    """
    moved = numel(shape_a) + numel(shape_b)
    return Cost(2 * moved * elem_size, 0)


def concat_shuffle_backward_cost(grad_shape: Sequence[int], channels_a: int, elem_size: int) -> Cost:
    """``concat_shuffle_backward``: read ``grad_output`` once, write ``grad_a`` and ``grad_b`` once."""
    if not 0 <= channels_a <= grad_shape[1]:
        raise ValueError(f"channels_a ({channels_a}) must be in [0, {grad_shape[1]}]")
    return Cost(2 * numel(grad_shape) * elem_size, 0)


# ---- 1x1 (pointwise) convolution --------------------------------------------------


def pointwise_conv_cost(
    input_shape: Sequence[int],
    out_channels: int,
    groups: int,
    elem_size: int,
    *,
    bias: bool = False,
    relu: bool = False,
    shuffle_groups: int = 1,
) -> Cost:
    """``pointwise_conv``: input ``[N, C_in, H, W]`` -> output ``[N, C_out, H, W]``.

    Reads input (N*C_in*H*W), weight (C_out*C_in/groups) and bias (C_out); writes the
    output (N*C_out*H*W). FLOPs = N*H*W*C_in*C_out/groups multiply-adds. ReLU and the
    shuffle are fused into the store, so they add neither bytes nor FLOPs (``relu`` and
    ``shuffle_groups`` are accepted so a caller can pass the op's arguments unchanged).
    """
    n, c_in, h, w = _check_nchw(input_shape, "input_shape")
    _check_groups(groups, c_in, "groups", "input channels")
    _check_groups(groups, out_channels, "groups", "output channels")
    _check_groups(shuffle_groups, out_channels, "shuffle_groups", "output channels")
    del relu  # fused: no extra memory pass
    weight = out_channels * (c_in // groups)
    elems = n * c_in * h * w + weight + (out_channels if bias else 0) + n * out_channels * h * w
    return Cost(elems * elem_size, n * h * w * c_in * out_channels // groups)


def pointwise_conv_backward_cost(
    input_shape: Sequence[int],
    out_channels: int,
    groups: int,
    elem_size: int,
    *,
    relu: bool = False,
    output_mask: Sequence[bool] = (True, True, False),
) -> Cost:
    """``pointwise_conv_backward`` for the gradients ``output_mask`` asks for.

    Reads grad_output (N*C_out*H*W); the saved forward output when ``relu`` (same size,
    it masks the gradient); the saved input only when grad_weight is asked for; the
    weight only when grad_input is asked for. Writes grad_input (N*C_in*H*W),
    grad_weight (C_out*C_in/groups) and grad_bias (C_out) as asked.
    FLOPs: N*H*W*C_in*C_out/groups multiply-adds for each of grad_input and grad_weight.
    """
    n, c_in, h, w = _check_nchw(input_shape, "input_shape")
    _check_groups(groups, c_in, "groups", "input channels")
    _check_groups(groups, out_channels, "groups", "output channels")
    want_input, want_weight, want_bias = (bool(m) for m in output_mask)
    if not (want_input or want_weight or want_bias):
        return Cost(0, 0)
    x = n * c_in * h * w
    y = n * out_channels * h * w
    weight = out_channels * (c_in // groups)
    gemm = n * h * w * c_in * out_channels // groups
    elems = y + (y if relu else 0)
    flops = 0
    if want_input:
        elems += weight + x
        flops += gemm
    if want_weight:
        elems += x + weight
        flops += gemm
    if want_bias:
        elems += out_channels
    return Cost(elems * elem_size, flops)


# ---- depthwise convolution ----------------------------------------------------------


def depthwise_conv2d_cost(
    input_shape: Sequence[int],
    kernel_size: Sequence[int],
    elem_size: int,
    *,
    stride: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0),
    dilation: Sequence[int] = (1, 1),
    bias: bool = False,
    relu: bool = False,
) -> Cost:
    """``depthwise_conv2d``: input ``[N, C, H, W]``, weight ``[C, 1, kH, kW]`` -> ``[N, C, H_out, W_out]``.

    Reads input (N*C*H*W), weight (C*kH*kW) and bias (C) once; writes the output once.
    FLOPs = N*C*H_out*W_out*kH*kW multiply-adds. ReLU is fused (no bytes, no FLOPs).
    """
    n, c, h, w = _check_nchw(input_shape, "input_shape")
    del relu
    kh, kw = (int(k) for k in kernel_size)
    ho, wo = conv_output_hw(h, w, (kh, kw), stride, padding, dilation)
    out = n * c * ho * wo
    elems = n * c * h * w + c * kh * kw + (c if bias else 0) + out
    return Cost(elems * elem_size, out * kh * kw)


def depthwise_conv2d_backward_cost(
    input_shape: Sequence[int],
    kernel_size: Sequence[int],
    elem_size: int,
    *,
    stride: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0),
    dilation: Sequence[int] = (1, 1),
    relu: bool = False,
    output_mask: Sequence[bool] = (True, True, False),
) -> Cost:
    """``depthwise_conv2d_backward`` for the gradients ``output_mask`` asks for.

    Reads grad_output (N*C*H_out*W_out); the saved forward output when ``relu``; the
    saved input only for grad_weight; the weight only for grad_input. Writes grad_input
    (N*C*H*W), grad_weight (C*kH*kW) and grad_bias (C) as asked.
    FLOPs: N*C*H_out*W_out*kH*kW multiply-adds for each of grad_input and grad_weight.
    """
    n, c, h, w = _check_nchw(input_shape, "input_shape")
    want_input, want_weight, want_bias = (bool(m) for m in output_mask)
    if not (want_input or want_weight or want_bias):
        return Cost(0, 0)
    kh, kw = (int(k) for k in kernel_size)
    ho, wo = conv_output_hw(h, w, (kh, kw), stride, padding, dilation)
    x = n * c * h * w
    y = n * c * ho * wo
    weight = c * kh * kw
    elems = y + (y if relu else 0)
    flops = 0
    if want_input:
        elems += weight + x
        flops += y * kh * kw
    if want_weight:
        elems += x + weight
        flops += y * kh * kw
    if want_bias:
        elems += c
    return Cost(elems * elem_size, flops)


# ---- fused units ---------------------------------------------------------------------


def v2_unit_cost(
    input_shape: Sequence[int],
    out_channels: int,
    stride: int,
    elem_size: int,
    *,
    mid_channels: int | None = None,
    bias: bool = True,
) -> Cost:
    """``v2_unit``: one ShuffleNet V2 unit, BN folded, input ``[N, C, H, W]`` -> ``[N, out_channels, H', W']``.

    The fused op reads its input once and writes its output once; nothing in between
    goes to memory. So MAC = input (N*C*H*W; with stride 1 both halves: the kept half is
    copied, the other feeds the branch) + output (N*out_channels*H'*W', H' = ceil(H/stride))
    + every weight once: with B = out_channels/2, branch input C_b (C/2 with stride 1, C with
    stride 2) and M = ``mid_channels`` (default B): 1x1 ``M*C_b``, depthwise ``9*M``, 1x1 ``B*M``,
    and with stride 2 the projection's depthwise ``9*C_b`` and 1x1 ``B*C_b``; plus a bias per
    conv output channel when ``bias`` (BN folded gives each conv one).
    FLOPs (multiply-adds): ``H*W*C_b*M + H'*W'*(9*M + M*B)`` per image, plus ``H'*W'*(9*C_b + C_b*B)``
    for the projection.
    """
    n, c, h, w = _check_nchw(input_shape, "input_shape")
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    if out_channels <= 0 or out_channels % 2:
        raise ValueError(f"out_channels ({out_channels}) must be positive and even")
    half = out_channels // 2
    if stride == 1 and c != out_channels:
        raise ValueError(f"with stride 1, the input channels ({c}) must equal out_channels ({out_channels})")
    branch = c if stride == 2 else c // 2
    mid = half if mid_channels is None else int(mid_channels)
    ho, wo = conv_output_hw(h, w, (3, 3), (stride, stride), (1, 1), (1, 1))
    weights = mid * branch + 9 * mid + half * mid
    biases = 2 * mid + half
    flops = n * (h * w * branch * mid + ho * wo * (9 * mid + mid * half))
    if stride == 2:
        weights += 9 * branch + half * branch
        biases += branch + half
        flops += n * ho * wo * (9 * branch + branch * half)
    elems = n * c * h * w + n * out_channels * ho * wo + weights + (biases if bias else 0)
    return Cost(elems * elem_size, flops)


def conv3x3_relu_maxpool_cost(
    input_shape: Sequence[int], out_channels: int, elem_size: int, *, bias: bool = True
) -> Cost:
    """``conv3x3_relu_maxpool``: the stem, input ``[N, C, H, W]`` -> ``[N, out_channels, H'', W'']``.

    The conv map (``H' = floor((H - 1) / 2) + 1``) is pooled as it is made, so it never goes
    to memory: MAC = input + pooled output (``H'' = floor((H' - 1) / 2) + 1``) + weight
    ``out_channels*C*9`` (+ bias ``out_channels``). FLOPs (multiply-adds): the conv's,
    ``N*H'*W'*out_channels*C*9`` (the pool's comparisons are not counted).
    """
    n, c, h, w = _check_nchw(input_shape, "input_shape")
    if out_channels <= 0:
        raise ValueError(f"out_channels must be positive, got {out_channels}")
    hc, wc = conv_output_hw(h, w, (3, 3), (2, 2), (1, 1), (1, 1))
    ho, wo = conv_output_hw(hc, wc, (3, 3), (2, 2), (1, 1), (1, 1))
    elems = n * c * h * w + n * out_channels * ho * wo + out_channels * c * 9 + (out_channels if bias else 0)
    return Cost(elems * elem_size, n * hc * wc * out_channels * c * 9)


# ---- the paper's forms (ShuffleNet V2, Sec. 2), in elements -----------------------------


def conv1x1_flops(h: int, w: int, c1: int, c2: int, groups: int = 1) -> float:
    """B = h*w*c1*c2/g multiply-adds of a 1x1 conv over an h x w map, c1 -> c2 channels, g groups."""
    return h * w * c1 * c2 / groups


def conv1x1_mac(h: int, w: int, c1: int, c2: int, groups: int = 1) -> float:
    """MAC = h*w*(c1 + c2) + c1*c2/g elements (input map + output map + weights), batch 1."""
    return h * w * (c1 + c2) + c1 * c2 / groups


def conv1x1_mac_lower_bound(h: int, w: int, flops: float) -> float:
    """G1 bound: with B = ``flops`` fixed, MAC >= 2*sqrt(h*w*B) + B/(h*w); equality at c1 = c2."""
    return 2.0 * math.sqrt(h * w * flops) + flops / (h * w)


def conv1x1_mac_groups(h: int, w: int, c1: int, flops: float, groups: int) -> float:
    """G2: with B and c1 fixed (c2 = B*g/(h*w*c1)), MAC = h*w*c1 + B*g/c1 + B/(h*w), growing with g."""
    return h * w * c1 + flops * groups / c1 + flops / (h * w)
