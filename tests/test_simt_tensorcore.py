"""The tensor-core pointwise_conv kernels (nvcuda::wmma) under the SIMT emulation.

``torch.ops.shufflenet_simt.pointwise_conv`` and its backward (the CUDA host code
and kernels, run on the CPU with the emulated wmma of csrc/simt/wmma.h) against
the CPU op in every dtype: float32 at matmul precision "highest" (the FFMA
kernels) and "high" (TF32 tensor cores), float16 and bfloat16 (tensor cores);
NCHW, channels_last and channel slices of both; groups 1/2/3/4/8 with and without
the fused shuffle, with and without bias and ReLU; ShuffleNet V1 and V2 channel
counts (every block-tile shape) and pixel counts that leave partial tiles. Then
the wmma emulation itself: controls against torch and planted misuse that it
must report.

Skipped when ``_C_simt`` is not built; with ``SHUFFLENET_EXPECT_SIMT=1`` a missing
build fails (as in tests/test_simt.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch

from tests.test_simt import BF16, F16, F32, SIMT_ERROR, pos, simt, t

pytestmark = pytest.mark.simt

cpu = torch.ops.shufflenet
emu = torch.ops.shufflenet_simt


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    if simt is None:  # only with SHUFFLENET_EXPECT_SIMT=1: every test fails
        pytest.fail(f"SHUFFLENET_EXPECT_SIMT=1 but {SIMT_ERROR}")
    precision = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(precision)
    simt.set_index32_limit(2**31 - 1)
    simt.set_grid_limits(0, 65535)


# ---- cases ------------------------------------------------------------------------


@dataclass(frozen=True)
class Mode:
    """A dtype and, for float32, the matmul precision; which kernels must run."""

    name: str
    dtype: torch.dtype
    precision: str
    tensor_cores: bool
    tol: float  # relative to the largest reference value


MODES = (
    Mode("f32-highest", F32, "highest", False, 1e-5),
    Mode("f32-high", F32, "high", True, 4e-3),  # TF32: 10-bit mantissa inputs
    Mode("f16", F16, "highest", True, 1e-2),
    Mode("bf16", BF16, "highest", True, 3e-2),
)


@dataclass(frozen=True)
class Conv:
    """[N, c_in, H, W] -> [N, c_out, H, W] with `groups` and the fused shuffle."""

    name: str
    shape: tuple[int, int, int, int]
    c_out: int
    groups: int
    shuffle: int
    bias: bool = True
    relu: bool = True


# Rows per group (c_out / groups forward, c_in / groups for grad_input) pick the
# block tile: <= 16, <= 32, larger.
CONVS = (
    Conv("v2-116", (2, 116, 5, 7), 116, 1, 1),  # V2 1.0x branch conv: 64-row tiles, 70 pixels
    Conv("v2-58-slice-tail", (1, 58, 9, 15), 58, 1, 1, bias=False),  # 135 pixels: a partial second tile
    Conv("v2-wide-136", (2, 24, 3, 3), 136, 1, 1, relu=False),  # three 64-row tiles, the last partial
    Conv("v1-g2-m20", (2, 48, 3, 5), 40, 2, 2),  # 20 per group
    Conv("v1-g3-m20", (2, 60, 5, 3), 60, 3, 3),  # 20 per group, shuffled
    Conv("v1-g3-m80-noshuffle", (1, 60, 4, 5), 240, 3, 1),  # expansion: 80 per group, K = 20
    Conv("v1-g4-m12", (2, 48, 3, 3), 48, 4, 4, bias=False, relu=False),  # 12 per group
    Conv("v1-g8-m12", (2, 96, 3, 5), 96, 8, 8),  # V1 g = 8: 12 per group
    Conv("v1-g8-m12-noshuffle", (1, 96, 1, 7), 96, 8, 1),  # odd pixel count, no shuffle
    Conv("g1-tiny", (3, 8, 1, 1), 16, 1, 1),  # K = 8 < one k step, H = W = 1
)
LAYOUTS = ("nchw", "cl", "slice", "slice_cl")


def conv_args(c: Conv, layout: str, dtype: torch.dtype) -> tuple:
    n, c_in, h, w = c.shape
    x = t(c.shape, layout, dtype)
    k = c_in // c.groups
    weight = (torch.randn(c.c_out, k, 1, 1) / max(1, k) ** 0.5).to(dtype)
    bias = torch.randn(c.c_out, dtype=dtype) if c.bias else None
    return x, weight, bias, c.groups, c.shuffle, c.relu


def bwd_args(c: Conv, layout: str, dtype: torch.dtype, mask=(True, True, True)) -> tuple:
    x, weight, _, g, s, _ = conv_args(c, layout, dtype)
    out_shape = (c.shape[0], c.c_out, *c.shape[2:])
    out_layout = "cl" if layout in ("cl", "slice_cl") else "nchw"
    grad = t(out_shape, out_layout, dtype)
    relu_out = pos(out_shape, out_layout, dtype) if c.relu else None
    return grad, x, weight, relu_out, g, s, list(mask)


def check_close(ours, ref, tol: float) -> None:
    ours = ours if isinstance(ours, (tuple, list)) else (ours,)
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        if b.numel() > 1:
            assert a.stride() == b.stride(), f"strides {a.stride()} != CPU op's {b.stride()}"
        scale = max(1.0, b.float().abs().max().item()) if b.numel() else 1.0
        torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol * scale)


def kernels_run() -> set[str]:
    return {name.split("<")[0] for name in simt.launch_counts()}


def expect_kernels(mode: Mode, backward: bool) -> None:
    ran = kernels_run()
    gemm, wgrad = ("pw_mma_kernel", "pw_wgrad_mma_kernel") if mode.tensor_cores else (
        "pw_gemm_kernel", "pw_wgrad_partial_kernel")
    assert gemm in ran or (backward and wgrad in ran), ran
    other = {"pw_gemm_kernel", "pw_wgrad_partial_kernel"} if mode.tensor_cores else {
        "pw_mma_kernel", "pw_wgrad_mma_kernel"}
    assert not ran & other, ran


def run(op: str, args: tuple, mode: Mode, backward: bool) -> None:
    torch.set_float32_matmul_precision(mode.precision)
    simt.reset_launch_counts()
    ours = getattr(emu, op)(*args)
    ref = getattr(cpu, op)(*args)
    check_close(ours, ref, mode.tol)
    expect_kernels(mode, backward)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("conv", CONVS, ids=lambda c: c.name)
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_forward(mode: Mode, conv: Conv, layout: str) -> None:
    torch.manual_seed(hash((conv.name, layout, mode.name)) % 2**31)
    run("pointwise_conv", conv_args(conv, layout, mode.dtype), mode, False)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("conv", CONVS, ids=lambda c: c.name)
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_backward(mode: Mode, conv: Conv, layout: str) -> None:
    torch.manual_seed(hash((conv.name, layout, mode.name, "bwd")) % 2**31)
    run("pointwise_conv_backward", bwd_args(conv, layout, mode.dtype), mode, True)


BY_NAME = {c.name: c for c in CONVS}
TC_MODES = [m for m in MODES if m.tensor_cores]


@pytest.mark.parametrize("mode", TC_MODES, ids=lambda m: m.name)
@pytest.mark.parametrize("name", ["v2-58-slice-tail", "v1-g3-m20", "v1-g8-m12"])
def test_small_grids_and_int64_index(mode: Mode, name: str) -> None:
    """At most 2 blocks along x and 3 along y: blocks loop over several group tiles
    (the barriers that protect the reused tiles and channel tables run); then the
    64-bit index instantiations."""
    conv = BY_NAME[name]
    simt.set_grid_limits(2, 3)
    run("pointwise_conv", conv_args(conv, "slice_cl", mode.dtype), mode, False)
    run("pointwise_conv_backward", bwd_args(conv, "slice", mode.dtype), mode, True)
    simt.set_grid_limits(0, 65535)
    simt.set_index32_limit(0)
    run("pointwise_conv", conv_args(conv, "cl", mode.dtype), mode, False)
    run("pointwise_conv_backward", bwd_args(conv, "nchw", mode.dtype), mode, True)
    assert all("long int" in n for n in simt.launch_counts() if "finish" not in n), simt.launch_counts()


@pytest.mark.parametrize("mode", TC_MODES, ids=lambda m: m.name)
@pytest.mark.parametrize("layout", ["nchw", "cl"])
def test_weight_gradient_splits(mode: Mode, layout: str) -> None:
    """2112 pixels: the weight-gradient reduction is split over blocks (a partial
    last 64-pixel stage in each split), and the partial sums are added in order."""
    conv = Conv("split", (2, 24, 32, 33), 24, 2, 2)
    args = bwd_args(conv, layout, mode.dtype, mask=(False, True, True))
    run("pointwise_conv_backward", args, mode, True)


def test_masks_and_no_relu() -> None:
    """Only some gradients asked for; no ReLU mask."""
    mode = MODES[2]
    conv = Conv("mask", (2, 24, 5, 5), 36, 3, 2, relu=False)
    for mask in ((True, False, False), (False, True, False), (False, False, True)):
        run("pointwise_conv_backward", bwd_args(conv, "cl", mode.dtype, mask), mode, True)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_wide_group_channel_table(mode: Mode) -> None:
    """K = 10240 channels per group: the B-row channel table needs the shared-memory
    opt-in past 48 KB, next to the tensor-core kernel's static tiles."""
    x = torch.randn(1, 10240, 1, 3).to(mode.dtype)
    w = (torch.randn(2, 10240, 1, 1) / 100).to(mode.dtype)
    run("pointwise_conv", (x, w, None, 1, 1, False), mode, False)


