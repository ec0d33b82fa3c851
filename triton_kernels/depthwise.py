"""Depthwise 2-D convolution in Triton: depthwise_conv2d and depthwise_conv2d_backward.

Every kernel works on a [BLOCK_C, BLOCK_H, BLOCK_W] tile of one image: a 2-D
spatial tile of one (or a few) channels for NCHW, a small spatial tile of a block
of channels for channels_last (channels are the contiguous dim there). The kernel
size, stride and dilation are compile-time constants, so the tap loops unroll and
the stride-1 paths have no division; padding is a runtime value.

Backward input is the transposed convolution written as a gather (each input
pixel sums the outputs that read it: no atomics); backward weight and bias are a
deterministic split reduction (per-split partial sums, then a fixed-order sum).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from shufflenet_kernels.ops import check_depthwise_conv2d_args, check_depthwise_conv2d_backward_args

from ._common import (
    INTERPRET,
    acc_is_fp64,
    empty_output,
    is_channels_last,
    launch,
    not_requested,
    num_sms,
    plain_4d,
    pow2_clamp,
    sum_partials,
    triton_op,
)

# ---- kernels -----------------------------------------------------------------


@triton.jit
def _tile_coords(
    C,
    NC,
    num_h_blocks,
    num_w_blocks,
    BLOCK_C: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    """(n, c, nc_mask) as [BLOCK_C, 1, 1] and h [1, BLOCK_H, 1], w [1, 1, BLOCK_W] of this tile, int64.

    The tile's first axis runs over the flattened (image, channel) index
    nc = n*C + c, so one tile may hold channels of several images: small planes
    (7x7) and small batches still fill a tile, and a batch of tiny images is one
    program. Consecutive programs step along the columns, then the rows, of the
    same channel block, so neighbouring tiles share their halo rows in L2.
    """
    pid = tl.program_id(0).to(tl.int64)
    wb = pid % num_w_blocks
    rest = pid // num_w_blocks
    hb = rest % num_h_blocks
    cb = rest // num_h_blocks
    nc = cb * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
    n = nc // C
    c = nc % C
    h = hb * BLOCK_H + tl.arange(0, BLOCK_H).to(tl.int64)
    w = wb * BLOCK_W + tl.arange(0, BLOCK_W).to(tl.int64)
    return (
        n[:, None, None],
        c[:, None, None],
        (nc < NC)[:, None, None],
        h[None, :, None],
        w[None, None, :],
    )


@triton.jit
def _dw_forward_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    C,
    NC,
    H,
    W,
    H_out,
    W_out,
    pad_h,
    pad_w,
    x_sn,
    x_sc,
    x_sh,
    x_sw,
    y_sn,
    y_sc,
    y_sh,
    y_sw,
    num_h_blocks,
    num_w_blocks,
    KH: tl.constexpr,
    KW: tl.constexpr,
    SH: tl.constexpr,
    SW: tl.constexpr,
    DH: tl.constexpr,
    DW: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    RELU: tl.constexpr,
    FP64: tl.constexpr,
    INDEX64: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    n, c, c_mask, oh, ow = _tile_coords(
        C, NC, num_h_blocks, num_w_blocks, BLOCK_C, BLOCK_H, BLOCK_W
    )
    if FP64:
        acc = tl.zeros([BLOCK_C, BLOCK_H, BLOCK_W], dtype=tl.float64)
    else:
        acc = tl.zeros([BLOCK_C, BLOCK_H, BLOCK_W], dtype=tl.float32)
    # Loop invariants hoisted: per tap only the column offset, its bounds test,
    # one load of x and one of the weight remain.
    x_base = x_ptr + n * x_sn + c * x_sc
    w_base = w_ptr + c * (KH * KW)
    if INDEX64:
        ih0 = oh * SH - pad_h
        iw0 = ow * SW - pad_w
    else:
        # Row and column offsets within an image fit in int32 (checked on the host):
        # 32-bit tap arithmetic. NOTE: ptxas, sm_90a: with int64 the NCHW 7x7 stride-2
        # fp16/bf16 tile spilled 16 B at 48 registers, with int32 it takes 32; most
        # NCHW tiles take fewer registers (3x3 1x32x32: 64-70 -> 46-48, 5x5 stride-2
        # 8x8x8: 77-90 -> 40-60). Channels-last tiles took more (3x3 64x2x8: 56-64 ->
        # 127-134), so they keep int64.
        ih0 = oh.to(tl.int32) * SH - pad_h
        iw0 = ow.to(tl.int32) * SW - pad_w
    for kh in tl.static_range(KH):
        ih = ih0 + kh * DH
        row_mask = c_mask & (ih >= 0) & (ih < H)
        row_ptr = x_base + ih * x_sh
        for kw in tl.static_range(KW):
            iw = iw0 + kw * DW
            xv = tl.load(row_ptr + iw * x_sw, mask=row_mask & (iw >= 0) & (iw < W), other=0.0)
            wv = tl.load(w_base + (kh * KW + kw), mask=c_mask, other=0.0)
            acc += xv.to(acc.dtype) * wv.to(acc.dtype)
    if HAS_BIAS:
        acc += tl.load(b_ptr + c, mask=c_mask, other=0.0).to(acc.dtype)
    if RELU:
        acc = tl.maximum(acc, 0.0)
    out_mask = c_mask & (oh < H_out) & (ow < W_out)
    tl.store(
        y_ptr + n * y_sn + c * y_sc + oh * y_sh + ow * y_sw, acc.to(y_ptr.dtype.element_ty), mask=out_mask
    )


@triton.jit
def _dw_backward_input_kernel(
    g_ptr,
    r_ptr,
    w_ptr,
    gi_ptr,
    C,
    NC,
    H,
    W,
    H_out,
    W_out,
    pad_h,
    pad_w,
    g_sn,
    g_sc,
    g_sh,
    g_sw,
    r_sn,
    r_sc,
    r_sh,
    r_sw,
    gi_sn,
    gi_sc,
    gi_sh,
    gi_sw,
    num_h_blocks,
    num_w_blocks,
    KH: tl.constexpr,
    KW: tl.constexpr,
    SH: tl.constexpr,
    SW: tl.constexpr,
    DH: tl.constexpr,
    DW: tl.constexpr,
    HAS_RELU: tl.constexpr,
    FP64: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    # Tile over input pixels: input (ih, iw) receives grad_output (oh, ow) through
    # tap (kh, kw) when oh*SH = ih + pad_h - kh*DH (and likewise for w).
    n, c, c_mask, ih, iw = _tile_coords(
        C, NC, num_h_blocks, num_w_blocks, BLOCK_C, BLOCK_H, BLOCK_W
    )
    if FP64:
        acc = tl.zeros([BLOCK_C, BLOCK_H, BLOCK_W], dtype=tl.float64)
    else:
        acc = tl.zeros([BLOCK_C, BLOCK_H, BLOCK_W], dtype=tl.float32)
    g_base = g_ptr + n * g_sn + c * g_sc
    r_base = r_ptr + n * r_sn + c * r_sc
    w_base = w_ptr + c * (KH * KW)
    num_h0 = ih + pad_h
    num_w0 = iw + pad_w
    for kh in tl.static_range(KH):
        num_h = num_h0 - kh * DH
        oh = num_h // SH
        row_mask = c_mask & (num_h >= 0) & (oh < H_out)
        if SH > 1:
            row_mask = row_mask & (num_h % SH == 0)
        g_row = g_base + oh * g_sh
        r_row = r_base + oh * r_sh
        for kw in tl.static_range(KW):
            num_w = num_w0 - kw * DW
            ow = num_w // SW
            m = row_mask & (num_w >= 0) & (ow < W_out)
            if SW > 1:
                m = m & (num_w % SW == 0)
            gv = tl.load(g_row + ow * g_sw, mask=m, other=0.0)
            if HAS_RELU:
                rv = tl.load(r_row + ow * r_sw, mask=m, other=0.0)
                gv = tl.where(rv <= 0, 0.0, gv)  # NaN passes, as on the CPU
            wv = tl.load(w_base + (kh * KW + kw), mask=c_mask, other=0.0)
            acc += gv.to(acc.dtype) * wv.to(acc.dtype)
    in_mask = c_mask & (ih < H) & (iw < W)
    tl.store(
        gi_ptr + n * gi_sn + c * gi_sc + ih * gi_sh + iw * gi_sw,
        acc.to(gi_ptr.dtype.element_ty),
        mask=in_mask,
    )


@triton.jit
def _dw_backward_weight_kernel(
    g_ptr,
    r_ptr,
    x_ptr,
    part_w_ptr,
    part_b_ptr,
    N,
    C,
    H,
    W,
    H_out,
    W_out,
    pad_h,
    pad_w,
    chunk,
    g_sn,
    g_sc,
    g_sh,
    g_sw,
    r_sn,
    r_sc,
    r_sh,
    r_sw,
    x_sn,
    x_sc,
    x_sh,
    x_sw,
    num_taps,
    num_c_blocks,
    KW: tl.constexpr,
    SH: tl.constexpr,
    SW: tl.constexpr,
    DH: tl.constexpr,
    DW: tl.constexpr,
    HAS_RELU: tl.constexpr,
    COMPUTE_W: tl.constexpr,
    COMPUTE_B: tl.constexpr,
    FP64: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_Q: tl.constexpr,
):
    # Program (tap, channel block, split): sums grad * input over the split's
    # chunk of output positions q = (n, oh, ow) for one kernel tap. The tap varies
    # fastest, so the programs reading the same grad_output tile run together.
    pid = tl.program_id(0).to(tl.int64)
    tap = pid % num_taps
    rest = pid // num_taps
    cb = rest % num_c_blocks
    split = rest // num_c_blocks
    kh = tap // KW
    kw = tap % KW

    c = cb * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
    c_mask = c < C
    hw_out = H_out * W_out
    q_total = N * hw_out
    q_begin = split * chunk
    if FP64:
        acc_w = tl.zeros([BLOCK_C, BLOCK_Q], dtype=tl.float64)
        acc_b = tl.zeros([BLOCK_C, BLOCK_Q], dtype=tl.float64)
    else:
        acc_w = tl.zeros([BLOCK_C, BLOCK_Q], dtype=tl.float32)
        acc_b = tl.zeros([BLOCK_C, BLOCK_Q], dtype=tl.float32)
    # The loop bounds are kernel arguments (not values derived from the program id).
    for q0 in range(0, chunk, BLOCK_Q):
        q = q_begin + q0 + tl.arange(0, BLOCK_Q).to(tl.int64)
        n = q // hw_out
        p = q % hw_out
        oh = p // W_out
        ow = p % W_out
        m = c_mask[:, None] & (q < q_total)[None, :]
        gv = tl.load(
            g_ptr + c[:, None] * g_sc + (n * g_sn + oh * g_sh + ow * g_sw)[None, :], mask=m, other=0.0
        )
        if HAS_RELU:
            rv = tl.load(
                r_ptr + c[:, None] * r_sc + (n * r_sn + oh * r_sh + ow * r_sw)[None, :], mask=m, other=0.0
            )
            gv = tl.where(rv <= 0, 0.0, gv)  # NaN passes, as on the CPU
        gv = gv.to(acc_w.dtype)
        if COMPUTE_W:
            ih = oh * SH - pad_h + kh * DH
            iw = ow * SW - pad_w + kw * DW
            x_ok = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            xv = tl.load(
                x_ptr + c[:, None] * x_sc + (n * x_sn + ih * x_sh + iw * x_sw)[None, :],
                mask=m & x_ok[None, :],
                other=0.0,
            )
            acc_w += gv * xv.to(acc_w.dtype)
        if COMPUTE_B:
            acc_b += gv
    if COMPUTE_W:
        tl.store(part_w_ptr + split * (C * num_taps) + c * num_taps + tap, tl.sum(acc_w, axis=1), mask=c_mask)
    if COMPUTE_B:
        # Every tap program of a (channel block, split) sees the same grad tile;
        # the one for tap 0 writes the bias partial.
        tl.store(part_b_ptr + split * C + c, tl.sum(acc_b, axis=1), mask=c_mask & (tap == 0))


# ---- host launchers ------------------------------------------------------------

# NOTE: outputs per program. Depthwise conv does ~2*k*k flops per output and is
# memory-bound on every current GPU; a 1024-output tile (4 warps) amortises the
# halo re-reads (served from L1/L2) over enough work per program. Educated
# default, not yet tuned on a GPU.
_TILE = 1024
_TILE_INTERPRET = 1 << 14


# NOTE: windows larger than 3x3 unroll 25 or 49 taps; with 8 outputs per thread
# ptxas (sm_90a, Triton 3.6) spills: 5x5 forward fp32 255 registers + 732 B, 7x7
# backward-input fp16 22 KB of spills (triton_kernels/aot.py). Up to 5x5 take half
# the tile at 2 outputs per thread (5x5 backward input: 182 registers, no spill);
# larger a quarter at 1 (7x7 still spilled 16-48 B at 2).
def _tile_and_outputs_per_thread(taps: int) -> tuple[int, int]:
    if taps <= 9:
        return _TILE, 8
    if taps <= 25:
        return _TILE // 2, 2
    return _TILE // 4, 1


def _tile(nc: int, h: int, w: int, channels_last: bool, taps: int = 9) -> tuple[int, int, int, int]:
    """(BLOCK_C, BLOCK_H, BLOCK_W, num_warps) of a tile over an nc x h x w extent
    (nc = images * channels, flattened) for a window of ``taps`` taps."""
    if INTERPRET:
        # Each interpreted op costs the same whatever the tile size: one tile
        # covers as much as it can, channels and images first.
        block_c = pow2_clamp(nc, 1, _TILE_INTERPRET)
        block_w = pow2_clamp(min(w, _TILE_INTERPRET // block_c), 1, _TILE_INTERPRET)
        block_h = pow2_clamp(min(h, _TILE_INTERPRET // (block_c * block_w)), 1, _TILE_INTERPRET)
        return block_c, block_h, block_w, 4
    tile, per_thread = _tile_and_outputs_per_thread(taps)
    if channels_last:
        # Channels are contiguous: up to 64 of them (128 B of fp16, 256 B of fp32)
        # per pixel, then a small spatial block that shares the halo.
        block_c = pow2_clamp(nc, 1, 64)
        block_w = pow2_clamp(min(w, tile // block_c), 1, 8)
        block_h = pow2_clamp(min(h, tile // (block_c * block_w)), 1, tile)
    else:
        # A channel plane is contiguous: rows of up to 64 columns, then rows; small
        # planes (7x7, 14x14) take several channels (of one or more images) so the
        # tile stays full.
        block_w = pow2_clamp(w, 1, 64)
        block_h = pow2_clamp(min(h, tile // block_w), 1, tile)
        block_c = pow2_clamp(min(nc, tile // (block_w * block_h)), 1, tile)
    num_warps = max(1, min(8, block_c * block_h * block_w // (32 * per_thread)))
    return block_c, block_h, block_w, num_warps


def _grid_and_blocks(
    n: int, c: int, h: int, w: int, channels_last: bool, taps: int
) -> tuple[tuple[int], dict, tuple]:
    """Grid, block meta-parameters and (h blocks, w blocks) of the tiled kernels over [n*c, h, w]."""
    block_c, block_h, block_w, num_warps = _tile(n * c, h, w, channels_last, taps)
    nb = (triton.cdiv(n * c, block_c), triton.cdiv(h, block_h), triton.cdiv(w, block_w))
    meta = dict(BLOCK_C=block_c, BLOCK_H=block_h, BLOCK_W=block_w, num_warps=num_warps)
    return (nb[0] * nb[1] * nb[2],), meta, nb[1:]


def _strides(t: Tensor) -> tuple[int, int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2), t.stride(3)


# Row or column offsets within an image at or past this need int64 tap arithmetic.
_INT32_LIMIT = 2**31


def _rows_index64(x: Tensor) -> bool:
    """True when a row offset ``(H - 1) * |stride_h|`` or column offset ``(W - 1) * |stride_w|``
    of ``x`` ``[N, C, H, W]`` does not fit in int32 (the forward's taps then use int64)."""
    return max((x.shape[2] - 1) * abs(x.stride(2)), (x.shape[3] - 1) * abs(x.stride(3))) >= _INT32_LIMIT


def _conv_meta(weight: Tensor, stride: Sequence[int], dilation: Sequence[int]) -> dict:
    return dict(
        KH=weight.shape[2], KW=weight.shape[3], SH=stride[0], SW=stride[1], DH=dilation[0], DW=dilation[1]
    )


def _weight_taps(weight: Tensor) -> Tensor:
    """weight ``[C, 1, kH, kW]`` as a dense ``[C, kH*kW]`` buffer (a copy only if strided)."""
    return weight.reshape(weight.shape[0], weight.shape[2] * weight.shape[3]).contiguous()


def _backward_weight(
    grad: Tensor,
    relu: Tensor | None,
    x: Tensor,
    weight: Tensor,
    padding: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    grad_weight: Tensor | None,
    grad_bias: Tensor | None,
    channels_last: bool,
) -> None:
    n, c, h, w = x.shape
    h_out, w_out = grad.shape[2], grad.shape[3]
    kh, kw = weight.shape[2], weight.shape[3]
    num_taps = kh * kw if grad_weight is not None else 1
    tile = _TILE_INTERPRET if INTERPRET else _TILE
    if channels_last or INTERPRET:
        block_c = pow2_clamp(c, 1, 64)
    else:
        # NCHW: pixels are contiguous; a few channels per program, long pixel runs.
        block_c = pow2_clamp(min(c, 4), 1, 4)
    block_q = pow2_clamp(min(n * h_out * w_out, tile // block_c), 16, tile)
    num_c_blocks = triton.cdiv(c, block_c)
    q_blocks = triton.cdiv(n * h_out * w_out, block_q)
    # NOTE: enough (tap, channel block, split) programs to fill the GPU about
    # four times over; the split count depends only on the shape and the device,
    # so the fixed-order sum of the partials gives bitwise-reproducible results.
    want = 4 * num_sms(x.device)
    splits = max(1, min(q_blocks, triton.cdiv(want, num_taps * num_c_blocks)))
    chunk = triton.cdiv(q_blocks, splits) * block_q
    splits = triton.cdiv(n * h_out * w_out, chunk)
    part_dtype = torch.float64 if acc_is_fp64(x) else torch.float32
    # A 1-element stand-in for a partials buffer that is not needed (never written).
    part_w = torch.empty(
        (splits, c * kh * kw) if grad_weight is not None else (1, 1), dtype=part_dtype, device=x.device
    )
    part_b = torch.empty((splits, c) if grad_bias is not None else (1, 1), dtype=part_dtype, device=x.device)
    r = relu if relu is not None else grad
    launch(_dw_backward_weight_kernel)[(num_taps * num_c_blocks * splits,)](
        grad,
        r,
        x,
        part_w,
        part_b,
        n,
        c,
        h,
        w,
        h_out,
        w_out,
        padding[0],
        padding[1],
        chunk,
        *_strides(grad),
        *_strides(r),
        *_strides(x),
        num_taps,
        num_c_blocks,
        KW=kw,
        SH=stride[0],
        SW=stride[1],
        DH=dilation[0],
        DW=dilation[1],
        HAS_RELU=relu is not None,
        COMPUTE_W=grad_weight is not None,
        COMPUTE_B=grad_bias is not None,
        FP64=acc_is_fp64(x),
        BLOCK_C=block_c,
        BLOCK_Q=block_q,
        num_warps=max(1, min(8, block_c * block_q // 256)),
    )
    if grad_weight is not None:
        sum_partials(part_w, grad_weight)
    if grad_bias is not None:
        sum_partials(part_b, grad_bias)


# ---- ops -------------------------------------------------------------------------


@triton_op("shufflenet_triton::depthwise_conv2d")
def depthwise_conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    relu: bool,
) -> Tensor:
    """``act(conv2d(input, weight, bias, stride, padding, dilation, groups=C))``.

    input ``[N, C, H, W]``, weight ``[C, 1, kH, kW]`` (kH, kW <= 7), bias ``[C]`` or None;
    output ``[N, C, H_out, W_out]`` in input's memory format; ``act`` = ReLU when ``relu``.
    """
    h_out, w_out = check_depthwise_conv2d_args(input, weight, bias, stride, padding, dilation)
    n, c, h, w = input.shape
    out = empty_output((n, c, h_out, w_out), input)
    if out.numel() == 0:
        return out
    channels_last = is_channels_last(input)
    x = plain_4d(input, channels_last)
    wt = _weight_taps(weight)
    b = bias.contiguous() if bias is not None else wt
    grid, meta, (nhb, nwb) = _grid_and_blocks(
        n, c, h_out, w_out, channels_last, weight.shape[2] * weight.shape[3]
    )
    launch(_dw_forward_kernel)[grid](
        x,
        wt,
        b,
        out,
        c,
        n * c,
        h,
        w,
        h_out,
        w_out,
        padding[0],
        padding[1],
        *_strides(x),
        *_strides(out),
        nhb,
        nwb,
        **_conv_meta(weight, stride, dilation),
        HAS_BIAS=bias is not None,
        RELU=relu,
        FP64=acc_is_fp64(input),
        INDEX64=channels_last or _rows_index64(x),
        **meta,
    )
    return out


@triton_op("shufflenet_triton::depthwise_conv2d_backward")
def depthwise_conv2d_backward(
    grad_output: Tensor,
    input: Tensor,
    weight: Tensor,
    relu_output: Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    output_mask: list[bool],
) -> tuple[Tensor, Tensor, Tensor]:
    """(grad_input ``[N, C, H, W]``, grad_weight ``[C, 1, kH, kW]``, grad_bias ``[C]``).

    ``relu_output``: the forward's output when it applied ReLU (the gradient is
    masked where it is <= 0), else None. Grads not asked for by ``output_mask`` are
    returned as empty ``[0]`` tensors.
    """
    check_depthwise_conv2d_backward_args(
        grad_output, input, weight, relu_output, stride, padding, dilation, output_mask
    )
    h_out, w_out = grad_output.shape[2], grad_output.shape[3]
    n, c, h, w = input.shape
    want_input, want_weight, want_bias = output_mask
    grad_input = empty_output(input.shape, input) if want_input else not_requested(input)
    # Over an empty batch the weight and bias gradients are sums of nothing: zero.
    empty_batch = grad_output.numel() == 0
    alloc = weight.new_zeros if empty_batch else weight.new_empty
    grad_weight = alloc(weight.shape) if want_weight else not_requested(weight)
    grad_bias = alloc((c,)) if want_bias else not_requested(weight)
    if empty_batch or not (want_input or want_weight or want_bias):
        return grad_input, grad_weight, grad_bias

    channels_last = is_channels_last(input)
    g = plain_4d(grad_output, channels_last)
    r = plain_4d(relu_output, channels_last) if relu_output is not None else None
    if want_input and grad_input.numel() > 0:
        wt = _weight_taps(weight)
        rr = r if r is not None else g
        grid, meta, (nhb, nwb) = _grid_and_blocks(
            n, c, h, w, channels_last, weight.shape[2] * weight.shape[3]
        )
        launch(_dw_backward_input_kernel)[grid](
            g,
            rr,
            wt,
            grad_input,
            c,
            n * c,
            h,
            w,
            h_out,
            w_out,
            padding[0],
            padding[1],
            *_strides(g),
            *_strides(rr),
            *_strides(grad_input),
            nhb,
            nwb,
            **_conv_meta(weight, stride, dilation),
            HAS_RELU=r is not None,
            FP64=acc_is_fp64(input),
            **meta,
        )
    if want_weight or want_bias:
        x = plain_4d(input, channels_last)
        _backward_weight(
            g,
            r,
            x,
            weight,
            padding,
            stride,
            dilation,
            grad_weight if want_weight else None,
            grad_bias if want_bias else None,
            channels_last,
        )
    return grad_input, grad_weight, grad_bias
