"""Python side of the ``shufflenet`` ops: fake (meta) kernels, and the autograd formulas
of the Triton ops.

The schemas are declared in C++ (``csrc/ops.cpp``); the CPU and CUDA kernels are
registered there too, and so are the autograd kernels of the four differentiable ops
(``csrc/autograd.cpp``: a Python formula would cost microseconds per call). This module
adds, for every op, a fake kernel whose output shape *and strides* equal the real
kernel's (the output keeps the input's suggested memory format), so ``torch.compile``
traces the ops without graph breaks.

The fused inference ops ``v2_unit``, ``v2_unit_`` (in place) and ``conv3x3_relu_maxpool``
have fake kernels and no autograd formula: their Autograd kernels (C++, ``csrc/ops.cpp``) refuse tensors that
require grad while grad mode is on.

``register_autograd_for(namespace)`` registers the same formulas as the C++ autograd
kernels in Python, for the Triton ops (``shufflenet_triton``), which share the schemas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch._prims_common import suggest_memory_format

from . import _loader

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_DEPTHWISE_KERNEL = 7


def output_memory_format(t: Tensor) -> torch.memory_format:
    """Memory format of an op's output: the input's suggested format.

    channels_last in, channels_last out; a channel slice of a channels_last tensor
    counts as channels_last. Same rule as ``Tensor::suggest_memory_format`` in C++.
    """
    return suggest_memory_format(t)


def conv_output_size(size: Any, kernel: int, stride: int, padding: int, dilation: int) -> Any:
    """Output extent of a convolution along one dimension.

    Meaningful only when the padded input holds one dilated window
    (``size + 2*padding >= dilation*(kernel - 1) + 1``); ``check_depthwise_conv2d_args``
    checks that first.
    """
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


# ---- checks (mirror csrc/common/checks.cpp; used by the fake kernels) ----------


def _check_dtype(t: Tensor, op: str, name: str) -> None:
    ok = t.dtype in _FLOAT_DTYPES or (t.dtype == torch.float64 and t.device.type == "cpu")
    torch._check(ok, lambda: f"{op}: {name} has dtype {t.dtype}, expected float32, float16 or bfloat16")


def _check_rank(t: Tensor, op: str, name: str, lo: int, hi: int) -> None:
    torch._check(
        lo <= t.dim() <= hi,
        lambda: f"{op}: {name} must have rank {lo} to {hi}, got {t.dim()}-D tensor of shape {tuple(t.shape)}",
    )


def _check_same(input: Tensor, other: Tensor, op: str, name: str) -> None:
    torch._check(other.device == input.device, lambda: f"{op}: {name} is on {other.device} but input is on "
                 f"{input.device}; expected both on the same device")
    torch._check(other.dtype == input.dtype, lambda: f"{op}: {name} has dtype {other.dtype} but input has dtype "
                 f"{input.dtype}; expected the same dtype")


def _check_groups(groups: int, channels: Any, op: str, name: str, what: str) -> None:
    torch._check(groups > 0, lambda: f"{op}: {name} must be positive, got {groups}")
    torch._check(channels % groups == 0, lambda: f"{op}: {what} ({channels}) must be divisible by {name} ({groups})")


def check_channel_shuffle_args(input: Tensor, groups: int) -> None:
    _check_rank(input, "channel_shuffle", "input", 3, 5)
    _check_dtype(input, "channel_shuffle", "input")
    _check_groups(groups, input.shape[1], "channel_shuffle", "groups", "number of channels of input")


def check_concat_shuffle_args(a: Tensor, b: Tensor, groups: int) -> None:
    op = "concat_shuffle"
    _check_rank(a, op, "a", 3, 5)
    _check_dtype(a, op, "a")
    _check_same(a, b, op, "b")
    torch._check(b.dim() == a.dim(), lambda: f"{op}: b must have the rank of a ({a.dim()}), got {b.dim()}")
    for d in range(a.dim()):
        if d != 1:
            torch._check(a.shape[d] == b.shape[d], lambda: f"{op}: a and b must match in every dim but 1, got "
                         f"a of shape {tuple(a.shape)} and b of shape {tuple(b.shape)}")
    _check_groups(groups, a.shape[1] + b.shape[1], op, "groups", "total channels of a and b")


def check_pointwise_conv_args(
    input: Tensor, weight: Tensor, bias: Tensor | None, groups: int, shuffle_groups: int
) -> None:
    op = "pointwise_conv"
    _check_rank(input, op, "input", 4, 4)
    _check_dtype(input, op, "input")
    _check_rank(weight, op, "weight", 4, 4)
    _check_same(input, weight, op, "weight")
    _check_groups(groups, input.shape[1], op, "groups", "input channels")
    c_out = weight.shape[0]
    torch._check(c_out > 0, lambda: f"{op}: weight must have at least one output channel")
    _check_groups(groups, c_out, op, "groups", "weight.size(0) (output channels)")
    torch._check(
        weight.shape[1] == input.shape[1] // groups and weight.shape[2] == 1 and weight.shape[3] == 1,
        lambda: f"{op}: weight must have shape [C_out, C_in/groups, 1, 1] = [{c_out}, "
        f"{input.shape[1] // groups}, 1, 1], got {tuple(weight.shape)}",
    )
    _check_groups(shuffle_groups, c_out, op, "shuffle_groups", "output channels")
    if bias is not None:
        _check_same(input, bias, op, "bias")
        torch._check(bias.dim() == 1 and bias.shape[0] == c_out,
                     lambda: f"{op}: bias must have shape [{c_out}], got {tuple(bias.shape)}")


def check_depthwise_conv2d_args(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> tuple[Any, Any]:
    """Validates the arguments; returns the output's spatial size (H_out, W_out)."""
    op = "depthwise_conv2d"
    _check_rank(input, op, "input", 4, 4)
    _check_dtype(input, op, "input")
    _check_rank(weight, op, "weight", 4, 4)
    _check_same(input, weight, op, "weight")
    channels = input.shape[1]
    torch._check(weight.shape[0] == channels and weight.shape[1] == 1,
                 lambda: f"{op}: weight must have shape [C, 1, kH, kW] with C = {channels}, got {tuple(weight.shape)}")
    torch._check(len(stride) == 2 and len(padding) == 2 and len(dilation) == 2,
                 lambda: f"{op}: stride, padding and dilation must have 2 elements each")
    out = []
    for d in range(2):
        k = weight.shape[2 + d]
        torch._check(
            1 <= k <= MAX_DEPTHWISE_KERNEL,
            lambda: f"{op}: unsupported kernel size {weight.shape[2]}x{weight.shape[3]} (weight), "
            f"each extent must be in [1, {MAX_DEPTHWISE_KERNEL}]",
        )
        torch._check(stride[d] > 0, lambda: f"{op}: stride must be positive, got {list(stride)}")
        torch._check(padding[d] >= 0, lambda: f"{op}: padding must be non-negative, got {list(padding)}")
        torch._check(dilation[d] > 0, lambda: f"{op}: dilation must be positive, got {list(dilation)}")
        # The padded input must hold one whole dilated window (checked on the sizes
        # themselves, not on the output size, whose rounding hides a short input).
        padded = input.shape[2 + d] + 2 * padding[d]
        window = dilation[d] * (k - 1) + 1
        torch._check(
            padded >= window,
            lambda d=d, padded=padded, window=window: f"{op}: input spatial size {list(input.shape[2:])} is too "
            f"small for kernel {list(weight.shape[2:])} with padding {list(padding)} and dilation "
            f"{list(dilation)} (dim {d}: padded input extent {padded} < dilated kernel extent {window})",
        )
        out.append(conv_output_size(input.shape[2 + d], k, stride[d], padding[d], dilation[d]))
    if bias is not None:
        _check_same(input, bias, op, "bias")
        torch._check(bias.dim() == 1 and bias.shape[0] == channels,
                     lambda: f"{op}: bias must have shape [{channels}], got {tuple(bias.shape)}")
    return out[0], out[1]


