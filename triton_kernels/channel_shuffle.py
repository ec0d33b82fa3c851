"""Channel-gather family in Triton: channel_shuffle, concat_shuffle, concat_shuffle_backward.

All three are "output channel c copies channel src(c) of one of (at most) two
sources", done in one pass: each program copies a [BLOCK_C, BLOCK_S] tile of
(channels x pixels) of one image. Sources are read through their [N, C, S]
strides, so NCHW, channels_last and channel slices of either need no copy.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from shufflenet_kernels.ops import check_channel_shuffle_args, check_concat_shuffle_args

from ._common import INTERPRET, channel_view, empty_output, is_channels_last, launch, pow2_clamp, triton_op

# ---- kernels -----------------------------------------------------------------


@triton.jit
def _source_channel(c, channels, groups, INVERSE: tl.constexpr):
    """Channel of the (concatenated) source that output channel ``c`` reads.

    Forward shuffle: output c = i*groups + g holds source g*(channels/groups) + i.
    INVERSE (the gradient): output c holds source shuffle_dest(c), the place the
    forward sent channel c to. Same formulas as csrc/common/index.h.
    """
    per_group = channels // groups
    if INVERSE:
        return (c % per_group) * groups + c // per_group
    else:
        return (c % groups) * per_group + c // groups


@triton.jit
def _gather_channels_kernel(
    out_ptr,
    a_ptr,
    b_ptr,
    C,
    S,
    channels,
    groups,
    channels_a,
    c_offset,
    o_sn,
    o_sc,
    o_ss,
    a_sn,
    a_sc,
    a_ss,
    b_sn,
    b_sc,
    b_ss,
    num_c_blocks,
    num_s_blocks,
    BLOCK_C: tl.constexpr,
    BLOCK_S: tl.constexpr,
    HAS_B: tl.constexpr,
    INVERSE: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
):
    # One flat grid axis (no 65535 limit on the other axes). Consecutive programs
    # walk the layout's contiguous direction: pixels for NCHW, channels for NHWC.
    pid = tl.program_id(0).to(tl.int64)
    if CHANNELS_LAST:
        cb = pid % num_c_blocks
        rest = pid // num_c_blocks
        sb = rest % num_s_blocks
        n = rest // num_s_blocks
    else:
        sb = pid % num_s_blocks
        rest = pid // num_s_blocks
        cb = rest % num_c_blocks
        n = rest // num_c_blocks

    c = cb * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
    s = sb * BLOCK_S + tl.arange(0, BLOCK_S).to(tl.int64)
    c_mask = c < C
    mask = c_mask[:, None] & (s < S)[None, :]

    src = _source_channel(c + c_offset, channels, groups, INVERSE)
    if HAS_B:
        from_a = src < channels_a
        a_off = n * a_sn + src[:, None] * a_sc + s[None, :] * a_ss
        x = tl.load(a_ptr + a_off, mask=mask & from_a[:, None])
        b_off = n * b_sn + (src - channels_a)[:, None] * b_sc + s[None, :] * b_ss
        xb = tl.load(b_ptr + b_off, mask=mask & (~from_a)[:, None])
        x = tl.where(from_a[:, None], x, xb)
    else:
        x = tl.load(a_ptr + n * a_sn + src[:, None] * a_sc + s[None, :] * a_ss, mask=mask)
    tl.store(out_ptr + n * o_sn + c[:, None] * o_sc + s[None, :] * o_ss, x, mask=mask)


# ---- host launchers ------------------------------------------------------------

# NOTE: elements moved per program. A pure copy is bound by memory bandwidth; a
# 4096-element tile (16 KiB of fp32 in + out) with 8 warps keeps enough bytes in
# flight per SM on current GPUs. Educated default, not tuned on a GPU yet.
_TILE = 4096
# Under the interpreter each program costs Python overhead: use larger tiles.
_TILE_INTERPRET = 1 << 16


def _blocks(c: int, s: int, channels_last: bool) -> tuple[int, int, int]:
    """(BLOCK_C, BLOCK_S, num_warps) of a gather tile."""
    tile = _TILE_INTERPRET if INTERPRET else _TILE
    if channels_last:
        # A pixel's channels are contiguous: cover them first, then add pixels.
        block_c = pow2_clamp(c, 1, 512)
        block_s = pow2_clamp(min(s, tile // block_c), 1, tile)
    else:
        # A channel plane is contiguous: cover it first; small planes (7x7, 14x14)
        # batch several channels into one program so it still moves a full tile.
        block_s = pow2_clamp(s, 1, 2048 if not INTERPRET else tile)
        block_c = pow2_clamp(min(c, tile // block_s), 1, tile)
    num_warps = max(1, min(8, block_c * block_s // 512))
    return block_c, block_s, num_warps


def _gather(
    out: Tensor,
    a: Tensor,
    b: Tensor | None,
    channels: int,
    groups: int,
    channels_a: int,
    c_offset: int,
    inverse: bool,
) -> None:
    """out[:, c] = concat(a, b)[:, src(c + c_offset)] for every output channel c."""
    if out.numel() == 0:
        return
    out_t, (n, c, s, o_sn, o_sc, o_ss) = channel_view(out)
    a_t, (_, _, _, a_sn, a_sc, a_ss) = channel_view(a)
    if b is not None:
        b_t, (_, _, _, b_sn, b_sc, b_ss) = channel_view(b)
    else:
        b_t, b_sn, b_sc, b_ss = a_t, a_sn, a_sc, a_ss
    channels_last = is_channels_last(out)
    block_c, block_s, num_warps = _blocks(c, s, channels_last)
    num_c_blocks = triton.cdiv(c, block_c)
    num_s_blocks = triton.cdiv(s, block_s)
    grid = (n * num_c_blocks * num_s_blocks,)
    launch(_gather_channels_kernel)[grid](
        out_t,
        a_t,
        b_t,
        c,
        s,
        channels,
        groups,
        channels_a,
        c_offset,
        o_sn,
        o_sc,
        o_ss,
        a_sn,
        a_sc,
        a_ss,
        b_sn,
        b_sc,
        b_ss,
        num_c_blocks,
        num_s_blocks,
        BLOCK_C=block_c,
        BLOCK_S=block_s,
        HAS_B=b is not None,
        INVERSE=inverse,
        CHANNELS_LAST=channels_last,
        num_warps=num_warps,
    )


# ---- ops -------------------------------------------------------------------------


@triton_op("shufflenet_triton::channel_shuffle")
def channel_shuffle(input: Tensor, groups: int) -> Tensor:
    """``[N, C, *spatial]`` (rank 3 to 5) -> same shape and memory format; output
    channel ``i*groups + g`` is input channel ``g*(C/groups) + i``."""
    check_channel_shuffle_args(input, groups)
    out = empty_output(input.shape, input)
    channels = input.shape[1]
    _gather(out, input, None, channels, groups, channels, 0, inverse=False)
    return out


@triton_op("shufflenet_triton::concat_shuffle")
def concat_shuffle(a: Tensor, b: Tensor, groups: int) -> Tensor:
    """``channel_shuffle(cat([a, b], 1), groups)`` in one pass; output in ``a``'s memory format.

    ``a``: ``[N, Ca, *spatial]``, ``b``: ``[N, Cb, *spatial]`` (either may be a channel
    slice of a larger tensor); output ``[N, Ca + Cb, *spatial]``.
    """
    check_concat_shuffle_args(a, b, groups)
    sizes = list(a.shape)
    sizes[1] = a.shape[1] + b.shape[1]
    out = empty_output(sizes, a)
    _gather(out, a, b, sizes[1], groups, a.shape[1], 0, inverse=False)
    return out


@triton_op("shufflenet_triton::concat_shuffle_backward")
def concat_shuffle_backward(grad_output: Tensor, groups: int, channels_a: int) -> tuple[Tensor, Tensor]:
    """Gradient of concat_shuffle: un-shuffles ``grad_output`` ``[N, C, *spatial]`` and
    splits it at ``channels_a``; returns ``([N, channels_a, ...], [N, C - channels_a, ...])``
    in ``grad_output``'s memory format."""
    op = "concat_shuffle_backward"
    torch._check(
        3 <= grad_output.dim() <= 5,
        lambda: (
            f"{op}: grad_output must have rank 3 to 5 ([N, C, *spatial]), got {grad_output.dim()}-D tensor"
        ),
    )
    ok = grad_output.dtype in (torch.float32, torch.float16, torch.bfloat16) or (
        grad_output.dtype == torch.float64 and grad_output.device.type == "cpu"
    )
    torch._check(
        ok, lambda: f"{op}: grad_output has dtype {grad_output.dtype}, expected float32, float16 or bfloat16"
    )
    channels = grad_output.shape[1]
    torch._check(groups > 0, lambda: f"{op}: groups must be positive, got {groups}")
    torch._check(
        channels % groups == 0,
        lambda: f"{op}: channels of grad_output ({channels}) must be divisible by groups ({groups})",
    )
    torch._check(
        0 <= channels_a <= channels,
        lambda: f"{op}: channels_a must be in [0, {channels}] (channels of grad_output), got {channels_a}",
    )
    sizes_a = list(grad_output.shape)
    sizes_b = list(grad_output.shape)
    sizes_a[1] = channels_a
    sizes_b[1] = channels - channels_a
    grad_a = empty_output(sizes_a, grad_output)
    grad_b = empty_output(sizes_b, grad_output)
    # Concatenated channel j was sent to output channel shuffle_dest(j).
    _gather(grad_a, grad_output, None, channels, groups, channels, 0, inverse=True)
    _gather(grad_b, grad_output, None, channels, groups, channels, channels_a, inverse=True)
    return grad_a, grad_b
