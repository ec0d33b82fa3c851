"""Grouped 1x1 convolution with fused bias, ReLU and channel shuffle, in Triton:
pointwise_conv and pointwise_conv_backward.

A 1x1 conv is, per conv group g, the GEMM ``out[g] = W[g] @ x[g]`` with
``W[g]: [C_out/G, C_in/G]`` and ``x[g]: [C_in/G, N*H*W]``. Tiles are
``[BLOCK_M channels, BLOCK_N pixels]`` over the flattened pixels q = (n, s), read
through the [N, C, S] strides, so NCHW, channels_last and channel slices take the
same path with no copy. The shuffle is free: the epilogue stores conv channel j at
output channel ``shuffle_dest(j)``; the backward reads grad_output the same way.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from shufflenet_kernels.ops import check_pointwise_conv_args, check_pointwise_conv_backward_args

from ._common import (
    INTERPRET,
    acc_is_fp64,
    channel_view,
    empty_output,
    launch,
    not_requested,
    num_sms,
    pow2_clamp,
    sum_partials,
    triton_op,
)

# ---- autotune configs ------------------------------------------------------------


def _config(m: int, n: int, k: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=warps, num_stages=stages)


# NOTE: educated defaults for Hopper/Ampere-class GPUs, not yet measured here.
# ShuffleNet 1x1 convs have few channels per group (12 to 976) and many pixels
# (N*H*W up to ~800k), so the configs favour wide pixel tiles (BLOCK_N) and cover
# small channel counts with BLOCK_M = 16/32 so grouped layers (V1, g = 8) do not
# waste most of each tile. The key is the GEMM shape: channels per group and pixels.
# fp16 / bf16 operands:
_GPU_CONFIGS = [
    _config(64, 128, 32, 4, 3),
    _config(128, 128, 32, 8, 3),
    _config(64, 64, 64, 8, 4),
    _config(32, 128, 32, 4, 4),
    _config(16, 256, 16, 4, 3),
]
# fp32 operands (3xTF32: high and low parts of both operand tiles in registers): the
# same tiles with 8 warps, or a smaller K step.
_GPU_CONFIGS_FP32 = [
    _config(64, 128, 32, 8, 3),
    _config(128, 128, 32, 8, 3),
    _config(64, 64, 32, 4, 3),
    _config(32, 128, 32, 8, 4),
    _config(16, 256, 16, 8, 3),
]
# NOTE: ptxas for sm_90a (Triton 3.6, triton_kernels/aot.py --per-layout), groups > 1
# and shuffle, NCHW / channels_last / 1x1 images: none of these configs spills (fp32
# up to 255 registers at 128x128x32, fp16/bf16 up to 255 at 16x256x16 channels_last).
# With int64 offsets per tile element (now INDEX64=1 only) 44 of 90 specializations
# spilled: fp32 up to 3.6 KB, fp16/bf16 up to 1.6 KB. With int32 offsets these still
# spilled and were replaced: 4 warps on the fp32 tiles (64x128x32 56-224 B,
# 32x128x32 40-368 B, 16x256x16 40-72 B in backward input), 64x64x64 with 4 warps (fp32
# 20-904 B, fp16/bf16 16 B; with 8 warps fp32 still 8-12 B). Earlier 128x64x64 with 4
# warps spilled the most (fp32 up to 3.7 KB) and was dropped.
# Under the interpreter autotuning would run every config: use one.
_INTERPRET_CONFIGS = [_config(32, 128, 32, 4, 3)]
_CONFIGS = _INTERPRET_CONFIGS if INTERPRET else _GPU_CONFIGS
_CONFIGS_FP32 = _INTERPRET_CONFIGS if INTERPRET else _GPU_CONFIGS_FP32
_KEY = ["CIG", "COG", "Q"]

# Read by the jitted code as a compile-time constant.
_UPCAST_BF16_DOT = tl.constexpr(INTERPRET)

# ---- kernels -----------------------------------------------------------------


@triton.jit
def _shuffle_dest(co, C_out, shuffle_groups, SHUFFLE: tl.constexpr):
    """Output channel of conv channel ``co``: ``(co % (C_out/G)) * G + co // (C_out/G)``."""
    if SHUFFLE:
        per_group = C_out // shuffle_groups
        return (co % per_group) * shuffle_groups + co // per_group
    else:
        return co


