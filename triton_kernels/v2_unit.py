"""The whole ShuffleNet V2 unit (eval mode, BatchNorm folded) as one Triton kernel:
``v2_unit``.

Stride 1, input ``[N, 2B, H, W]``: ``out = concat_shuffle(x1, y, 2)`` with
``x1, x2`` the channel halves and ``y = pw(dw(pw(x2, pw1, relu), dw, 1), pw2, relu)``.
Stride 2, input ``[N, C, H, W]``: ``out = concat_shuffle(p, y, 2)`` with
``p = pw(dw(input, proj_dw, 2), proj_pw, relu)`` and ``y`` the branch above with
a stride-2 depthwise on the whole input. ``pw`` = 1x1 conv + bias (+ ReLU), ``dw`` =
3x3 depthwise conv, padding 1, + bias, no ReLU.

One kernel does the whole unit. A program owns an output tile of
``TILE_H x TILE_W`` pixels of one image (programs loop over tiles, so the grid and
its scratch stay bounded) and, per tile:

1. per chunk of ``BLOCK_C`` branch channels: the first 1x1 conv with ``tl.dot`` on
   the tile's input pixels plus the depthwise halo (the halo is recomputed by the
   neighbouring tiles, never exchanged), ReLU, zero outside the image (the
   depthwise's zero padding), written to a per-program scratch slot; then the
   3x3 depthwise reads that slot back shifted for its 9 taps and writes the
   chunk's result to a second per-program slot ``[TILE pixels, B]``;
2. stride 2 only: the projection's depthwise straight from the input (its taps
   are the input pixels the tile already read, served by L1/L2) into a third slot;
3. per chunk of output channels: the second 1x1 conv (``tl.dot`` over the
   depthwise slot) + bias + ReLU, and the other half (the input's first half
   copied at stride 1, the projection's 1x1 conv at stride 2), interleaved with
   ``tl.interleave`` into output channels ``2i`` / ``2i + 1`` and stored once.

Why scratch in global memory: the depthwise needs each pixel's neighbours, and
Triton cannot gather registers by an arbitrary index (nor address shared memory
directly). The scratch slots are per program and rewritten for every tile, so
they stay in L1/L2: no intermediate of the branch goes to memory in full. The
phases are separated by ``tl.debug_barrier()`` (``bar.sync``, which also orders
the program's global-memory accesses).

What the fusion costs: the first 1x1 runs on the halo'd tile (stride 1: 10x10
pixels, padded to 128 rows, per 64 outputs; stride 2: 17x17, padded to 320, per
64 outputs, against the 256 input pixels the tile covers), and each chunk of
branch channels re-reads the tile's input from L1/L2. Tensor-core work and cache
traffic, traded for the DRAM passes of the unfused unit.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from shufflenet_kernels.ops import check_v2_unit_args

from ._common import INTERPRET, acc_is_fp64, empty_output, launch, num_sms, pow2_clamp, triton_op
from .pointwise import _mma, _zeros

# ---- kernel ------------------------------------------------------------------


@triton.jit
def _v2_unit_kernel(
    x_ptr,
    w1_ptr,
    b1_ptr,
    wd_ptr,
    bd_ptr,
    w2_ptr,
    b2_ptr,
    pwd_ptr,
    pbd_ptr,
    pw_ptr,
    pb_ptr,
    out_ptr,
    scr1_ptr,
    scr2_ptr,
    scr3_ptr,
    B,
    K1,
    c1_offset,
    H,
    W,
    H_out,
    W_out,
    tiles_h,
    tiles_w,
    num_tiles,
    x_sn,
    x_sc,
    x_sh,
    x_sw,
    o_sn,
    o_sc,
    o_sh,
    o_sw,
    w1_so,
    w1_si,
    w2_so,
    w2_si,
    p_so,
    p_si,
    scr2_ld,
    scr3_ld,
    STRIDE: tl.constexpr,
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_HALO: tl.constexpr,
    HALO_CHUNKS: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_K: tl.constexpr,
    FP64: tl.constexpr,
    FP32_PRECISE: tl.constexpr,
):
    # B: branch channels (= output channels / 2); K1: input channels of the first
    # 1x1 conv (B at stride 1, C at stride 2), starting at input channel c1_offset.
    # In-image offsets are 32-bit (the host checks one image fits); the image's
    # base offset is 64-bit.
    HALO_H: tl.constexpr = (TILE_H - 1) * STRIDE + 3
    HALO_W: tl.constexpr = (TILE_W - 1) * STRIDE + 3
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    scr1 = scr1_ptr + pid.to(tl.int64) * (HALO_CHUNKS * BLOCK_HALO * BLOCK_C)
    scr2 = scr2_ptr + pid.to(tl.int64) * BLOCK_P * scr2_ld
    scr3 = scr3_ptr + pid.to(tl.int64) * BLOCK_P * scr3_ld
    cc = tl.arange(0, BLOCK_C)
    kk = tl.arange(0, BLOCK_K)
    pp = tl.arange(0, BLOCK_P)
    # Output pixel (row, col) of each tile slot; slots past the tile are padding.
    pr = pp // TILE_W
    pc = pp % TILE_W
    p_ok = pp < TILE_H * TILE_W
    tiles_per_image = tiles_h * tiles_w
    for t in range(pid, num_tiles, nprog):
        n = t // tiles_per_image
        rem = t % tiles_per_image
        oh0 = (rem // tiles_w) * TILE_H
        ow0 = (rem % tiles_w) * TILE_W
        x_n = x_ptr + n.to(tl.int64) * x_sn
        out_n = out_ptr + n.to(tl.int64) * o_sn
        oh = oh0 + pr
        ow = ow0 + pc
        out_ok = p_ok & (oh < H_out) & (ow < W_out)
        ih0 = oh0 * STRIDE - 1
        iw0 = ow0 * STRIDE - 1

        # 1. branch: first 1x1 on the halo'd tile -> scratch 1 -> depthwise -> scratch 2.
        for c0 in range(0, B, BLOCK_C):
            c = c0 + cc
            c_ok = c < B
            bias1 = tl.load(b1_ptr + c, mask=c_ok, other=0.0)
            for hc in range(HALO_CHUNKS):
                hp = hc * BLOCK_HALO + tl.arange(0, BLOCK_HALO)
                ih = ih0 + hp // HALO_W
                iw = iw0 + hp % HALO_W
                h_ok = (hp < HALO_H * HALO_W) & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
                x_pix = ih * x_sh + iw * x_sw
                acc = _zeros(BLOCK_HALO, BLOCK_C, FP64)
                for k0 in range(0, K1, BLOCK_K):
                    k = k0 + kk
                    k_ok = k < K1
                    a = tl.load(
                        x_n + (c1_offset + k)[None, :] * x_sc + x_pix[:, None],
                        mask=h_ok[:, None] & k_ok[None, :],
                        other=0.0,
                    )
                    b = tl.load(
                        w1_ptr + c[None, :] * w1_so + k[:, None] * w1_si,
                        mask=k_ok[:, None] & c_ok[None, :],
                        other=0.0,
                    )
                    acc = _mma(a, b, acc, FP32_PRECISE)
                acc = tl.maximum(acc + bias1.to(acc.dtype)[None, :], 0.0)
                # Outside the image the depthwise sees its zero padding, not relu(bias).
                acc = tl.where(h_ok[:, None], acc, 0.0)
                tl.store(scr1 + hp[:, None] * BLOCK_C + cc[None, :], acc.to(scr1_ptr.dtype.element_ty))
            tl.debug_barrier()
            dacc = _zeros(BLOCK_P, BLOCK_C, FP64)
            # A loop over the rows (not unrolled) keeps 3 taps' loads in flight, not 9:
            # all 9 at once spilled (sm_90a).
            for kh in range(3):
                for kw in tl.static_range(3):
                    hp = (pr * STRIDE + kh) * HALO_W + pc * STRIDE + kw
                    v = tl.load(scr1 + hp[:, None] * BLOCK_C + cc[None, :], mask=p_ok[:, None], other=0.0)
                    wv = tl.load(wd_ptr + c * 9 + (kh * 3 + kw), mask=c_ok, other=0.0)
                    dacc += v.to(dacc.dtype) * wv.to(dacc.dtype)[None, :]
            dacc += tl.load(bd_ptr + c, mask=c_ok, other=0.0).to(dacc.dtype)[None, :]
            tl.store(
                scr2 + pp[:, None] * scr2_ld + c[None, :],
                dacc.to(scr2_ptr.dtype.element_ty),
                mask=c_ok[None, :],
            )
            # Scratch 1 is rewritten by the next chunk.
            tl.debug_barrier()

        # 2. stride 2: the projection's depthwise on the input -> scratch 3.
        if STRIDE == 2:
            for c0 in range(0, K1, BLOCK_C):
                c = c0 + cc
                c_ok = c < K1
                dacc = _zeros(BLOCK_P, BLOCK_C, FP64)
                for kh in range(3):
                    ih = oh * 2 - 1 + kh
                    row_ok = p_ok & (ih >= 0) & (ih < H)
                    for kw in tl.static_range(3):
                        iw = ow * 2 - 1 + kw
                        m = row_ok & (iw >= 0) & (iw < W)
                        v = tl.load(
                            x_n + c[None, :] * x_sc + (ih * x_sh + iw * x_sw)[:, None],
                            mask=m[:, None] & c_ok[None, :],
                            other=0.0,
                        )
                        wv = tl.load(pwd_ptr + c * 9 + (kh * 3 + kw), mask=c_ok, other=0.0)
                        dacc += v.to(dacc.dtype) * wv.to(dacc.dtype)[None, :]
                dacc += tl.load(pbd_ptr + c, mask=c_ok, other=0.0).to(dacc.dtype)[None, :]
                tl.store(
                    scr3 + pp[:, None] * scr3_ld + c[None, :],
                    dacc.to(scr3_ptr.dtype.element_ty),
                    mask=c_ok[None, :],
                )
            tl.debug_barrier()

        # 3. second 1x1 (+ the other half), interleaved: channel 2j <- half, 2j+1 <- branch.
        for j0 in range(0, B, BLOCK_C):
            j = j0 + cc
            j_ok = j < B
            acc_y = _zeros(BLOCK_P, BLOCK_C, FP64)
            for k0 in range(0, B, BLOCK_K):
                k = k0 + kk
                k_ok = k < B
                a = tl.load(scr2 + pp[:, None] * scr2_ld + k[None, :], mask=k_ok[None, :], other=0.0)
                b = tl.load(
                    w2_ptr + j[None, :] * w2_so + k[:, None] * w2_si,
                    mask=k_ok[:, None] & j_ok[None, :],
                    other=0.0,
                )
                acc_y = _mma(a, b, acc_y, FP32_PRECISE)
            acc_y = tl.maximum(acc_y + tl.load(b2_ptr + j, mask=j_ok, other=0.0).to(acc_y.dtype)[None, :], 0.0)
            if STRIDE == 1:
                # The identity half: input channel j, copied bit for bit.
                half = tl.load(
                    x_n + j[None, :] * x_sc + (oh * x_sh + ow * x_sw)[:, None],
                    mask=out_ok[:, None] & j_ok[None, :],
                    other=0.0,
                )
            else:
                acc_p = _zeros(BLOCK_P, BLOCK_C, FP64)
                for k0 in range(0, K1, BLOCK_K):
                    k = k0 + kk
                    k_ok = k < K1
                    a = tl.load(scr3 + pp[:, None] * scr3_ld + k[None, :], mask=k_ok[None, :], other=0.0)
                    b = tl.load(
                        pw_ptr + j[None, :] * p_so + k[:, None] * p_si,
                        mask=k_ok[:, None] & j_ok[None, :],
                        other=0.0,
                    )
                    acc_p = _mma(a, b, acc_p, FP32_PRECISE)
                half = tl.maximum(acc_p + tl.load(pb_ptr + j, mask=j_ok, other=0.0).to(acc_p.dtype)[None, :], 0.0)
            z = tl.interleave(half.to(out_ptr.dtype.element_ty), acc_y.to(out_ptr.dtype.element_ty))
            ch = 2 * j0 + tl.arange(0, 2 * BLOCK_C)
            tl.store(
                out_n + ch[None, :] * o_sc + (oh * o_sh + ow * o_sw)[:, None],
                z,
                mask=out_ok[:, None] & (ch < 2 * B)[None, :],
            )
        # The scratch slots are rewritten by the next tile.
        tl.debug_barrier()


# ---- host launcher ---------------------------------------------------------------

# NOTE: educated defaults, not timed on a GPU yet. An 8x8 output tile gives
# tl.dot 64 pixel rows; its halo is 10x10 (stride 1, two 64-pixel chunks) or 17x17
# (stride 2, five chunks). 32 channels per chunk fit V2's widths (B = 24 to 488)
# with little masking. Compiled for sm_90a (triton_kernels/aot.py), 4 warps with
# the default 3 pipeline stages spilled in every fp32 and stride-2 specialization
# (up to 1424 B at 255 registers); 8 warps without pipelining (the K loops are
# short and read L2-resident data) spill in none (128 to 220 registers).
# Programs: two per SM, looping over the tiles, so the per-program scratch (at
# most ~300 KB for B = C = 488 in fp32) stays bounded.
_TILE_H = 8
_TILE_W = 8
_BLOCK_HALO = 64
_BLOCK_C = 32
_BLOCK_K = 32
_PROGRAMS_PER_SM = 2
# Under the interpreter each program and each loop step costs Python overhead:
# one tile per image (up to 16x16) and single-chunk channel loops.
_TILE_INTERPRET = 16
_BLOCK_INTERPRET = 512
# Few programs there, so that programs loop over several tiles (and reuse their
# scratch) in the tests too.
_PROGRAMS_INTERPRET = 3


def _blocks(h_out: int, w_out: int, stride: int, b: int, k1: int) -> dict:
    """Tile and block meta-parameters of the kernel."""
    if INTERPRET:
        tile_h, tile_w = min(h_out, _TILE_INTERPRET), min(w_out, _TILE_INTERPRET)
        halo = ((tile_h - 1) * stride + 3) * ((tile_w - 1) * stride + 3)
        block_halo = pow2_clamp(halo, 16, 4096)
        block_c = pow2_clamp(b, 16, _BLOCK_INTERPRET)
        block_k = pow2_clamp(max(b, k1), 16, _BLOCK_INTERPRET)
        num_warps = 4
    else:
        tile_h, tile_w = _TILE_H, _TILE_W
        halo = ((tile_h - 1) * stride + 3) * ((tile_w - 1) * stride + 3)
        block_halo, block_c, block_k, num_warps = _BLOCK_HALO, _BLOCK_C, _BLOCK_K, 8
    return dict(
        STRIDE=stride,
        TILE_H=tile_h,
        TILE_W=tile_w,
        BLOCK_P=pow2_clamp(tile_h * tile_w, 16, 1 << 16),
        BLOCK_HALO=block_halo,
        HALO_CHUNKS=triton.cdiv(halo, block_halo),
        BLOCK_C=block_c,
        BLOCK_K=block_k,
        num_warps=num_warps,
        num_stages=1,
    )


def _max_offset(t: Tensor) -> int:
    """Largest element offset of one image of ``t`` from the image's start."""
    return sum((t.shape[d] - 1) * abs(t.stride(d)) for d in range(1, t.dim()))