class V2UnitShape(NamedTuple):
    """Sizes of a ``v2_unit`` call (``V2UnitShape`` in csrc/common/checks.h)."""

    n: Any
    h_out: Any
    w_out: Any
    c_branch: Any  # channels entering the branch's first 1x1 conv (and the projection)
    c_mid: Any  # first 1x1 conv's outputs = depthwise channels
    c_half: Any  # second 1x1 conv's outputs = half the output channels


def _check_v2_weight(input: Tensor, weight: Tensor, name: str, expected: tuple, what: str) -> None:
    op = "v2_unit"
    torch._check(weight.dim() == 4, lambda: f"{op}: {name} must be 4-D, got {weight.dim()}-D tensor of shape "
                 f"{tuple(weight.shape)}")
    _check_same(input, weight, op, name)
    torch._check(tuple(weight.shape) == tuple(expected),
                 lambda: f"{op}: {name} must have shape {list(expected)} ({what}), got {list(weight.shape)}")


def _check_v2_bias(input: Tensor, bias: Tensor | None, name: str, size: Any) -> None:
    if bias is None:
        return
    _check_same(input, bias, "v2_unit", name)
    torch._check(bias.dim() == 1 and bias.shape[0] == size,
                 lambda: f"v2_unit: {name} must have shape [{size}], got {list(bias.shape)}")