@triton.jit
def _mma(a, b, acc, FP32_PRECISE: tl.constexpr):
    # NOTE: fp32 inputs use 3xTF32 (tensor cores, error close to fp32 FMA) so
    # results stay within the fp32 tolerance; plain TF32 would not.
    if _UPCAST_BF16_DOT and a.dtype == tl.bfloat16:
        # The interpreter's dot mis-multiplies bfloat16 (NumPy has no bfloat16).
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, out_dtype=acc.dtype)
    elif FP32_PRECISE:
        return tl.dot(a, b, acc, input_precision="tf32x3", out_dtype=acc.dtype)
    else:
        return tl.dot(a, b, acc, out_dtype=acc.dtype)


@triton.jit
def _index(i, INDEX64: tl.constexpr):
    """``i`` as int64 when INDEX64 (some tensor spans 2^31 elements or more), else as is (int32)."""
    if INDEX64:
        return i.to(tl.int64)
    else:
        return i


@triton.jit
def _zeros(M: tl.constexpr, N: tl.constexpr, FP64: tl.constexpr):
    if FP64:
        return tl.zeros([M, N], dtype=tl.float64)
    else:
        return tl.zeros([M, N], dtype=tl.float32)


@triton.jit
def _pw_forward_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    Q,
    S,
    CIG,
    COG,
    C_out,
    groups,
    shuffle_groups,
    x_sn,
    x_sc,
    x_ss,
    w_so,
    w_si,
    y_sn,
    y_sc,
    y_ss,
    HAS_BIAS: tl.constexpr,
    RELU: tl.constexpr,
    SHUFFLE: tl.constexpr,
    FP64: tl.constexpr,
    FP32_PRECISE: tl.constexpr,
    INDEX64: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # Programs: channel block fastest, then group, then pixel block, so the
    # programs sharing one input pixel tile run together (L2 reuse of x).
    pid = _index(tl.program_id(0), INDEX64)
    num_m = tl.cdiv(COG, BLOCK_M)
    mb = pid % num_m
    rest = pid // num_m
    g = rest % groups
    qb = rest // groups

    m = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    q = qb * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = m < COG
    q_ok = q < Q
    x_q = (q // S) * x_sn + (q % S) * x_ss
    co = g * COG + m
    kk = _index(tl.arange(0, BLOCK_K), INDEX64)
    # The group's first weight column and input channel: scalar pointers moved
    # along K, so the per-element offsets stay loop-invariant and small.
    w_k = w_ptr
    x_k = x_ptr + g * CIG * x_sc
    a_off = co[:, None] * w_so + kk[None, :] * w_si
    b_off = kk[:, None] * x_sc + x_q[None, :]
    acc = _zeros(BLOCK_M, BLOCK_N, FP64)
    for k0 in range(0, CIG, BLOCK_K):
        k_ok = kk < CIG - k0
        a = tl.load(w_k + a_off, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(x_k + b_off, mask=k_ok[:, None] & q_ok[None, :], other=0.0)
        acc = _mma(a, b, acc, FP32_PRECISE)
        w_k += BLOCK_K * w_si
        x_k += BLOCK_K * x_sc
    if HAS_BIAS:
        acc += tl.load(b_ptr + co, mask=m_ok, other=0.0).to(acc.dtype)[:, None]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    dest = _shuffle_dest(co, C_out, shuffle_groups, SHUFFLE)
    y_q = (q // S) * y_sn + (q % S) * y_ss
    tl.store(
        y_ptr + dest[:, None] * y_sc + y_q[None, :],
        acc.to(y_ptr.dtype.element_ty),
        mask=m_ok[:, None] & q_ok[None, :],
    )


@triton.jit
def _load_grad(
    g_ptr,
    r_ptr,
    ch,
    q,
    S,
    g_sn,
    g_sc,
    g_ss,
    r_sn,
    r_sc,
    r_ss,
    mask,
    HAS_RELU: tl.constexpr,
    CH_ROWS: tl.constexpr,
):
    """grad_output at (channels ``ch``, pixels ``q``), zero where relu_output <= 0.

    CH_ROWS: channels along dim 0 of the tile (else along dim 1).
    """
    n = q // S
    s = q % S
    if CH_ROWS:
        off = ch[:, None] * g_sc + (n * g_sn + s * g_ss)[None, :]
    else:
        off = ch[None, :] * g_sc + (n * g_sn + s * g_ss)[:, None]
    gv = tl.load(g_ptr + off, mask=mask, other=0.0)
    if HAS_RELU:
        if CH_ROWS:
            r_off = ch[:, None] * r_sc + (n * r_sn + s * r_ss)[None, :]
        else:
            r_off = ch[None, :] * r_sc + (n * r_sn + s * r_ss)[:, None]
        rv = tl.load(r_ptr + r_off, mask=mask, other=0.0)
        gv = tl.where(rv <= 0, 0.0, gv)  # NaN passes, as on the CPU
    return gv


@triton.jit
def _pw_backward_input_kernel(
    g_ptr,
    r_ptr,
    w_ptr,
    gi_ptr,
    Q,
    S,
    CIG,
    COG,
    C_out,
    groups,
    shuffle_groups,
    g_sn,
    g_sc,
    g_ss,
    r_sn,
    r_sc,
    r_ss,
    w_so,
    w_si,
    gi_sn,
    gi_sc,
    gi_ss,
    HAS_RELU: tl.constexpr,
    SHUFFLE: tl.constexpr,
    FP64: tl.constexpr,
    FP32_PRECISE: tl.constexpr,
    INDEX64: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # grad_input[g] = W[g]^T @ grad_conv[g]: M = input channels of the group,
    # K = its output channels, read from grad_output at their shuffled places.
    pid = _index(tl.program_id(0), INDEX64)
    num_m = tl.cdiv(CIG, BLOCK_M)
    mb = pid % num_m
    rest = pid // num_m
    g = rest % groups
    qb = rest // groups

    k_in = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    q = qb * BLOCK_N + tl.arange(0, BLOCK_N)
    k_ok = k_in < CIG
    q_ok = q < Q
    acc = _zeros(BLOCK_M, BLOCK_N, FP64)
    for j0 in range(0, COG, BLOCK_K):
        j = j0 + _index(tl.arange(0, BLOCK_K), INDEX64)
        j_ok = j < COG
        co = g * COG + j
        a = tl.load(
            w_ptr + co[None, :] * w_so + k_in[:, None] * w_si, mask=k_ok[:, None] & j_ok[None, :], other=0.0
        )
        dest = _shuffle_dest(co, C_out, shuffle_groups, SHUFFLE)
        b = _load_grad(
            g_ptr,
            r_ptr,
            dest,
            q,
            S,
            g_sn,
            g_sc,
            g_ss,
            r_sn,
            r_sc,
            r_ss,
            j_ok[:, None] & q_ok[None, :],
            HAS_RELU,
            True,
        )
        acc = _mma(a, b, acc, FP32_PRECISE)
    gi_q = (q // S) * gi_sn + (q % S) * gi_ss
    tl.store(
        gi_ptr + (g * CIG + k_in)[:, None] * gi_sc + gi_q[None, :],
        acc.to(gi_ptr.dtype.element_ty),
        mask=k_ok[:, None] & q_ok[None, :],
    )


def _autotuned(kernel: Any) -> dict[bool, Any]:
    """``kernel`` autotuned over the configs of its operands: {fp32 (3xTF32): ..., else: ...}."""
    return {
        precise: triton.autotune(configs=_CONFIGS_FP32 if precise else _CONFIGS, key=_KEY)(kernel)
        for precise in (False, True)
    }


_PW_FORWARD = _autotuned(_pw_forward_kernel)
_PW_BACKWARD_INPUT = _autotuned(_pw_backward_input_kernel)


@triton.jit
def _pw_backward_weight_kernel(
    g_ptr,
    r_ptr,
    x_ptr,
    part_w_ptr,
    part_b_ptr,
    Q,
    S,
    CIG,
    COG,
    C_out,
    groups,
    shuffle_groups,
    chunk,
    g_sn,
    g_sc,
    g_ss,
    r_sn,
    r_sc,
    r_ss,
    x_sn,
    x_sc,
    x_ss,
    num_m_blocks,
    num_n_blocks,
    HAS_RELU: tl.constexpr,
    SHUFFLE: tl.constexpr,
    COMPUTE_W: tl.constexpr,
    COMPUTE_B: tl.constexpr,
    FP64: tl.constexpr,
    FP32_PRECISE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # grad_weight[g] = grad_conv[g] @ x[g]^T, split over the pixels: program
    # (channel block, input channel block, group, split) writes the partial sum of
    # its chunk of pixels; the partials are summed in a fixed order afterwards.
    pid = tl.program_id(0).to(tl.int64)
    mb = pid % num_m_blocks
    rest = pid // num_m_blocks
    nb = rest % num_n_blocks
    rest = rest // num_n_blocks
    g = rest % groups
    split = rest // groups

    j = mb * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    k_in = nb * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    j_ok = j < COG
    k_ok = k_in < CIG
    co = g * COG + j
    dest = _shuffle_dest(co, C_out, shuffle_groups, SHUFFLE)
    acc = _zeros(BLOCK_M, BLOCK_N, FP64)
    acc_b = _zeros(BLOCK_M, BLOCK_K, FP64)
    q_begin = split * chunk
    # The loop bounds are kernel arguments (not values derived from the program id).
    for q0 in range(0, chunk, BLOCK_K):
        q = q_begin + q0 + tl.arange(0, BLOCK_K).to(tl.int64)
        q_ok = q < Q
        a = _load_grad(
            g_ptr,
            r_ptr,
            dest,
            q,
            S,
            g_sn,
            g_sc,
            g_ss,
            r_sn,
            r_sc,
            r_ss,
            j_ok[:, None] & q_ok[None, :],
            HAS_RELU,
            True,
        )
        if COMPUTE_W:
            x_q = (q // S) * x_sn + (q % S) * x_ss
            b = tl.load(
                x_ptr + (g * CIG + k_in)[None, :] * x_sc + x_q[:, None],
                mask=q_ok[:, None] & k_ok[None, :],
                other=0.0,
            )
            acc = _mma(a, b, acc, FP32_PRECISE)
        if COMPUTE_B:
            acc_b += a.to(acc_b.dtype)
    if COMPUTE_W:
        off = split * (C_out * CIG) + co[:, None] * CIG + k_in[None, :]
        tl.store(part_w_ptr + off, acc, mask=j_ok[:, None] & k_ok[None, :])
    if COMPUTE_B:
        # Every input-channel block sees the same grad rows; block 0 writes the bias.
        tl.store(part_b_ptr + split * C_out + co, tl.sum(acc_b, axis=1), mask=j_ok & (nb == 0))


# ---- host launchers ------------------------------------------------------------


def _precise(t: Tensor) -> bool:
    return t.dtype == torch.float32


# Element offsets at or past this need 64-bit index arithmetic in the GEMM kernels.
_INT32_LIMIT = 2**31


def _index64(*tensors: Tensor) -> bool:
    """True when an element offset of one of ``tensors`` (its largest: sum of
    (size - 1) * |stride|) does not fit in int32.

    The kernels then compute tile offsets in int64; otherwise in int32, which halves
    the registers the operand addresses take (64-bit offsets per element made the
    tiles spill on sm_90a). Lanes outside the tensors are masked, so their offsets
    may wrap without being dereferenced.
    """
    return any(
        sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride(), strict=True)) >= _INT32_LIMIT
        for t in tensors
    )


def _backward_weight(
    g: Tensor,
    g_view: tuple,
    r: Tensor | None,
    r_view: tuple,
    x: Tensor,
    x_view: tuple,
    groups: int,
    shuffle_groups: int,
    grad_weight: Tensor | None,
    grad_bias: Tensor | None,
    c_out: int,
) -> None:
    n, c_in, s, x_sn, x_sc, x_ss = x_view
    q_total = n * s
    cig, cog = c_in // groups, c_out // groups
    block_m = pow2_clamp(cog, 16, 64)
    block_n = pow2_clamp(cig, 16, 64) if grad_weight is not None else 16
    # NOTE: 32 pixels per K step keeps the two operand tiles small enough for
    # 3-stage pipelining without spills: at 64, ptxas (sm_90a, Triton 3.6,
    # triton_kernels/aot.py) spilled at 255 registers: fp32 224 B (64x64 tile) and
    # 60 B (32x64), fp16/bf16 1132 B (64x64) and 64 B (bias only, 64x16). The
    # interpreter prefers fewer, longer steps.
    block_k = 32 if not INTERPRET else pow2_clamp(q_total, 16, 1024)
    num_m = triton.cdiv(cog, block_m)
    num_n = triton.cdiv(cig, block_n) if grad_weight is not None else 1
    q_blocks = triton.cdiv(q_total, block_k)
    # NOTE: about four waves of programs; the split count depends only on the
    # shape and the device, so the fixed-order sum is bitwise reproducible.
    want = 4 * num_sms(x.device)
    splits = max(1, min(q_blocks, triton.cdiv(want, num_m * num_n * groups)))
    chunk = triton.cdiv(q_blocks, splits) * block_k
    splits = triton.cdiv(q_total, chunk)
    part_dtype = torch.float64 if acc_is_fp64(x) else torch.float32
    part_w = torch.empty(
        (splits, c_out * cig) if grad_weight is not None else (1, 1), dtype=part_dtype, device=x.device
    )
    part_b = torch.empty(
        (splits, c_out) if grad_bias is not None else (1, 1), dtype=part_dtype, device=x.device
    )
    rr, rv = (r, r_view) if r is not None else (g, g_view)
    launch(_pw_backward_weight_kernel)[(num_m * num_n * groups * splits,)](
        g,
        rr,
        x,
        part_w,
        part_b,
        q_total,
        s,
        cig,
        cog,
        c_out,
        groups,
        shuffle_groups,
        chunk,
        *g_view[3:],
        *rv[3:],
        x_sn,
        x_sc,
        x_ss,
        num_m,
        num_n,
        HAS_RELU=r is not None,
        SHUFFLE=shuffle_groups > 1,
        COMPUTE_W=grad_weight is not None,
        COMPUTE_B=grad_bias is not None,
        FP64=acc_is_fp64(x),
        FP32_PRECISE=_precise(x),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        # NOTE: fp32 64x64 tiles spilled 12 B with 4 warps even at BLOCK_K=32.
        num_warps=8 if block_m * block_n >= 4096 else 4,
    )
    if grad_weight is not None:
        sum_partials(part_w, grad_weight)
    if grad_bias is not None:
        sum_partials(part_b, grad_bias)


# ---- ops -------------------------------------------------------------------------


@triton_op("shufflenet_triton::pointwise_conv")
def pointwise_conv(
    input: Tensor, weight: Tensor, bias: Tensor | None, groups: int, shuffle_groups: int, relu: bool
) -> Tensor:
    """``channel_shuffle(act(conv2d(input, weight, bias, groups=groups)), shuffle_groups)``.

    input ``[N, C_in, H, W]``, weight ``[C_out, C_in/groups, 1, 1]``, bias ``[C_out]`` or
    None; output ``[N, C_out, H, W]`` in input's memory format. ``act`` = ReLU when
    ``relu``; ``shuffle_groups == 1`` means no shuffle.
    """
    check_pointwise_conv_args(input, weight, bias, groups, shuffle_groups)
    n, c_in, h, w = input.shape
    c_out = weight.shape[0]
    out = empty_output((n, c_out, h, w), input)
    if out.numel() == 0:
        return out
    x, (_, _, s, x_sn, x_sc, x_ss) = channel_view(input)
    _, (_, _, _, y_sn, y_sc, y_ss) = channel_view(out)
    cig, cog, q_total = c_in // groups, c_out // groups, n * s
    b = bias if bias is not None else weight

    def grid(meta: dict) -> tuple[int]:
        return (triton.cdiv(cog, meta["BLOCK_M"]) * groups * triton.cdiv(q_total, meta["BLOCK_N"]),)

    launch(_PW_FORWARD[_precise(input)])[grid](
        x,
        weight,
        b,
        out,
        q_total,
        s,
        cig,
        cog,
        c_out,
        groups,
        shuffle_groups,
        x_sn,
        x_sc,
        x_ss,
        weight.stride(0),
        weight.stride(1),
        y_sn,
        y_sc,
        y_ss,
        HAS_BIAS=bias is not None,
        RELU=relu,
        SHUFFLE=shuffle_groups > 1,
        FP64=acc_is_fp64(input),
        FP32_PRECISE=_precise(input),
        INDEX64=_index64(x, weight, out),
    )
    return out


@triton_op("shufflenet_triton::pointwise_conv_backward")
def pointwise_conv_backward(
    grad_output: Tensor,
    input: Tensor,
    weight: Tensor,
    relu_output: Tensor | None,
    groups: int,
    shuffle_groups: int,
    output_mask: list[bool],
) -> tuple[Tensor, Tensor, Tensor]:
    """(grad_input ``[N, C_in, H, W]``, grad_weight ``[C_out, C_in/groups, 1, 1]``, grad_bias ``[C_out]``).

    ``grad_output`` is the gradient of the shuffled output; ``relu_output`` the
    forward's output when it applied ReLU (gradient masked where it is <= 0), else
    None. Grads not asked for by ``output_mask`` are returned as empty ``[0]`` tensors.
    """
    check_pointwise_conv_backward_args(grad_output, input, weight, relu_output, groups, shuffle_groups, output_mask)
    n, c_in, h, w = input.shape
    c_out = weight.shape[0]
    want_input, want_weight, want_bias = output_mask
    grad_input = empty_output(input.shape, input) if want_input else not_requested(input)
    # Over an empty batch the weight and bias gradients are sums of nothing: zero.
    empty_batch = grad_output.numel() == 0
    alloc = weight.new_zeros if empty_batch else weight.new_empty
    grad_weight = alloc(weight.shape) if want_weight else not_requested(weight)
    grad_bias = alloc((c_out,)) if want_bias else not_requested(weight)
    if empty_batch or not (want_input or want_weight or want_bias):
        return grad_input, grad_weight, grad_bias

    g, g_view = channel_view(grad_output)
    r, r_view = channel_view(relu_output) if relu_output is not None else (None, g_view)
    cig, cog = c_in // groups, c_out // groups
    if want_input and grad_input.numel() > 0:
        _, gi_view = channel_view(grad_input)
        q_total = n * g_view[2]
        rr, rv = (r, r_view) if r is not None else (g, g_view)

        def grid(meta: dict) -> tuple[int]:
            return (triton.cdiv(cig, meta["BLOCK_M"]) * groups * triton.cdiv(q_total, meta["BLOCK_N"]),)

        launch(_PW_BACKWARD_INPUT[_precise(input)])[grid](
            g,
            rr,
            weight,
            grad_input,
            q_total,
            g_view[2],
            cig,
            cog,
            c_out,
            groups,
            shuffle_groups,
            *g_view[3:],
            *rv[3:],
            weight.stride(0),
            weight.stride(1),
            *gi_view[3:],
            HAS_RELU=r is not None,
            SHUFFLE=shuffle_groups > 1,
            FP64=acc_is_fp64(input),
            FP32_PRECISE=_precise(input),
            INDEX64=_index64(g, rr, weight, grad_input),
        )
    if want_weight or want_bias:
        x, x_view = channel_view(input)
        _backward_weight(
            g,
            g_view,
            r,
            r_view,
            x,
            x_view,
            groups,
            shuffle_groups,
            grad_weight if want_weight else None,
            grad_bias if want_bias else None,
            c_out,
        )
    return grad_input, grad_weight, grad_bias