@triton_op("shufflenet_triton::v2_unit")
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
    """One ShuffleNet V2 unit in eval mode (BatchNorm folded into the weights and biases).

    Stride 1: input ``[N, 2B, H, W]``, ``x1, x2 = input[:, :B], input[:, B:]``,
    ``y = pw(dw(pw(x2, pw1, relu), dw), pw2, relu)``, output ``concat_shuffle(x1, y, 2)``
    ``[N, 2B, H, W]``; the ``proj_*`` arguments are None. Stride 2: input ``[N, C, H, W]``,
    ``p = pw(dw(input, proj_dw), proj_pw, relu)``, ``y`` as above on the whole input
    with a stride-2 depthwise, output ``concat_shuffle(p, y, 2)`` ``[N, 2B, H_out, W_out]``.
    Weights: pw1 ``[B, B or C, 1, 1]``, dw ``[B, 1, 3, 3]``, pw2 ``[B, B, 1, 1]``,
    proj_dw ``[C, 1, 3, 3]``, proj_pw ``[B, C, 1, 1]``; biases ``[channels]`` or None.
    Depthwise convs have padding 1 and no ReLU. Output in input's memory format.
    Inference only: raises if an argument requires grad while grad mode is on.
    """
    shape = check_v2_unit_args(
        input, proj_dw_weight, proj_dw_bias, proj_pw_weight, proj_pw_bias,
        pw1_weight, pw1_bias, dw_weight, dw_bias, pw2_weight, pw2_bias, stride,
    )
    b = shape.c_half
    # The kernel keeps the branch in one set of channel blocks: its inner width (pw1's
    # outputs) must equal its output width B, as in every ShuffleNet V2 unit.
    torch._check(
        shape.c_mid == b,
        lambda: f"v2_unit: the Triton kernel needs pw1_weight's outputs ({shape.c_mid}) to equal "
        f"pw2_weight's outputs ({b})",
    )
    n, c, h, w = input.shape
    h_out, w_out = (h - 1) // stride + 1, (w - 1) // stride + 1
    out = empty_output((n, 2 * b, h_out, w_out), input)
    if out.numel() == 0:
        return out
    torch._check(
        max(_max_offset(input), _max_offset(out)) < 2**31,
        lambda: "v2_unit: one image of input or output spans 2^31 elements or more; not supported",
    )
    k1 = b if stride == 1 else c
    meta = _blocks(h_out, w_out, stride, b, k1)
    tiles_h = triton.cdiv(h_out, meta["TILE_H"])
    tiles_w = triton.cdiv(w_out, meta["TILE_W"])
    num_tiles = n * tiles_h * tiles_w
    cap = _PROGRAMS_INTERPRET if INTERPRET else _PROGRAMS_PER_SM * num_sms(input.device)
    programs = min(num_tiles, cap)

    def dense_bias(t: Tensor | None, size: int) -> Tensor:
        # The kernel reads biases with unit stride; missing ones are zeros (BN-folded
        # units always have them, and this keeps one kernel).
        return t.contiguous() if t is not None else input.new_zeros((size,))

    b1, bd, b2 = dense_bias(pw1_bias, b), dense_bias(dw_bias, b), dense_bias(pw2_bias, b)
    wd = dw_weight.reshape(b, 9).contiguous()
    if stride == 2:
        assert proj_dw_weight is not None and proj_pw_weight is not None
        pwd = proj_dw_weight.reshape(c, 9).contiguous()
        pbd, pw, pb = dense_bias(proj_dw_bias, c), proj_pw_weight, dense_bias(proj_pw_bias, b)
    else:
        # Never read at stride 1: stand-ins of the right dtype.
        pwd, pbd, pw, pb = wd, bd, pw2_weight, b2
    block_p, block_c = meta["BLOCK_P"], meta["BLOCK_C"]
    scr2_ld = triton.cdiv(b, block_c) * block_c
    scr3_ld = triton.cdiv(k1, block_c) * block_c if stride == 2 else 1
    scr1 = input.new_empty((programs, meta["HALO_CHUNKS"] * meta["BLOCK_HALO"] * block_c))
    scr2 = input.new_empty((programs, block_p * scr2_ld))
    scr3 = input.new_empty((programs, block_p * scr3_ld))
    launch(_v2_unit_kernel)[(programs,)](
        input,
        pw1_weight,
        b1,
        wd,
        bd,
        pw2_weight,
        b2,
        pwd,
        pbd,
        pw,
        pb,
        out,
        scr1,
        scr2,
        scr3,
        b,
        k1,
        b if stride == 1 else 0,
        h,
        w,
        h_out,
        w_out,
        tiles_h,
        tiles_w,
        num_tiles,
        *input.stride(),
        *out.stride(),
        pw1_weight.stride(0),
        pw1_weight.stride(1),
        pw2_weight.stride(0),
        pw2_weight.stride(1),
        pw.stride(0),
        pw.stride(1),
        scr2_ld,
        scr3_ld,
        FP64=acc_is_fp64(input),
        FP32_PRECISE=input.dtype == torch.float32,
        **meta,
    )
    return out


# ---- inference only ------------------------------------------------------------------

_INFERENCE_ONLY = (
    "v2_unit: inference only, but an argument requires grad; call it under torch.no_grad() or "
    "torch.inference_mode(), or use the per-op path (pointwise_conv, depthwise_conv2d, concat_shuffle) to train"
)


def _refuse_grad(ctx: object, inputs: tuple, output: Tensor) -> None:
    # The autograd kernel calls this only when grad mode is on and an input requires
    # grad (the op body itself runs below autograd and cannot see it).
    raise RuntimeError(_INFERENCE_ONLY)


def _no_backward(ctx: object, grad: Tensor) -> tuple:
    raise RuntimeError(_INFERENCE_ONLY)


torch.library.register_autograd("shufflenet_triton::v2_unit", _no_backward, setup_context=_refuse_grad)