def check_v2_unit_args(
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
) -> V2UnitShape:
    """Validates ``v2_unit``'s arguments (``check_v2_unit_args`` in C++); returns its sizes."""
    op = "v2_unit"
    torch._check(input.dim() == 4, lambda: f"{op}: input must be 4-D, got {input.dim()}-D tensor of shape "
                 f"{tuple(input.shape)}")
    _check_dtype(input, op, "input")
    torch._check(stride in (1, 2), lambda: f"{op}: stride must be 1 or 2, got {stride}")
    n, channels, h, w = input.shape
    torch._check(h >= 1 and w >= 1, lambda: f"{op}: input spatial size {list(input.shape[2:])} must be at least 1x1")
    proj = {"proj_dw_weight": proj_dw_weight, "proj_dw_bias": proj_dw_bias, "proj_pw_weight": proj_pw_weight,
            "proj_pw_bias": proj_pw_bias}
    projection = stride == 2
    if not projection:
        for name, t in proj.items():
            torch._check(t is None, lambda name=name: f"{op}: {name} must be None with stride 1 (the unit has no "
                         "projection branch)")
        torch._check(channels % 2 == 0, lambda: f"{op}: with stride 1 the input channels ({channels}) must be even "
                     "(the unit splits them in two halves)")
    else:
        torch._check(proj_dw_weight is not None, lambda: f"{op}: proj_dw_weight must be given with stride 2")
        torch._check(proj_pw_weight is not None, lambda: f"{op}: proj_pw_weight must be given with stride 2")
    c_branch = channels if projection else channels // 2
    torch._check(c_branch > 0, lambda: f"{op}: input must have at least {1 if projection else 2} channels, "
                 f"got {channels}")
    torch._check(pw1_weight.dim() == 4, lambda: f"{op}: pw1_weight must be 4-D, got {pw1_weight.dim()}-D tensor")
    c_mid = pw1_weight.shape[0]
    torch._check(c_mid > 0, lambda: f"{op}: pw1_weight must have at least one output channel")
    _check_v2_weight(input, pw1_weight, "pw1_weight", (c_mid, c_branch, 1, 1), "[C_mid, C_in, 1, 1]" if projection
                     else "[C_mid, C_in/2, 1, 1]")
    _check_v2_bias(input, pw1_bias, "pw1_bias", c_mid)
    _check_v2_weight(input, dw_weight, "dw_weight", (c_mid, 1, 3, 3),
                     "[C_mid, 1, 3, 3]: a 3x3 depthwise weight over pw1_weight's outputs")
    _check_v2_bias(input, dw_bias, "dw_bias", c_mid)
    torch._check(pw2_weight.dim() == 4, lambda: f"{op}: pw2_weight must be 4-D, got {pw2_weight.dim()}-D tensor")
    c_half = pw2_weight.shape[0] if projection else c_branch
    torch._check(c_half > 0, lambda: f"{op}: pw2_weight must have at least one output channel")
    _check_v2_weight(input, pw2_weight, "pw2_weight", (c_half, c_mid, 1, 1),
                     "[C_out/2, C_mid, 1, 1]" if projection else "[C_in/2, C_mid, 1, 1]")
    _check_v2_bias(input, pw2_bias, "pw2_bias", c_half)
    if projection:
        assert proj_dw_weight is not None and proj_pw_weight is not None
        _check_v2_weight(input, proj_dw_weight, "proj_dw_weight", (c_branch, 1, 3, 3),
                         "[C_in, 1, 3, 3]: a 3x3 depthwise weight over the input")
        _check_v2_bias(input, proj_dw_bias, "proj_dw_bias", c_branch)
        _check_v2_weight(input, proj_pw_weight, "proj_pw_weight", (c_half, c_branch, 1, 1), "[C_out/2, C_in, 1, 1]")
        _check_v2_bias(input, proj_pw_bias, "proj_pw_bias", c_half)
    return V2UnitShape(n, conv_output_size(h, 3, stride, 1, 1), conv_output_size(w, 3, stride, 1, 1),
                       c_branch, c_mid, c_half)