def test_tile_shapes_follow_rows_per_group() -> None:
    """16-row tiles for up to 16 rows per group, 32 up to 32, 64 above (64 x 64
    pixels for TF32); the weight gradient's 16 x 32 tile when the conv channels
    (<= 16) or the input channels (<= 31) per group are few, 32 x 64 otherwise."""
    torch.set_float32_matmul_precision("highest")
    cases = {  # (c_in, c_out, groups) -> forward tile
        (96, 96, 8): "16, 128, 1>",
        (60, 60, 3): "32, 128, 1>",
        (116, 116, 1): "64, 128, 2>",
    }
    for (c_in, c_out, g), tile in cases.items():
        simt.reset_launch_counts()
        x = torch.randn(1, c_in, 3, 3, dtype=F16)
        w = torch.randn(c_out, c_in // g, 1, 1, dtype=F16)
        emu.pointwise_conv(x, w, None, g, 1, False)
        (name,) = simt.launch_counts()
        assert name == f"pw_mma_kernel<c10::Half, int, false, {tile}", name
    torch.set_float32_matmul_precision("high")  # TF32: 64 x 64 (fragments twice the registers)
    simt.reset_launch_counts()
    emu.pointwise_conv(torch.randn(1, 116, 3, 3), torch.randn(116, 116, 1, 1), None, 1, 1, False)
    assert list(simt.launch_counts()) == ["pw_mma_kernel<float, int, false, 64, 64, 2>"]
    simt.reset_launch_counts()
    grad = torch.randn(1, 96, 3, 3, dtype=F16)
    emu.pointwise_conv_backward(grad, torch.randn(1, 96, 3, 3, dtype=F16), torch.randn(96, 12, 1, 1, dtype=F16),
                                None, 8, 8, [False, True, False])
    assert "pw_wgrad_mma_kernel<c10::Half, int, false, 16, 32>" in simt.launch_counts()
    for c_in, c_out, g, tile in ((96, 384, 8, "16, 32>"), (384, 96, 8, "16, 32>"), (116, 116, 1, "32, 64>")):
        simt.reset_launch_counts()
        x = torch.randn(1, c_in, 2, 2, dtype=F16)
        emu.pointwise_conv_backward(torch.randn(1, c_out, 2, 2, dtype=F16), x,
                                    torch.randn(c_out, c_in // g, 1, 1, dtype=F16), None, g, 1, [False, True, False])
        assert f"pw_wgrad_mma_kernel<c10::Half, int, false, {tile}" in simt.launch_counts(), (c_in, c_out, g)


# ---- the wmma emulation itself -------------------------------------------------------


def planted(name: str, a: torch.Tensor | None = None, b: torch.Tensor | None = None) -> torch.Tensor:
    a = torch.zeros(16, 16) if a is None else a
    b = torch.zeros(16, 16) if b is None else b
    return torch.ops.shufflenet_simt_testing.wmma_planted(name, a, b)


def tf32_round(x: torch.Tensor) -> torch.Tensor:
    """cvt.rna.tf32.f32: nearest, ties away from zero, low 13 bits cleared."""
    bits = x.view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def tf32_truncate(x: torch.Tensor) -> torch.Tensor:
    return (x.view(torch.int32) & ~0x1FFF).view(torch.float32)


@pytest.mark.parametrize("dtype", [F16, BF16])
def test_wmma_half_control(dtype: torch.dtype) -> None:
    """fill, row- and col-major loads, mma, a uniform x[i] scaling, store."""
    a = torch.randn(16, 16).to(dtype)
    b = torch.randn(16, 16).to(dtype)
    out = planted("half_control", a, b.t().contiguous())
    ref = 2 * (a.double() @ b.double() + 1)
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-5)


def test_wmma_tf32_rounds_like_the_gpu() -> None:
    """__float_to_tf32 rounds to nearest (ties away); products are exact, so the
    result is the float64 product of the rounded operands to float accuracy, and
    differs from the unrounded product."""
    a = torch.randn(16, 16)
    b = torch.randn(16, 16)
    out = planted("tf32_control", a, b)
    ref = (tf32_round(a).double() @ tf32_round(b).double()).t()  # stored column-major
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)
    assert (out.double() - (a.double() @ b.double()).t()).abs().max() > 1e-5


def test_wmma_tf32_truncates_unconverted_inputs() -> None:
    """Without __float_to_tf32 the tensor core drops the low 13 mantissa bits."""
    a = torch.randn(16, 16)
    b = torch.randn(16, 16)
    out = planted("tf32_truncating", a, b)  # one k step: A[:, :8] @ B[:8]
    ref = tf32_truncate(a[:, :8].contiguous()).double() @ tf32_truncate(b[:8].contiguous()).double()
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)


WMMA_BUGS = {
    "divergent": r"warp 0: lanes \{0, 1, .*15\} wait in wmma::load_matrix_sync\(mask 0xffffffff\) "
                 r"for lanes \{16, .*31\}",
    "misaligned": r"wmma::load_matrix_sync: misaligned address .*256-bit aligned",
    "nonuniform": r"wmma::load_matrix_sync: lane \d+ passes a pointer or ldm different from lane 0's",
}


@pytest.mark.parametrize("name", sorted(WMMA_BUGS))
def test_wmma_misuse_is_reported(name: str) -> None:
    with pytest.raises(RuntimeError, match=WMMA_BUGS[name]) as info:
        planted(name)
    assert f"{name}_kernel" in str(info.value)


def test_wmma_store_then_load_without_barrier_is_a_race() -> None:
    if not simt.access_checks():
        pytest.skip("_C_simt was built without the access checks (SHUFFLENET_SIMT_CHECKS=0 or the ASan build)")
    with pytest.raises(RuntimeError, match=r"store_load_race_kernel.*shared-memory race: thread \(\d+, 0, 0\) wrote "
                                           r"`tile`.*thread \(\d+, 0, 0\) reads it"):
        planted("store_load_race")
