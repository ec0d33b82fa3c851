"""The CPU pointwise_conv routes (oneDNN convolution, BLAS GEMMs, register tiles), each forced
through ``SHUFFLENET_CPU_POINTWISE`` and as picked per case, against the float64
reference: every group count, dtype, layout, channel slices, batch sizes, bias and
ReLU on and off, shuffle on and off, shapes that are not multiples of the kernels'
blocks; gradients; half types rounded once; output strides equal the fake kernel's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import shufflenet_kernels
from shufflenet_kernels import reference

pytestmark = pytest.mark.skipif(not shufflenet_kernels.NATIVE_AVAILABLE, reason="needs the C++ extension")

ROUTE_ENV = "SHUFFLENET_CPU_POINTWISE"
ROUTES = ["auto", "gemm", "onednn", "tile"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
# (groups, shuffle_groups, c_in, c_out): channel counts off the 16/64 blocks of
# oneDNN's kernels and BLAS's register tiles.
CONVS = [
    (1, 1, 24, 70),
    (1, 2, 17, 34),
    (1, 5, 40, 35),
    (2, 2, 10, 14),
    (3, 3, 12, 18),
    (3, 1, 15, 30),
    (4, 4, 16, 8),
    (8, 8, 24, 24),
    (8, 2, 16, 32),
]
# Sums in float32 of products of float64-exact inputs: float64 checks to 1e-12,
# float32 to 1e-5; half types are rounded once from a float32 sum.
TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=2e-3, atol=2e-3),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2),
}


@pytest.fixture(params=ROUTES)
def route(request, monkeypatch) -> str:
    if request.param == "auto":
        monkeypatch.delenv(ROUTE_ENV, raising=False)
    else:
        monkeypatch.setenv(ROUTE_ENV, request.param)
    return request.param


def _input(n: int, c: int, hw: tuple[int, int], layout: str, channel_slice: bool, dtype: torch.dtype):
    extra = 5 if channel_slice else 0
    x = torch.randn(n, c + extra, *hw).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x[:, 3 : 3 + c] if channel_slice else x


def _expected_strides(shape, like: torch.Tensor) -> tuple[int, ...]:
    fmt = shufflenet_kernels.ops.output_memory_format(like)
    return torch.empty(shape, memory_format=fmt).stride()


def _reference64(x, w, b, groups, shuffle_groups, relu):
    return reference.pointwise_conv(
        x.double(), w.double(), None if b is None else b.double(), groups, shuffle_groups, relu
    )


@pytest.mark.parametrize("groups,shuffle_groups,c_in,c_out", CONVS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("channel_slice", [False, True], ids=["dense", "slice"])
def test_forward_routes(route, groups, shuffle_groups, c_in, c_out, dtype, layout, channel_slice):
    for n, hw in [(1, (5, 3)), (3, (9, 9)), (2, (1, 1))]:
        x = _input(n, c_in, hw, layout, channel_slice, dtype)
        w = (torch.randn(c_out, c_in // groups, 1, 1) / (c_in // groups) ** 0.5).to(dtype)
        b_full = torch.randn(c_out).to(dtype)
        for b in (None, b_full):
            for relu in (False, True):
                out = torch.ops.shufflenet.pointwise_conv(x, w, b, groups, shuffle_groups, relu)
                ref = _reference64(x, w, b, groups, shuffle_groups, relu)
                assert out.dtype == dtype
                assert out.stride() == _expected_strides(out.shape, x), (out.stride(), n, hw)
                where = f"n={n} hw={hw} bias={b is not None} relu={relu}"
                torch.testing.assert_close(out.double(), ref, **TOL[dtype], msg=lambda m, where=where: f"{where}: {m}")


@pytest.mark.parametrize("groups,shuffle_groups,c_in,c_out", [CONVS[0], CONVS[1], CONVS[4], CONVS[7]])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("channel_slice", [False, True], ids=["dense", "slice"])
def test_backward_routes(route, groups, shuffle_groups, c_in, c_out, dtype, layout, channel_slice):
    x = _input(3, c_in, (6, 5), layout, channel_slice, dtype)
    w = (torch.randn(c_out, c_in // groups, 1, 1) / (c_in // groups) ** 0.5).to(dtype)
    b = torch.randn(c_out).to(dtype)
    for relu in (False, True):
        _check_gradients(x, w, b, groups, shuffle_groups, relu)


def _check_gradients(x, w, b, groups, shuffle_groups, relu):
    """Autograd through the op against the float64 reference."""
    dtype = x.dtype
    xs, ws, bs = (t.detach().clone().requires_grad_() for t in (x, w, b))
    out = shufflenet_kernels.functional.pointwise_conv(xs, ws, bs, groups, shuffle_groups, relu)
    go = torch.randn_like(out)
    out.backward(go)
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    ref = reference.pointwise_conv(x64, w64, b64, groups, shuffle_groups, relu)
    # The ReLU mask is taken from the kernel's own output (a rounding apart
    # from the reference's for half types at values near 0).
    ref.backward(go.double() * (out.detach().double() > 0) if relu else go.double())
    # Gradients sum over up to C_out or N*H*W terms.
    tol = {k: v * 4 for k, v in TOL[dtype].items()}
    assert xs.grad.stride() == _expected_strides(x.shape, x)
    torch.testing.assert_close(xs.grad.double(), x64.grad, **tol)
    torch.testing.assert_close(ws.grad.double(), w64.grad, **{k: v * 10 for k, v in tol.items()})
    torch.testing.assert_close(bs.grad.double(), b64.grad, **{k: v * 10 for k, v in tol.items()})


# float32 cases the automatic choice routes by size and thread count, larger than the
# route tests above: (layout, n, hw, groups, shuffle_groups, c_in, c_out, relu).
AUTO_CASES = [
    # backward through oneDNN's convolution_backward (channels_last, no shuffle, many pixels)
    ("channels_last", 2, (28, 28), 1, 1, 16, 24, True),
    ("channels_last", 2, (28, 28), 3, 1, 12, 24, False),
    ("channels_last", 1, (28, 28), 8, 1, 16, 32, False),
    # backward GEMMs after the ReLU mask and un-shuffle (short and long runs per group)
    ("channels_last", 2, (28, 28), 3, 3, 12, 24, True),
    ("channels_last", 2, (14, 14), 2, 2, 64, 64, True),
    ("nchw", 2, (5, 5), 3, 3, 12, 24, True),
    # NCHW 7x7 at batch > 1: forward through ATen's convolution (the ReLU in the
    # shuffle's pass), backward through convolution_backward
    ("nchw", 2, (7, 7), 8, 8, 32, 64, True),
    ("nchw", 2, (7, 7), 8, 1, 32, 64, False),
    ("nchw", 3, (7, 5), 1, 1, 370, 370, True),
    # channels_last g=8 on 7x7 at batch > 1, enough work: oneDNN's grouped conv, then the shuffle
    ("channels_last", 5, (7, 7), 8, 8, 768, 1536, True),
    # ungrouped channels_last on few pixels: register tiles
    ("channels_last", 1, (28, 28), 1, 1, 40, 56, True),
    ("channels_last", 4, (7, 7), 1, 1, 24, 40, False),
]


@pytest.mark.parametrize("layout,n,hw,groups,shuffle_groups,c_in,c_out,relu", AUTO_CASES)
@pytest.mark.parametrize("channel_slice", [False, True], ids=["dense", "slice"])
@pytest.mark.parametrize("threads", [1, 2])
def test_auto_route_sizes(monkeypatch, layout, n, hw, groups, shuffle_groups, c_in, c_out, relu, channel_slice,
                          threads):
    monkeypatch.delenv(ROUTE_ENV, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = _input(n, c_in, hw, layout, channel_slice, torch.float32)
        w = torch.randn(c_out, c_in // groups, 1, 1) / (c_in // groups) ** 0.5
        b = torch.randn(c_out)
        out = torch.ops.shufflenet.pointwise_conv(x, w, b, groups, shuffle_groups, relu)
        assert out.stride() == _expected_strides(out.shape, x)
        torch.testing.assert_close(out.double(), _reference64(x, w, b, groups, shuffle_groups, relu),
                                   **TOL[torch.float32])
        _check_gradients(x, w, b, groups, shuffle_groups, relu)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("groups,shuffle_groups", [(1, 2), (1, 3), (3, 3)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("channel_slice", [False, True], ids=["dense", "slice"])
def test_gradcheck_float64(route, groups, shuffle_groups, layout, channel_slice):
    x = _input(2, 6, (3, 2), layout, channel_slice, torch.float64).requires_grad_()
    w = torch.randn(6, 6 // groups, 1, 1, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    fn = shufflenet_kernels.functional.pointwise_conv
    assert torch.autograd.gradcheck(lambda x, w, b: fn(x, w, b, groups, shuffle_groups, True), (x, w, b))


def _ordered_bits(t: torch.Tensor) -> torch.Tensor:
    """16-bit float patterns as integers ordered like the values (+0 == -0)."""
    i = t.view(torch.int16).to(torch.int32)
    return torch.where(i < 0, -(i & 0x7FFF), i)


def _ulp_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (_ordered_bits(a) - _ordered_bits(b)).abs()


def _cancelling_inputs(dtype, layout, groups, c_in=24, c_out=24):
    """x around 4 and a bias that cancels 4 * sum(w): the conv alone is large, the
    output small. Every value is a multiple of 1/16 with few bits, so float32 sums
    them exactly and the one rounding to the half type is the only error."""
    g = torch.Generator().manual_seed(1)
    x = 4 + torch.randint(-8, 9, (2, c_in, 7, 5), generator=g).double() / 16
    w = torch.randint(-16, 17, (c_out, c_in // groups, 1, 1), generator=g).double() / 16
    s = w.sum((1, 2, 3))
    b = -4 * s + torch.randint(-8, 9, (c_out,), generator=g).double() / 32
    x, w, b = x.to(dtype), w.to(dtype), b.to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x, w, b


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("groups,shuffle_groups", [(1, 1), (1, 2), (3, 3)])
@pytest.mark.parametrize("relu", [False, True])
def test_half_bias_rounds_once(route, dtype, layout, groups, shuffle_groups, relu):
    x, w, b = _cancelling_inputs(dtype, layout, groups)
    out = torch.ops.shufflenet.pointwise_conv(x, w, b, groups, shuffle_groups, relu)
    once = _reference64(x, w, b, groups, shuffle_groups, relu).to(dtype)
    assert _ulp_distance(out, once).max().item() <= 1
    # The check can tell: the conv rounded to the half type before the bias is
    # added (rounded again) lands many ulps away.
    conv = _reference64(x, w, None, groups, shuffle_groups, False).to(dtype)
    b_out = F.channel_shuffle(b.view(1, -1, 1, 1), shuffle_groups) if shuffle_groups > 1 else b.view(1, -1, 1, 1)
    twice = (conv.double() + b_out.double()).to(dtype)
    if relu:
        twice = twice.relu()
    assert _ulp_distance(twice, once).max().item() > 1


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("shape", [(2, 8, 1, 1), (1, 1, 4, 4), (2, 8, 1, 5), (1, 16, 3, 3)])
def test_ambiguous_layouts_match_fake(route, layout, shape):
    # Shapes whose strides are both NCHW- and channels_last-contiguous: the
    # output's strides must still be exactly those the fake kernel gives.
    x = torch.randn(shape)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    c = shape[1]
    w = torch.randn(2 * c, c, 1, 1)
    b = torch.randn(2 * c)
    torch.library.opcheck(torch.ops.shufflenet.pointwise_conv.default, (x, w, b, 1, 2, True))
    go = torch.randn(shape[0], 2 * c, *shape[2:])
    if layout == "channels_last":
        go = go.contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(
        torch.ops.shufflenet.pointwise_conv_backward.default, (go, x, w, None, 1, 2, [True, True, True])
    )


def test_large_batch_onednn_matches(monkeypatch):
    # Large enough for the picked route to be oneDNN on channels_last float32.
    monkeypatch.delenv(ROUTE_ENV, raising=False)
    x = torch.randn(8, 58, 28, 28).contiguous(memory_format=torch.channels_last)
    w = torch.randn(58, 58, 1, 1) / 58**0.5
    b = torch.randn(58)
    for shuffle_groups in (1, 2):
        out = torch.ops.shufflenet.pointwise_conv(x, w, b, 1, shuffle_groups, True)
        torch.testing.assert_close(out.double(), _reference64(x, w, b, 1, shuffle_groups, True), **TOL[torch.float32])
        assert out.is_contiguous(memory_format=torch.channels_last)


# The tile route (channels_last, float32 picked by itself for groups > 1): V1's group
# counts and channel counts that are not multiples of the 16-channel blocks, per group
# (e.g. 20, 12, 29) and in all; (groups, shuffle_groups, c_in, c_out).
TILE_CONVS = [
    (1, 1, 58, 116),
    (1, 2, 116, 58),
    (2, 2, 244, 58),
    (2, 1, 116, 120),
    (3, 3, 240, 60),
    (3, 1, 60, 240),
    (3, 3, 120, 60),
    (4, 4, 244, 116),
    (4, 1, 60, 244),
    (5, 5, 60, 240),
    (6, 6, 96, 60),
    (7, 7, 56, 112),
    (8, 8, 384, 96),
    (8, 1, 96, 384),
    (8, 2, 96, 96),
]
# Pixel counts around the tiles (6-pixel register tiles, up to 48-pixel tasks): 1, 15,
# 49, 143 and a batch of 8 whose tiles cross samples.
TILE_INPUTS = [(1, (1, 1)), (1, (5, 3)), (1, (7, 7)), (1, (13, 11)), (8, (7, 7))]


def _check_tile_conv(groups, shuffle_groups, c_in, c_out, dtype, channel_slice):
    """Every TILE_INPUTS input, bias and ReLU on and off, against the float64 reference."""
    for n, hw in TILE_INPUTS:
        x = _input(n, c_in, hw, "channels_last", channel_slice, dtype)
        w = (torch.randn(c_out, c_in // groups, 1, 1) / (c_in // groups) ** 0.5).to(dtype)
        b_full = torch.randn(c_out).to(dtype)
        for b in (None, b_full):
            for relu in (False, True):
                out = torch.ops.shufflenet.pointwise_conv(x, w, b, groups, shuffle_groups, relu)
                ref = _reference64(x, w, b, groups, shuffle_groups, relu)
                assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
                where = f"n={n} hw={hw} bias={b is not None} relu={relu}"
                torch.testing.assert_close(out.double(), ref, **TOL[dtype], msg=lambda m, where=where: f"{where}: {m}")


@pytest.mark.parametrize("groups,shuffle_groups,c_in,c_out", TILE_CONVS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("channel_slice", [False, True], ids=["dense", "slice"])
def test_tile_route_edges(monkeypatch, groups, shuffle_groups, c_in, c_out, dtype, channel_slice):
    monkeypatch.setenv(ROUTE_ENV, "tile")
    _check_tile_conv(groups, shuffle_groups, c_in, c_out, dtype, channel_slice)


def test_tile_route_picked_for_grouped_float32(monkeypatch):
    # As picked by itself: the same results as the forced routes, strided batches too.
    monkeypatch.delenv(ROUTE_ENV, raising=False)
    _check_tile_conv(3, 3, 240, 60, torch.float32, True)
    x = torch.randn(16, 60, 7, 7).contiguous(memory_format=torch.channels_last)[::2]
    w = torch.randn(240, 20, 1, 1) / 20**0.5
    out = torch.ops.shufflenet.pointwise_conv(x, w, None, 3, 3, True)
    torch.testing.assert_close(out.double(), _reference64(x, w, None, 3, 3, True), **TOL[torch.float32])


LAST_BLOCK_WIDTHS = [1, 8, 9, 20, 24, 25, 56, 72, 120]


@pytest.mark.parametrize("cg", LAST_BLOCK_WIDTHS)
@pytest.mark.parametrize("groups,shuffle", [(1, False), (2, False), (2, True)])
def test_tile_route_last_block_widths(monkeypatch, cg, groups, shuffle):
    """A group's last block of output channels with at most 8 of its 16 lanes in use runs
    on 8-lane accumulators with AVX-512: every width around 8 and 16, that block alone or
    after 1-3 full ones in a pass of 4, pixels not a multiple of the 6-pixel tile, bias
    and ReLU, direct stores and the shuffle's buffer (the other instruction sets:
    test_tile_route_other_instruction_sets)."""
    monkeypatch.setenv(ROUTE_ENV, "tile")
    _check_last_block(cg, groups, shuffle)


def _check_last_block(cg: int, groups: int, shuffle: bool) -> None:
    c_in = 5 * groups
    x = torch.randn(2, c_in, 5, 7).contiguous(memory_format=torch.channels_last)
    w = torch.randn(cg * groups, c_in // groups, 1, 1) / (c_in // groups) ** 0.5
    b = torch.randn(cg * groups)
    sg = groups if shuffle else 1
    for bias in (None, b):
        for relu in (False, True):
            out = torch.ops.shufflenet.pointwise_conv(x, w, bias, groups, sg, relu)
            torch.testing.assert_close(out.double(), _reference64(x, w, bias, groups, sg, relu), **TOL[torch.float32])


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("pixels", [1, 5, 7, 13, 47, 49, 97, 392, 395])
@pytest.mark.parametrize("groups,shuffle_groups,c_in,c_out", [(3, 3, 24, 60), (1, 1, 24, 40)])
def test_tile_route_parts_per_thread(monkeypatch, threads, pixels, groups, shuffle_groups, c_in, c_out):
    """The tiles cut the pixels into one part per thread at multiples of 6 pixels, each part
    into tiles of at most 48: every pixel is computed once whatever the split (fewer
    pixels than threads, parts of one short tile, a last part shorter than the others)."""
    monkeypatch.setenv(ROUTE_ENV, "tile")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(1, c_in, 1, pixels).contiguous(memory_format=torch.channels_last)
        w = torch.randn(c_out, c_in // groups, 1, 1) / (c_in // groups) ** 0.5
        b = torch.randn(c_out)
        out = torch.ops.shufflenet.pointwise_conv(x, w, b, groups, shuffle_groups, False)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(out.double(), _reference64(x, w, b, groups, shuffle_groups, False),
                               **TOL[torch.float32])


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n,c_in,c_out,h,w", [(1, 464, 1024, 7, 7), (2, 40, 520, 3, 5), (1, 24, 33 * 16, 1, 1)])
@pytest.mark.parametrize("bias", [True, False])
def test_tile_route_output_channel_slices(monkeypatch, threads, n, c_in, c_out, h, w, bias):
    """Ungrouped float32 on few pixels (at most 64, at least 512 outputs, picked by itself):
    the threads split the output channels, each slice whole blocks of 16 but the last."""
    monkeypatch.delenv(ROUTE_ENV, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(n, c_in, h, w).contiguous(memory_format=torch.channels_last)
        wt = torch.randn(c_out, c_in, 1, 1) / c_in**0.5
        b = torch.randn(c_out) if bias else None
        out = torch.ops.shufflenet.pointwise_conv(x, wt, b, 1, 1, True)
    finally:
        torch.set_num_threads(before)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.double(), _reference64(x, wt, b, 1, 1, True), **TOL[torch.float32])


@pytest.mark.parametrize("groups,shuffle_groups", [(3, 3), (8, 8), (3, 1)])
def test_tile_route_leaves_nchw_alone(monkeypatch, groups, shuffle_groups):
    # Forcing the tile route changes nothing for NCHW input (it is channels_last only).
    x = torch.randn(2, 48, 7, 5)
    w = torch.randn(96, 48 // groups, 1, 1)
    b = torch.randn(96)
    monkeypatch.setenv(ROUTE_ENV, "gemm")
    expected = torch.ops.shufflenet.pointwise_conv(x, w, b, groups, shuffle_groups, True)
    monkeypatch.setenv(ROUTE_ENV, "tile")
    out = torch.ops.shufflenet.pointwise_conv(x, w, b, groups, shuffle_groups, True)
    assert out.is_contiguous() and out.stride() == expected.stride()
    assert torch.equal(out, expected)


@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_tile_route_other_instruction_sets(isa: str) -> None:
    """The AVX2 and baseline versions of the tiles (SHUFFLENET_CPU_ISA caps the choice)."""
    code = textwrap.dedent("""
        import torch
        from tests.test_pointwise_cpu import TILE_CONVS, _check_tile_conv
        from tests.test_pointwise_cpu import LAST_BLOCK_WIDTHS, _check_last_block
        for groups, shuffle_groups, c_in, c_out in TILE_CONVS:
            for dtype in (torch.float32, torch.bfloat16):
                _check_tile_conv(groups, shuffle_groups, c_in, c_out, dtype, dtype == torch.float32)
        for cg in LAST_BLOCK_WIDTHS:
            _check_last_block(cg, 2, True)
        print("ok")
    """)
    env = dict(os.environ, SHUFFLENET_CPU_ISA=isa, **{ROUTE_ENV: "tile"})
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


def test_bench_script_runs(tmp_path, capsys):
    from bench import pointwise_cpu

    out = tmp_path / "pointwise.md"
    args = ["--threads", "1", "--batches", "1", "--rounds", "1", "--filter", "v2x1.0-s4", "--layouts", "channels_last"]
    assert pointwise_cpu.main([*args, "--out", str(out)]) == 0
    text = out.read_text()
    assert "| fwd | v2x1.0-s4 |" in text and "| bwd gi | v2x1.0-s4-slice |" in text
    assert pointwise_cpu.main([*args, "--no-backward", "--contenders", "ours", "--before", str(out)]) == 0
    assert "before: ours x torch" in capsys.readouterr().out


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shuffle_groups", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_no_input_channels(layout, relu, shuffle_groups, dtype) -> None:
    """C_in = 0 (an empty reduction): every route gives act(bias), shuffled, as the output."""
    x = torch.randn(2, 0, 3, 3, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(4, 0, 1, 1, dtype=dtype), torch.randn(4, dtype=dtype)
    y = torch.ops.shufflenet.pointwise_conv(x, w, b, 1, shuffle_groups, relu)
    ref = b.view(1, 4, 1, 1).expand(2, 4, 3, 3).contiguous()
    ref = ref.relu() if relu else ref
    ref = torch.nn.functional.channel_shuffle(ref, shuffle_groups) if shuffle_groups > 1 else ref
    torch.testing.assert_close(y, ref)