def check_v2_unit_inplace_args(
    buffer: Tensor,
    branch_channels: Tensor,
    pw1_weight: Tensor,
    pw1_bias: Tensor | None,
    dw_weight: Tensor,
    dw_bias: Tensor | None,
    pw2_weight: Tensor,
    pw2_bias: Tensor | None,
) -> None:
    """Validates ``v2_unit_``'s shapes, dtypes and devices (``check_v2_unit_inplace_args`` in
    C++); the index values (distinct, in ``[0, C)``) are checked by the kernels."""
    op = "v2_unit_"
    _check_rank(buffer, op, "buffer", 4, 4)
    _check_dtype(buffer, op, "buffer")
    n, channels, h, w = buffer.shape
    torch._check(h >= 1 and w >= 1, lambda: f"{op}: buffer spatial size {list(buffer.shape[2:])} must be at least 1x1")
    torch._check(branch_channels.dim() == 1 and branch_channels.dtype == torch.int64,
                 lambda: f"{op}: branch_channels must be a 1-D int64 tensor, got {branch_channels.dim()}-D "
                 f"{branch_channels.dtype}")
    torch._check(branch_channels.device.type == "cpu",
                 lambda: f"{op}: branch_channels must be a CPU tensor, got {branch_channels.device}")
    c_branch = branch_channels.shape[0]
    torch._check(1 <= c_branch <= channels, lambda: f"{op}: branch_channels must hold between 1 and {channels} "
                 f"(the buffer's channels) indices, got {c_branch}")

    def weight(t: Tensor, name: str, expected: tuple, what: str) -> None:
        _check_rank(t, op, name, 4, 4)
        _check_same(buffer, t, op, name)
        torch._check(tuple(t.shape) == tuple(expected),
                     lambda: f"{op}: {name} must have shape {list(expected)} ({what}), got {list(t.shape)}")

    def bias(b: Tensor | None, name: str, size: Any) -> None:
        if b is None:
            return
        _check_same(buffer, b, op, name)
        torch._check(b.dim() == 1 and b.shape[0] == size,
                     lambda: f"{op}: {name} must have shape [{size}], got {list(b.shape)}")

    _check_rank(pw1_weight, op, "pw1_weight", 4, 4)
    c_mid = pw1_weight.shape[0]
    torch._check(c_mid > 0, lambda: f"{op}: pw1_weight must have at least one output channel")
    weight(pw1_weight, "pw1_weight", (c_mid, c_branch, 1, 1), "[C_mid, B, 1, 1], B = branch_channels.numel()")
    bias(pw1_bias, "pw1_bias", c_mid)
    weight(dw_weight, "dw_weight", (c_mid, 1, 3, 3),
           "[C_mid, 1, 3, 3]: a 3x3 depthwise weight over pw1_weight's outputs")
    bias(dw_bias, "dw_bias", c_mid)
    weight(pw2_weight, "pw2_weight", (c_branch, c_mid, 1, 1), "[B, C_mid, 1, 1]: one output per branch channel")
    bias(pw2_bias, "pw2_bias", c_branch)


def check_grad_output(grad_output: Tensor, sizes: Sequence[Any], like: Tensor, op: str) -> None:
    """grad_output has ``sizes`` and ``like``'s dtype and device (``check_grad_output`` in C++)."""
    torch._check(
        tuple(grad_output.shape) == tuple(sizes),
        lambda: f"{op}: grad_output must have shape {list(sizes)}, got {list(grad_output.shape)}",
    )
    _check_same(like, grad_output, op, "grad_output")


def check_relu_output(relu_output: Tensor | None, sizes: Sequence[Any], like: Tensor, op: str) -> None:
    """relu_output (when given) has ``sizes`` and ``like``'s dtype and device."""
    if relu_output is None:
        return
    torch._check(
        tuple(relu_output.shape) == tuple(sizes),
        lambda: f"{op}: relu_output must have shape {list(sizes)}, got {list(relu_output.shape)}",
    )
    _check_same(like, relu_output, op, "relu_output")


