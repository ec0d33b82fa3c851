"""Forward results of every op vs the plain-PyTorch reference, over ShuffleNet V1/V2
layer shapes, odd shapes, dtypes and layouts (dense, channels_last, channel slices
read in place, other strides)."""

from __future__ import annotations

import pytest
import torch

from shufflenet_kernels import fusion, reference
from tests.cases import (
    V2_X1_BRANCH_WIDTHS,
    DepthwiseCase,
    concat_cases,
    depthwise_cases,
    pointwise_cases,
    shuffle_cases,
)
from tests.helpers import (
    ALL_IMPLS,
    FAST_IMPLS,
    LAYOUTS,
    assert_layout_kept,
    impl_params,
    make_input,
    prod,
    reference_dtype,
    tolerances,
    weight_like,
)

HALF_AND_DOUBLE = [torch.float16, torch.bfloat16, torch.float64]


def _skip_unsupported(impl, dtype: torch.dtype) -> None:
    if dtype == torch.float64 and impl.device != "cpu":
        pytest.skip("float64 is a CPU-only dtype")


# ---- channel_shuffle -----------------------------------------------------------

SHUFFLE = shuffle_cases()


@pytest.mark.parametrize(
    "impl,case,layout", impl_params(SHUFFLE, numel=lambda c: prod(c.shape), layouts=LAYOUTS)
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_channel_shuffle(impl, case, layout, dtype):
    _skip_unsupported(impl, dtype)
    x = make_input(case.shape, layout, dtype, impl.device)
    out = impl.ops.channel_shuffle(x, case.groups)
    torch.testing.assert_close(out, reference.channel_shuffle(x, case.groups), rtol=0, atol=0)
    assert_layout_kept(out, x)


def test_channel_shuffle_matches_torch():
    x = torch.randn(2, 12, 5, 5)
    torch.testing.assert_close(torch.ops.shufflenet.channel_shuffle(x, 3),
                               torch.nn.functional.channel_shuffle(x, 3), rtol=0, atol=0)


# NCHW planes are copied in 64-byte blocks with an overlapping tail and a scalar
# loop below one block: every plane size around those bounds, for each element
# width, dense and as a channel slice.
@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("layout", ["nchw", "slice", "channels_last", "slice_cl"])
def test_channel_shuffle_small_planes(impl, dtype, layout):
    _skip_unsupported(impl, dtype)
    for h, w in [(1, 1), (1, 3), (2, 4), (3, 3), (1, 16), (4, 5), (5, 5), (1, 33), (7, 7), (3, 11)]:
        x = make_input((3, 12, h, w), layout, dtype, impl.device)
        for groups in (2, 3, 4):
            out = impl.ops.channel_shuffle(x, groups)
            torch.testing.assert_close(out, reference.channel_shuffle(x, groups), rtol=0, atol=0)
            assert_layout_kept(out, x)
            a, b = x[:, :5], x[:, 5:]  # unequal channel slices
            out = impl.ops.concat_shuffle(a, b, groups)
            torch.testing.assert_close(out, reference.concat_shuffle(a, b, groups), rtol=0, atol=0)


# The late ShuffleNet V2 stages shuffle many small planes (464 x 7x7, 232 x 14x14):
# batch 1 and 8, both layouts, and the V2 channel split feeding concat_shuffle.
@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("batch", [0, 1, 8])
@pytest.mark.parametrize("channels,hw", [(232, 14), (464, 7), (976, 1)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_shuffle_v2_late_stages(impl, batch, channels, hw, layout):
    x = make_input((batch, channels, hw, hw), layout, torch.float32, impl.device)
    out = impl.ops.channel_shuffle(x, 2)
    torch.testing.assert_close(out, reference.channel_shuffle(x, 2), rtol=0, atol=0)
    assert_layout_kept(out, x)
    a, b = x.chunk(2, 1)
    out = impl.ops.concat_shuffle(a, b, 2)
    torch.testing.assert_close(out, reference.concat_shuffle(a, b, 2), rtol=0, atol=0)
    assert_layout_kept(out, x)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


# Channels-last permutations take different kernels by their step (interleaves of
# 2, 3, 4, 8 rows, pairs, strided runs, a table): every group count of a few widths,
# with the inverse shuffle, each element width, dense and a channel slice.
@pytest.mark.parametrize("channels", [2, 12, 30, 116])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("layout", ["channels_last", "slice_cl"])
def test_channel_shuffle_every_group_count_channels_last(channels, dtype, layout):
    x = make_input((2, channels, 3, 5), layout, dtype)
    for groups in _divisors(channels):
        out = torch.ops.shufflenet.channel_shuffle(x, groups)
        torch.testing.assert_close(out, reference.channel_shuffle(x, groups), rtol=0, atol=0)
        assert_layout_kept(out, x)
        back = torch.ops.shufflenet.channel_shuffle(out, channels // groups)
        torch.testing.assert_close(back, x, rtol=0, atol=0)


# Eight groups of at least eight channels (the V1 g8 shuffles) run as 8x8
# register transposes of 32-bit values, the last block of a pixel overlapping the
# one before when C/8 is not a multiple of 8; dense tensors take a direct path
# (planes or pixels), slices the general gather: each width, both layouts, odd
# pixel counts, the inverse shuffle and concat_shuffle's two-operand rows.
@pytest.mark.parametrize("channels", [64, 96, 104, 136, 192, 384])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "slice_cl"])
@pytest.mark.parametrize("batch,hw", [(1, 1), (3, 5), (2, 7)])
def test_channel_shuffle_eight_groups(channels, dtype, layout, batch, hw):
    x = make_input((batch, channels, hw, hw), layout, dtype)
    out = torch.ops.shufflenet.channel_shuffle(x, 8)
    torch.testing.assert_close(out, reference.channel_shuffle(x, 8), rtol=0, atol=0)
    assert_layout_kept(out, x)
    back = torch.ops.shufflenet.channel_shuffle(out, channels // 8)
    torch.testing.assert_close(back, x, rtol=0, atol=0)
    a, b = x[:, : channels // 2], x[:, channels // 2 :]
    out = torch.ops.shufflenet.concat_shuffle(a, b, 8)
    torch.testing.assert_close(out, reference.concat_shuffle(a, b, 8), rtol=0, atol=0)


@pytest.mark.parametrize("channels_a,channels_b", [(1, 1), (1, 2), (3, 5), (58, 58), (24, 48)])
@pytest.mark.parametrize("layout_a", ["nchw", "channels_last"])
@pytest.mark.parametrize("layout_b", ["nchw", "channels_last"])
def test_concat_shuffle_every_group_count(channels_a, channels_b, layout_a, layout_b):
    a = make_input((2, channels_a, 3, 4), layout_a, torch.float32)
    b = make_input((2, channels_b, 3, 4), layout_b, torch.float32)
    for groups in _divisors(channels_a + channels_b):
        out = torch.ops.shufflenet.concat_shuffle(a, b, groups)
        torch.testing.assert_close(out, reference.concat_shuffle(a, b, groups), rtol=0, atol=0)
        grad_a, grad_b = torch.ops.shufflenet.concat_shuffle_backward(out, groups, channels_a)
        torch.testing.assert_close(grad_a, a, rtol=0, atol=0)
        torch.testing.assert_close(grad_b, b, rtol=0, atol=0)


# ---- concat_shuffle -------------------------------------------------------------

CONCAT = concat_cases()


def _concat_numel(c) -> int:
    return 2 * prod(c.shape)


@pytest.mark.parametrize(
    "impl,case,layout", impl_params(CONCAT, numel=_concat_numel, layouts=LAYOUTS + ("mixed",))
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_concat_shuffle(impl, case, layout, dtype):
    _skip_unsupported(impl, dtype)
    shape_a, c_b, groups = case.shape, case.channels_b, case.groups
    shape_b = list(shape_a)
    shape_b[1] = c_b
    if layout == "mixed":  # a channels_last slice, b NCHW: the output follows a
        a = make_input(shape_a, "slice_cl", dtype, impl.device)
        b = make_input(shape_b, "nchw", dtype, impl.device)
    else:
        a = make_input(shape_a, layout, dtype, impl.device)
        b = make_input(shape_b, layout, dtype, impl.device)
    out = impl.ops.concat_shuffle(a, b, groups)
    torch.testing.assert_close(out, reference.concat_shuffle(a, b, groups), rtol=0, atol=0)
    assert_layout_kept(out, a)


@pytest.mark.parametrize("impl,case", impl_params(CONCAT[:4], numel=_concat_numel))
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_concat_shuffle_of_channel_split(impl, case, layout):
    """The V2 stride-1 unit: both halves of one tensor, split without a copy."""
    shape_a = list(case.shape)
    shape_a[1] *= 2
    x = make_input(shape_a, layout, torch.float32, impl.device)
    a, b = x.chunk(2, 1)
    out = impl.ops.concat_shuffle(a, b, 2)
    torch.testing.assert_close(out, reference.channel_shuffle(x, 2), rtol=0, atol=0)
    assert_layout_kept(out, x)


# ---- pointwise_conv -------------------------------------------------------------

POINTWISE = pointwise_cases()


def _pointwise_numel(c) -> int:
    return c.n * (c.c_in + c.c_out) * c.hw * c.hw + c.c_out * c.c_in


def _check_pointwise(impl, case, layout, dtype, bias, relu):
    _skip_unsupported(impl, dtype)
    x = make_input((case.n, case.c_in, case.hw, case.hw), layout, dtype, impl.device)
    c_in_g = case.c_in // case.groups
    w = weight_like((case.c_out, c_in_g, 1, 1), dtype, impl.device, c_in_g)
    b = torch.randn(case.c_out, dtype=dtype, device=impl.device) if bias else None
    out = impl.ops.pointwise_conv(x, w, b, case.groups, case.shuffle_groups, relu)
    rt = reference_dtype(dtype)
    ref = reference.pointwise_conv(x.to(rt), w.to(rt), None if b is None else b.to(rt), case.groups,
                                   case.shuffle_groups, relu)
    assert out.dtype == dtype
    torch.testing.assert_close(out.to(rt), ref, **tolerances(dtype))
    assert_layout_kept(out, x)


# Grouped channels_last convs run their GEMMs over chunks of pixels (at most 2^20
# output elements each): several chunks per sample, over the whole batch or
# (samples not evenly spaced, as in a batch slice) one sample at a time.
@pytest.mark.parametrize("batch_slice", [False, True])
@pytest.mark.parametrize("shuffle_groups", [1, 4])
def test_pointwise_conv_channels_last_chunks(batch_slice, shuffle_groups):
    c_in, c_out, groups = 64, 512, 4
    x = torch.randn(4 if batch_slice else 2, c_in, 48, 48).to(memory_format=torch.channels_last)
    if batch_slice:
        x = x[::2]
    w = weight_like((c_out, c_in // groups, 1, 1), torch.float32, "cpu", c_in // groups)
    b = torch.randn(c_out)
    out = torch.ops.shufflenet.pointwise_conv(x, w, b, groups, shuffle_groups, True)
    ref = reference.pointwise_conv(x, w, b, groups, shuffle_groups, True)
    torch.testing.assert_close(out, ref, **tolerances(torch.float32))
    assert_layout_kept(out, x)


# A 1x1 map (a classifier after global pooling, 1024 -> 1000): one pixel per sample,
# the same [N, C] rows in NCHW and channels_last, taken as one GEMM over the batch;
# also a batch broadcast (stride 0) and a channel slice.
@pytest.mark.parametrize("n", [1, 3, 8])
@pytest.mark.parametrize("source", ["nchw", "channels_last", "expanded", "slice"])
@pytest.mark.parametrize("groups,shuffle_groups", [(1, 1), (1, 4), (4, 2)])
def test_pointwise_conv_one_pixel_per_sample(n, source, groups, shuffle_groups):
    c_in, c_out = 1024, 1000
    if source == "expanded":
        x = torch.randn(1, c_in, 1, 1).expand(n, c_in, 1, 1)
    elif source == "slice":
        x = torch.randn(n, 2 * c_in, 1, 1)[:, c_in:]
    else:
        fmt = torch.channels_last if source == "channels_last" else torch.contiguous_format
        x = torch.randn(n, c_in, 1, 1).contiguous(memory_format=fmt)
    w = weight_like((c_out, c_in // groups, 1, 1), torch.float32, "cpu", c_in // groups)
    b = torch.randn(c_out)
    out = torch.ops.shufflenet.pointwise_conv(x, w, b, groups, shuffle_groups, True)
    ref = reference.pointwise_conv(x.double(), w.double(), b.double(), groups, shuffle_groups, True)
    torch.testing.assert_close(out.double(), ref, **tolerances(torch.float32))
    assert out.shape == (n, c_out, 1, 1) and out.stride() == (c_out, 1, 1, 1)


@pytest.mark.parametrize("impl,case", impl_params(POINTWISE, numel=_pointwise_numel))
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "slice", "slice_cl", "strided"])
@pytest.mark.parametrize("bias,relu", [(False, False), (True, True)])
def test_pointwise_conv(impl, case, layout, bias, relu):
    _check_pointwise(impl, case, layout, torch.float32, bias, relu)


@pytest.mark.parametrize("impl,case", impl_params(POINTWISE, numel=_pointwise_numel))
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", HALF_AND_DOUBLE)
def test_pointwise_conv_dtypes(impl, case, layout, dtype):
    _check_pointwise(impl, case, layout, dtype, bias=True, relu=False)


@pytest.mark.parametrize("impl,case", impl_params(POINTWISE[-6:], numel=_pointwise_numel))
@pytest.mark.parametrize("bias,relu", [(True, False), (False, True)])
def test_pointwise_conv_epilogues(impl, case, bias, relu):
    _check_pointwise(impl, case, "channels_last", torch.float32, bias, relu)
    _check_pointwise(impl, case, "nchw", torch.float32, bias, relu)


# A half-type conv whose bias cancels most of the conv sum: the result is small, so
# rounding the conv sum to the output dtype before adding the bias (twice-rounded)
# loses many of its ulps. One rounding of the float32 sum + bias stays within about
# one ulp of the exact (float64) result of the same half-precision inputs.
# (groups, shuffle_groups, layout)
HALF_BIAS_CASES = [(1, 1, "nchw"), (1, 1, "channels_last"), (2, 2, "nchw"), (2, 4, "channels_last")]


def _half_bias_params() -> list:
    params = []
    for p in ALL_IMPLS:  # small shapes: the interpreted Triton one too
        impl = p.values[0]
        marks = list(p.marks)
        for groups, shuffle, layout in HALF_BIAS_CASES:
            params.append(pytest.param(impl, groups, shuffle, layout, id=f"{p.id}-g{groups}-s{shuffle}-{layout}",
                                       marks=marks))
    return params


def _half_bias_case(dtype: torch.dtype, groups: int, shuffle_groups: int, relu: bool) -> dict:
    """Half-precision inputs (as float64), the exact result and the one-rounding error bound."""
    n, hw, c_in, c_out = 2, 5, 32, 16
    k = c_in // groups
    g = torch.Generator().manual_seed(1)
    # conv sums near 8 * k (inputs near 8, weights near 1); bias = -(mean sum) per channel
    x = (8 + 0.05 * torch.randn(n, c_in, hw, hw, generator=g, dtype=torch.float64)).to(dtype).double()
    w = (0.5 + torch.rand(c_out, k, 1, 1, generator=g, dtype=torch.float64)).to(dtype).double()
    b = (-torch.nn.functional.conv2d(x, w, groups=groups).mean(dim=(0, 2, 3))).to(dtype).double()
    exact = reference.pointwise_conv(x, w, b, groups, shuffle_groups, relu)  # float64: exact enough
    magnitude = reference.pointwise_conv(x.abs(), w.abs(), b.abs(), groups, shuffle_groups, False)
    assert float(exact.abs().max()) < 2.0**-3 * float(magnitude.max())  # the bias does cancel the sum
    rounded = exact.to(dtype).abs()
    ulp = (torch.nextafter(rounded, torch.full_like(rounded, float("inf"))) - rounded).double()
    # One rounding: at most half an ulp; plus the float32 accumulation of k products.
    bound = ulp + 2 * k * 2.0**-24 * magnitude
    return dict(x=x, w=w, b=b, exact=exact, ulp=ulp, bound=bound)


def _assert_rounded_once(out: torch.Tensor, case: dict) -> None:
    err = (out.double() - case["exact"]).abs()
    bad = err > case["bound"]
    worst = int((err / case["ulp"]).argmax())
    assert not bool(bad.any()), (
        f"{int(bad.sum())} of {err.numel()} elements off by more than one rounding; worst "
        f"{float((err / case['ulp']).flatten()[worst]):.1f} ulps (got {float(out.double().flatten()[worst])}, "
        f"exact {float(case['exact'].flatten()[worst])})"
    )


@pytest.mark.parametrize("impl,groups,shuffle_groups,layout", _half_bias_params())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("relu", [False, True])
def test_pointwise_conv_half_bias_rounds_once(impl, groups, shuffle_groups, layout, dtype, relu):
    case = _half_bias_case(dtype, groups, shuffle_groups, relu)
    x = case["x"].to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    dev = impl.device
    out = impl.ops.pointwise_conv(x.to(dev), case["w"].to(dtype).to(dev), case["b"].to(dtype).to(dev),
                                  groups, shuffle_groups, relu)
    assert out.dtype == dtype
    _assert_rounded_once(out.cpu(), case)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_bias_bound_catches_double_rounding(dtype):
    """The bound above is tight enough to see the conv result rounded before the bias add."""
    case = _half_bias_case(dtype, 1, 1, False)
    conv = torch.nn.functional.conv2d(case["x"].float(), case["w"].float()).to(dtype)
    twice = (conv.float() + case["b"].float().view(1, -1, 1, 1)).to(dtype)
    with pytest.raises(AssertionError, match="off by more than one rounding"):
        _assert_rounded_once(twice, case)
    once = torch.nn.functional.conv2d(case["x"].float(), case["w"].float(), case["b"].float()).to(dtype)
    _assert_rounded_once(once, case)


# ---- depthwise_conv2d -------------------------------------------------------------

DEPTHWISE = depthwise_cases()


def _depthwise_numel(c) -> int:
    return 2 * c.n * c.c * c.hw * c.hw


def _check_depthwise(impl, case, layout, dtype, bias, relu):
    _skip_unsupported(impl, dtype)
    x = make_input((case.n, case.c, case.hw, case.hw), layout, dtype, impl.device)
    k = case.kernel
    w = weight_like((case.c, 1, k, k), dtype, impl.device, k * k)
    b = torch.randn(case.c, dtype=dtype, device=impl.device) if bias else None
    conv = ([case.stride] * 2, [case.padding] * 2, [case.dilation] * 2)
    out = impl.ops.depthwise_conv2d(x, w, b, *conv, relu)
    rt = reference_dtype(dtype)
    ref = reference.depthwise_conv2d(x.to(rt), w.to(rt), None if b is None else b.to(rt), *conv, relu)
    assert out.dtype == dtype
    torch.testing.assert_close(out.to(rt), ref, **tolerances(dtype))
    assert_layout_kept(out, x)


@pytest.mark.parametrize("impl,case", impl_params(DEPTHWISE, numel=_depthwise_numel))
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "slice", "slice_cl", "strided"])
@pytest.mark.parametrize("bias,relu", [(False, False), (True, True)])
def test_depthwise_conv2d(impl, case, layout, bias, relu):
    _check_depthwise(impl, case, layout, torch.float32, bias, relu)


@pytest.mark.parametrize("impl,case", impl_params(DEPTHWISE, numel=_depthwise_numel))
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", HALF_AND_DOUBLE)
def test_depthwise_conv2d_dtypes(impl, case, layout, dtype):
    _check_depthwise(impl, case, layout, dtype, bias=True, relu=True)


@pytest.mark.parametrize("impl,case", impl_params(DEPTHWISE[-11:], numel=_depthwise_numel))
@pytest.mark.parametrize("bias,relu", [(True, False), (False, True)])
def test_depthwise_conv2d_epilogues(impl, case, bias, relu):
    _check_depthwise(impl, case, "nchw", torch.float32, bias, relu)
    _check_depthwise(impl, case, "channels_last", torch.float32, bias, relu)


def test_depthwise_rectangular_kernel_and_asymmetric_args():
    x = torch.randn(2, 5, 11, 8)
    w = torch.randn(5, 1, 3, 5)
    b = torch.randn(5)
    for fmt in (torch.contiguous_format, torch.channels_last):
        xi = x.to(memory_format=fmt)
        out = torch.ops.shufflenet.depthwise_conv2d(xi, w, b, [2, 1], [1, 2], [1, 2], False)
        ref = reference.depthwise_conv2d(xi, w, b, (2, 1), (1, 2), (1, 2), False)
        torch.testing.assert_close(out, ref, **tolerances(torch.float32))


# ShuffleNet V2 x1.0 branch widths (58, 116, 232; not multiples of the vector
# width) and 60, channels_last: channel tails and blocks of output pixels (widths
# 9, 13 and 30 end in partial blocks; 1 has no interior), every dtype, stride 1 and 2.
@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("channels", V2_X1_BRANCH_WIDTHS + (60,))
@pytest.mark.parametrize("hw", [1, 9, 13, 30])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("layout", ["channels_last", "slice_cl"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_depthwise_conv2d_v2_widths_channels_last(impl, channels, hw, stride, layout, dtype):
    case = DepthwiseCase(2, channels, hw, 3, stride, 1, 1, f"c{channels}")
    _check_depthwise(impl, case, layout, dtype, bias=True, relu=True)


@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("channels", V2_X1_BRANCH_WIDTHS)
def test_depthwise_conv2d_v2_widths_empty_batch(impl, channels):
    case = DepthwiseCase(0, channels, 14, 3, 1, 1, 1, f"c{channels}")
    _check_depthwise(impl, case, "channels_last", torch.float32, bias=True, relu=False)


# Planes narrow enough for the CPU's flat phase planes in NCHW (ShuffleNet's 7x7
# and 14x14 stages): a single pixel, odd and even sizes, channel counts off the
# vector width, dense and channel-sliced inputs (channels_last for comparison),
# batch 1 and 8, every dtype; 5x5 and a dilated 3x3 beside the 3x3 fast path.
@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("hw", [1, 5, 7, 14])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel,padding,dilation", [(3, 1, 1), (5, 2, 1), (3, 2, 2)])
@pytest.mark.parametrize("batch,channels", [(1, 19), (8, 58)])
@pytest.mark.parametrize("layout", ["nchw", "slice", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_depthwise_conv2d_narrow_planes(impl, hw, stride, kernel, padding, dilation, batch, channels, layout, dtype):
    case = DepthwiseCase(batch, channels, hw, kernel, stride, padding, dilation, f"c{channels}")
    _check_depthwise(impl, case, layout, dtype, bias=True, relu=True)


# A tap-major weight (stride(0) == 1, the layout the nn units cache for
# channels_last models) gives exactly the result of the same values stored
# contiguously, in every layout, forward and backward.
@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "slice_cl"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kernel,stride", [(3, 1), (3, 2), (5, 1)])
def test_depthwise_conv2d_tap_major_weight(impl, layout, dtype, kernel, stride):
    x = make_input((2, 58, 13, 13), layout, dtype, impl.device)
    w = weight_like((58, 1, kernel, kernel), dtype, impl.device, kernel * kernel)
    b = torch.randn(58, dtype=dtype, device=impl.device)
    wt = fusion.tap_major(w)
    # stride(1) belongs to a size-1 dim and says nothing
    assert (wt.stride(0), wt.stride(2), wt.stride(3)) == (1, kernel * 58, 58) and torch.equal(wt, w)
    conv = ([stride] * 2, [kernel // 2] * 2, [1, 1])
    out = impl.ops.depthwise_conv2d(x, w, b, *conv, True)
    torch.testing.assert_close(impl.ops.depthwise_conv2d(x, wt, b, *conv, True), out, rtol=0, atol=0)
    g = torch.randn_like(out)
    mask = [True, True, True]
    want = impl.ops.depthwise_conv2d_backward(g, x, w, out, *conv, mask)
    got = impl.ops.depthwise_conv2d_backward(g, x, wt, out, *conv, mask)
    for a, e in zip(got, want, strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


def _copies(fn) -> int:
    """Copies (``aten::copy_``, which every clone, contiguous and to runs) made by one call of ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.name == "aten::copy_")


@pytest.mark.parametrize("bias", [False, True])
def test_depthwise_conv2d_channels_last_tap_major_weight_is_not_copied(bias):
    x = make_input((1, 58, 14, 14), "channels_last", torch.float32)
    w = weight_like((58, 1, 3, 3), torch.float32, "cpu", 9)
    b = torch.randn(58) if bias else None
    conv = ([1, 1], [1, 1], [1, 1])
    op = torch.ops.shufflenet.depthwise_conv2d
    wt = fusion.tap_major(w)
    assert _copies(lambda: op(x, wt, b, *conv, False)) == 0
    x_nchw = x.contiguous()
    assert _copies(lambda: op(x_nchw, w, b, *conv, False)) == 0  # NCHW reads a contiguous weight as is
    assert _copies(lambda: op(x, w, b, *conv, False)) >= 1  # the check can fail: a contiguous weight is transposed
