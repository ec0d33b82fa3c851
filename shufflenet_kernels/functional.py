"""Functional API: typed wrappers over ``torch.ops.shufflenet`` / ``shufflenet_triton``.

Every function keeps the input's memory format (NCHW in -> NCHW out,
channels_last in -> channels_last out), accepts channel slices of larger tensors
(``x.chunk(2, 1)[1]``) without copying them, and is differentiable.
``backend`` picks the implementation on GPU tensors (see ``shufflenet_kernels.backend``).

The four functions are leaves for ``torch.fx.symbolic_trace`` (``torch.fx.wrap``): a
traced graph calls them, so the implementation is still chosen from the tensors'
device when the graph runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import backend as _backend
from .backend import Backend


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