def check_output_mask(output_mask: Sequence[bool], op: str) -> None:
    torch._check(len(output_mask) == 3, lambda: f"{op}: output_mask must have 3 elements, got {len(output_mask)}")


def check_concat_shuffle_backward_args(grad_output: Tensor, groups: int, channels_a: int) -> None:
    op = "concat_shuffle_backward"
    _check_rank(grad_output, op, "grad_output", 3, 5)
    _check_dtype(grad_output, op, "grad_output")
    channels = grad_output.shape[1]
    _check_groups(groups, channels, op, "groups", "channels of grad_output")
    torch._check(
        0 <= channels_a <= channels,
        lambda: f"{op}: channels_a must be in [0, {channels}] (channels of grad_output), got {channels_a}",
    )


def check_pointwise_conv_backward_args(
    grad_output: Tensor,
    input: Tensor,
    weight: Tensor,
    relu_output: Tensor | None,
    groups: int,
    shuffle_groups: int,
    output_mask: Sequence[bool],
) -> None:
    op = "pointwise_conv_backward"
    check_pointwise_conv_args(input, weight, None, groups, shuffle_groups)
    n, _, h, w = input.shape
    sizes = (n, weight.shape[0], h, w)
    check_grad_output(grad_output, sizes, input, op)
    check_relu_output(relu_output, sizes, input, op)
    check_output_mask(output_mask, op)


def check_depthwise_conv2d_backward_args(
    grad_output: Tensor,
    input: Tensor,
    weight: Tensor,
    relu_output: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    output_mask: Sequence[bool],
) -> None:
    op = "depthwise_conv2d_backward"
    h_out, w_out = check_depthwise_conv2d_args(input, weight, None, stride, padding, dilation)
    sizes = (input.shape[0], input.shape[1], h_out, w_out)
    check_grad_output(grad_output, sizes, input, op)
    check_relu_output(relu_output, sizes, input, op)
    check_output_mask(output_mask, op)


# ---- fake kernels ------------------------------------------------------------



class StemShape(NamedTuple):
    """Sizes of a ``conv3x3_relu_maxpool`` call (``StemShape`` in csrc/common/checks.h)."""

    n: Any
    c_out: Any
    h_out: Any  # after the stride-2 conv and the stride-2 pool
    w_out: Any


def check_conv3x3_relu_maxpool_args(input: Tensor, weight: Tensor, bias: Tensor | None) -> StemShape:
    """Validates ``conv3x3_relu_maxpool``'s arguments (C++: ``check_conv3x3_relu_maxpool_args``)."""
    op = "conv3x3_relu_maxpool"
    def check_4d(t: Tensor, name: str) -> None:
        torch._check(t.dim() == 4, lambda: f"{op}: {name} must be 4-D, got {t.dim()}-D tensor of shape "
                     f"{tuple(t.shape)}")

    check_4d(input, "input")
    _check_dtype(input, op, "input")
    n, c_in, h, w = input.shape
    torch._check(c_in >= 1, lambda: f"{op}: input must have at least one channel, got shape {tuple(input.shape)}")
    torch._check(h >= 1 and w >= 1, lambda: f"{op}: input spatial size {list(input.shape[2:])} must be at least 1x1")
    check_4d(weight, "weight")
    _check_same(input, weight, op, "weight")
    c_out = weight.shape[0]
    torch._check(c_out >= 1, lambda: f"{op}: weight must have at least one output channel, got shape "
                 f"{tuple(weight.shape)}")
    torch._check(tuple(weight.shape[1:]) == (c_in, 3, 3), lambda: f"{op}: weight must have shape "
                 f"[{c_out}, {c_in}, 3, 3] ([C_out, C_in, 3, 3], C_in = input channels), got {list(weight.shape)}")
    if bias is not None:
        _check_same(input, bias, op, "bias")
        torch._check(bias.dim() == 1 and bias.shape[0] == c_out,
                     lambda: f"{op}: bias must have shape [{c_out}], got {list(bias.shape)}")
    h_conv, w_conv = conv_output_size(h, 3, 2, 1, 1), conv_output_size(w, 3, 2, 1, 1)
    return StemShape(n, c_out, conv_output_size(h_conv, 3, 2, 1, 1), conv_output_size(w_conv, 3, 2, 1, 1))

