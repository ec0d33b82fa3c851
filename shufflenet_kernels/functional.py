"""Functional API: typed wrappers over ``torch.ops.shufflenet`` / ``shufflenet_triton``.

Every function keeps the input's memory format (NCHW in -> NCHW out,
channels_last in -> channels_last out), accepts channel slices of larger tensors
(``x.chunk(2, 1)[1]``) without copying them, and is differentiable.
``backend`` picks the implementation on GPU tensors (see ``shufflenet_kernels.backend``).

The functions are leaves for ``torch.fx.symbolic_trace`` (``torch.fx.wrap``): a
traced graph calls them, so the implementation is still chosen from the tensors'
device when the graph runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import _loader
from . import backend as _backend
from .backend import AUTO_CHOICE, Backend, check_backend, has_triton_ops


def _pair(v: int | Sequence[int], name: str) -> list[int]:
    if isinstance(v, int):
        return [v, v]
    v = list(v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {v}")
    return v


@torch.fx.wrap
def channel_shuffle(input: Tensor, groups: int, *, backend: Backend = "auto") -> Tensor:
    """Channel shuffle, same result as ``torch.nn.functional.channel_shuffle``.

    input: ``[N, C, *spatial]`` (rank 3 to 5), ``C % groups == 0``.
    Returns the same shape; output channel ``i*groups + g`` is input channel ``g*(C/groups) + i``.
    """
    return _backend.op("channel_shuffle", backend, input)(input, groups)


@torch.fx.wrap
def concat_shuffle(a: Tensor, b: Tensor, groups: int = 2, *, backend: Backend = "auto") -> Tensor:
    """``channel_shuffle(torch.cat([a, b], 1), groups)`` in one pass.

    a: ``[N, Ca, *spatial]``, b: ``[N, Cb, *spatial]``; ``(Ca + Cb) % groups == 0``.
    Returns ``[N, Ca + Cb, *spatial]`` in a's memory format. With groups=2 and Ca == Cb
    (the ShuffleNet V2 case) output channel ``2i`` is ``a[:, i]`` and ``2i+1`` is ``b[:, i]``.
    """
    return _backend.op("concat_shuffle", backend, a)(a, b, groups)


@torch.fx.wrap
def pointwise_conv(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    groups: int = 1,
    shuffle_groups: int = 1,
    relu: bool = False,
    *,
    backend: Backend = "auto",
) -> Tensor:
    """Grouped 1x1 convolution with optional ReLU and the channel shuffle fused into the store.

    input: ``[N, C_in, H, W]``; weight: ``[C_out, C_in/groups, 1, 1]`` (nn.Conv2d layout);
    bias: ``[C_out]`` or None. Returns ``[N, C_out, H, W]`` equal to
    ``channel_shuffle(act(conv2d(input, weight, bias, groups=groups)), shuffle_groups)``
    (``shuffle_groups == 1``: no shuffle).
    """
    return _backend.op("pointwise_conv", backend, input)(input, weight, bias, groups, shuffle_groups, relu)


@torch.fx.wrap
def depthwise_conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    relu: bool = False,
    *,
    backend: Backend = "auto",
) -> Tensor:
    """Depthwise convolution (groups = channels) with fused bias and optional ReLU.

    input: ``[N, C, H, W]``; weight: ``[C, 1, kH, kW]`` with kH, kW in [1, 7]; bias ``[C]`` or None.
    Returns ``[N, C, H_out, W_out]`` = ``act(conv2d(input, weight, bias, stride, padding,
    dilation, groups=C))``.
    """
    return _backend.op("depthwise_conv2d", backend, input)(
        input, weight, bias, _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation"), relu
    )


_V2_UNIT_NAMESPACES: dict[tuple[str, str], str | None] = {}


@torch.compiler.assume_constant_result
def v2_unit_namespace(device_type: str, backend: Backend = "auto") -> str | None:
    """The op namespace whose ``v2_unit`` runs on ``device_type`` for ``backend``, or None.

    CPU: ``"shufflenet"`` (the C++ kernel). CUDA: the backend asked for when it has a
    ``v2_unit``, for ``"auto"`` the one ``AUTO_CHOICE`` names (Triton unless it says
    ``"cuda"``) or else the other. None when no implementation is registered.
    """
    key = (device_type, backend)
    if key not in _V2_UNIT_NAMESPACES:
        _V2_UNIT_NAMESPACES[key] = _find_v2_unit_namespace(device_type, backend)
    return _V2_UNIT_NAMESPACES[key]


def _find_v2_unit_namespace(device_type: str, backend: Backend) -> str | None:
    check_backend(backend)
    if device_type == "cpu":
        return "shufflenet"
    if device_type != "cuda":
        return None
    available = {
        "shufflenet": torch._C._dispatch_has_kernel_for_dispatch_key("shufflenet::v2_unit", "CUDA"),
        "shufflenet_triton": has_triton_ops() and hasattr(torch.ops.shufflenet_triton, "v2_unit"),
    }
    if backend == "cuda":
        order = ["shufflenet"]
    elif backend == "triton":
        order = ["shufflenet_triton"]
    else:
        order = ["shufflenet", "shufflenet_triton"]
        if AUTO_CHOICE.get("v2_unit", "triton") != "cuda":
            order.reverse()
    return next((ns for ns in order if available[ns]), None)


@torch.fx.wrap
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
    *,
    backend: Backend = "auto",
) -> Tensor:
    """One ShuffleNet V2 unit (torchvision's ``InvertedResidual``, eval mode, BN folded) in one call.

    stride 1: input ``[N, 2B, H, W]``; ``x1, x2`` = its channel halves;
    ``y = pointwise_conv(depthwise_conv2d(pointwise_conv(x2, pw1, relu), dw, 3x3 s1 p1), pw2, relu)``;
    returns ``concat_shuffle(x1, y, 2)``, ``[N, 2B, H, W]``. The ``proj_*`` arguments are None.
    stride 2: input ``[N, C, H, W]``; ``p = pointwise_conv(depthwise_conv2d(input, proj_dw, s2), proj_pw, relu)``,
    ``y`` as above on the whole input with the depthwise conv at stride 2; returns
    ``concat_shuffle(p, y, 2)``, ``[N, 2*pw2_weight.size(0), ceil(H/2), ceil(W/2)]``.
    Weights in ``nn.Conv2d`` layout (1x1: ``[C_out, C_in, 1, 1]``, depthwise ``[C, 1, 3, 3]``),
    biases ``[C_out]`` or None. Output in the input's memory format. Inference only: raises
    when a tensor argument requires grad while grad mode is on.
    """
    namespace = "shufflenet" if input.device.type == "cpu" else v2_unit_namespace(input.device.type, backend)
    if namespace is None:
        raise RuntimeError(f"v2_unit: no implementation for {input.device.type} tensors with backend={backend!r}")
    return getattr(torch.ops, namespace).v2_unit(
        input, proj_dw_weight, proj_dw_bias, proj_pw_weight, proj_pw_bias, pw1_weight, pw1_bias, dw_weight, dw_bias,
        pw2_weight, pw2_bias, stride,
    )


def conv3x3_relu_maxpool_available(device_type: str) -> bool:
    """Whether ``conv3x3_relu_maxpool`` has a kernel for ``device_type`` tensors (CPU only:
    the CUDA and Triton backends do not implement it)."""
    return device_type == "cpu" and _loader.NATIVE_AVAILABLE


@torch.fx.wrap
def conv3x3_relu_maxpool(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """The ShuffleNet stem in one pass: ``max_pool2d(relu(conv2d(input, weight, bias, stride=2,
    padding=1)), 3, stride=2, padding=1)``, without writing the conv map to memory.

    input: ``[N, C_in, H, W]`` in any layout (NCHW, channels_last and channel slices are read
    in place); weight: ``[C_out, C_in, 3, 3]``; bias: ``[C_out]`` or None. Returns
    ``[N, C_out, H'', W'']`` with ``H' = (H - 1) // 2 + 1``, ``H'' = (H' - 1) // 2 + 1`` (same
    for W), always in channels_last. CPU only (``conv3x3_relu_maxpool_available``); fast for
    float32 with a small C_in (the stem's 3). Inference only: raises when a tensor argument
    requires grad while grad mode is on.
    """
    if input.device.type != "cpu":
        raise RuntimeError(
            f"conv3x3_relu_maxpool: no implementation for {input.device.type} tensors (CPU only); use "
            "conv2d, relu and max_pool2d there"
        )
    return torch.ops.shufflenet.conv3x3_relu_maxpool(input, weight, bias)


@torch.fx.wrap
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
    """A stride-1 ShuffleNet V2 unit (eval mode, BN folded) in place on some channels of ``buffer``.

    buffer: ``[N, C, H, W]`` (CPU; float32, float16, bfloat16 or float64; any
    non-overlapping strides), written in place; branch_channels: int64 ``[B]``, distinct
    channel indices in ``[0, C)``. With ``x = buffer[:, branch_channels]`` (``[N, B, H, W]``,
    in the table's order), ``y = relu(pw2(dw(relu(pw1(x)))))`` (1x1, 3x3 depthwise stride 1
    padding 1, 1x1; weights ``[C_mid, B, 1, 1]``, ``[C_mid, 1, 3, 3]``, ``[B, C_mid, 1, 1]``,
    biases or None), then ``buffer[:, branch_channels[i]] = y[:, i]``; no other channel is
    read or written. Returns ``buffer``. ``v2_unit`` with stride 1 on an input ``x`` equals
    ``v2_unit_`` on ``x`` with ``branch_channels = [C/2, C)`` followed by the channel
    permutation ``out[2i] = x[i], out[2i+1] = x[C/2 + i]``: ``nn.zero_copy`` runs whole stages
    so, tracking the permutation instead of moving data. Inference only: raises when a
    tensor argument requires grad while grad mode is on.
    """
    torch.ops.shufflenet.v2_unit_(buffer, branch_channels, pw1_weight, pw1_bias, dw_weight, dw_bias, pw2_weight,
                                  pw2_bias)
    return buffer