def _empty(sizes: Sequence[Any], like: Tensor) -> Tensor:
    return torch.empty(sizes, dtype=like.dtype, device=like.device, memory_format=output_memory_format(like))


def _not_requested(like: Tensor) -> Tensor:
    """Placeholder for a gradient that output_mask did not ask for."""
    return like.new_empty((0,))


def _register_fakes() -> None:
    @torch.library.register_fake("shufflenet::channel_shuffle")
    def _channel_shuffle_fake(input: Tensor, groups: int) -> Tensor:
        check_channel_shuffle_args(input, groups)
        return _empty(input.shape, input)

    @torch.library.register_fake("shufflenet::concat_shuffle")
    def _concat_shuffle_fake(a: Tensor, b: Tensor, groups: int) -> Tensor:
        check_concat_shuffle_args(a, b, groups)
        sizes = list(a.shape)
        sizes[1] = a.shape[1] + b.shape[1]
        return _empty(sizes, a)

    @torch.library.register_fake("shufflenet::concat_shuffle_backward")
    def _concat_shuffle_backward_fake(grad_output: Tensor, groups: int, channels_a: int) -> tuple[Tensor, Tensor]:
        check_concat_shuffle_backward_args(grad_output, groups, channels_a)
        sizes_a = list(grad_output.shape)
        sizes_b = list(grad_output.shape)
        sizes_a[1] = channels_a
        sizes_b[1] = grad_output.shape[1] - channels_a
        return _empty(sizes_a, grad_output), _empty(sizes_b, grad_output)

    @torch.library.register_fake("shufflenet::pointwise_conv")
    def _pointwise_conv_fake(
        input: Tensor, weight: Tensor, bias: Tensor | None, groups: int, shuffle_groups: int, relu: bool
    ) -> Tensor:
        check_pointwise_conv_args(input, weight, bias, groups, shuffle_groups)
        n, _, h, w = input.shape
        return _empty((n, weight.shape[0], h, w), input)

    @torch.library.register_fake("shufflenet::pointwise_conv_backward")
    def _pointwise_conv_backward_fake(
        grad_output: Tensor,
        input: Tensor,
        weight: Tensor,
        relu_output: Tensor | None,
        groups: int,
        shuffle_groups: int,
        output_mask: Sequence[bool],
    ) -> tuple[Tensor, Tensor, Tensor]:
        check_pointwise_conv_backward_args(grad_output, input, weight, relu_output, groups, shuffle_groups, output_mask)
        gi = _empty(input.shape, input) if output_mask[0] else _not_requested(input)
        gw = weight.new_empty(weight.shape) if output_mask[1] else _not_requested(weight)
        gb = weight.new_empty((weight.shape[0],)) if output_mask[2] else _not_requested(weight)
        return gi, gw, gb

    @torch.library.register_fake("shufflenet::depthwise_conv2d")
    def _depthwise_conv2d_fake(
        input: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        stride: Sequence[int],
        padding: Sequence[int],
        dilation: Sequence[int],
        relu: bool,
    ) -> Tensor:
        h_out, w_out = check_depthwise_conv2d_args(input, weight, bias, stride, padding, dilation)
        return _empty((input.shape[0], input.shape[1], h_out, w_out), input)

    @torch.library.register_fake("shufflenet::depthwise_conv2d_backward")
    def _depthwise_conv2d_backward_fake(
        grad_output: Tensor,
        input: Tensor,
        weight: Tensor,
        relu_output: Tensor | None,
        stride: Sequence[int],
        padding: Sequence[int],
        dilation: Sequence[int],
        output_mask: Sequence[bool],
    ) -> tuple[Tensor, Tensor, Tensor]:
        check_depthwise_conv2d_backward_args(
            grad_output, input, weight, relu_output, stride, padding, dilation, output_mask
        )
        gi = _empty(input.shape, input) if output_mask[0] else _not_requested(input)
        gw = weight.new_empty(weight.shape) if output_mask[1] else _not_requested(weight)
        gb = weight.new_empty((weight.shape[0],)) if output_mask[2] else _not_requested(weight)
        return gi, gw, gb

    @torch.library.register_fake("shufflenet::v2_unit")
    def _v2_unit_fake(
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
        shape = check_v2_unit_args(input, proj_dw_weight, proj_dw_bias, proj_pw_weight, proj_pw_bias, pw1_weight,
                                   pw1_bias, dw_weight, dw_bias, pw2_weight, pw2_bias, stride)
        return _empty((shape.n, 2 * shape.c_half, shape.h_out, shape.w_out), input)


    @torch.library.register_fake("shufflenet::conv3x3_relu_maxpool")
    def _conv3x3_relu_maxpool_fake(input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        shape = check_conv3x3_relu_maxpool_args(input, weight, bias)
        # Always channels_last, whatever the input's layout (as the CPU kernel writes it).
        return torch.empty((shape.n, shape.c_out, shape.h_out, shape.w_out), dtype=input.dtype,
                           device=input.device, memory_format=torch.channels_last)

    @torch.library.register_fake("shufflenet::v2_unit_")
    def _v2_unit_inplace_fake(
        buffer: Tensor,
        branch_channels: Tensor,
        pw1_weight: Tensor,
        pw1_bias: Tensor | None,
        dw_weight: Tensor,
        dw_bias: Tensor | None,
        pw2_weight: Tensor,
        pw2_bias: Tensor | None,
    ) -> None:
        check_v2_unit_inplace_args(buffer, branch_channels, pw1_weight, pw1_bias, dw_weight, dw_bias, pw2_weight,
                                   pw2_bias)


# ---- autograd ----------------------------------------------------------------


def register_autograd_for(namespace: str) -> None:
    """Registers the autograd formulas of the four forward ops of ``namespace``.

    Each backward calls the namespace's own ops (channel_shuffle,
    concat_shuffle_backward, pointwise_conv_backward, depthwise_conv2d_backward).
    The formulas are those of the C++ autograd kernels of ``shufflenet``
    (``csrc/autograd.cpp``); keep the two in step.
    """
    ops = getattr(torch.ops, namespace)

    def shuffle_setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
        input, groups = inputs
        ctx.inverse_groups = input.shape[1] // groups

    def shuffle_backward(ctx: Any, grad: Tensor) -> tuple:
        return ops.channel_shuffle(grad, ctx.inverse_groups), None

    torch.library.register_autograd(
        f"{namespace}::channel_shuffle", shuffle_backward, setup_context=shuffle_setup
    )

    def concat_setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
        a, _b, groups = inputs
        ctx.groups = groups
        ctx.channels_a = a.shape[1]

    def concat_backward(ctx: Any, grad: Tensor) -> tuple:
        ga, gb = ops.concat_shuffle_backward(grad, ctx.groups, ctx.channels_a)
        return ga, gb, None

    torch.library.register_autograd(
        f"{namespace}::concat_shuffle", concat_backward, setup_context=concat_setup
    )

    def pointwise_setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
        input, weight, bias, groups, shuffle_groups, relu = inputs
        ctx.save_for_backward(input, weight, output if relu else None)
        ctx.groups = groups
        ctx.shuffle_groups = shuffle_groups
        ctx.has_bias = bias is not None

    def pointwise_backward(ctx: Any, grad: Tensor) -> tuple:
        input, weight, relu_output = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
        gi, gw, gb = ops.pointwise_conv_backward(
            grad, input, weight, relu_output, ctx.groups, ctx.shuffle_groups, mask
        )
        return (gi if mask[0] else None, gw if mask[1] else None, gb if mask[2] else None, None, None, None)

    torch.library.register_autograd(
        f"{namespace}::pointwise_conv", pointwise_backward, setup_context=pointwise_setup
    )

    def depthwise_setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
        input, weight, bias, stride, padding, dilation, relu = inputs
        ctx.save_for_backward(input, weight, output if relu else None)
        ctx.conv_args = (list(stride), list(padding), list(dilation))
        ctx.has_bias = bias is not None

    def depthwise_backward(ctx: Any, grad: Tensor) -> tuple:
        input, weight, relu_output = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
        gi, gw, gb = ops.depthwise_conv2d_backward(grad, input, weight, relu_output, *ctx.conv_args, mask)
        return (gi if mask[0] else None, gw if mask[1] else None, gb if mask[2] else None,
                None, None, None, None)

    torch.library.register_autograd(
        f"{namespace}::depthwise_conv2d", depthwise_backward, setup_context=depthwise_setup
    )


if _loader.NATIVE_AVAILABLE:
    _register_fakes()
