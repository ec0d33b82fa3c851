"""Gradients: every op's autograd vs the reference's, the backward ops called
directly (output_mask, unrequested outputs), and gradcheck in float64."""

from __future__ import annotations

import itertools

import pytest
import torch

from shufflenet_kernels import reference
from tests.cases import (
    V2_X1_BRANCH_WIDTHS,
    DepthwiseCase,
    by_name,
    concat_cases,
    depthwise_cases,
    pointwise_cases,
    shuffle_cases,
)
from tests.helpers import ALL_IMPLS, FAST_IMPLS, impl_params, make_input, prod, weight_like

GRAD_LAYOUTS = ["nchw", "channels_last", "slice", "slice_cl"]
# Gradients sum thousands of products: looser than the forward's 1e-5.
GRAD_TOL = dict(rtol=1e-4, atol=1e-4)
HALF_GRAD_TOL = {torch.float16: dict(rtol=2e-2, atol=2e-2), torch.bfloat16: dict(rtol=5e-2, atol=5e-2)}


def _grads(outputs: torch.Tensor, inputs: list[torch.Tensor], grad: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(outputs, inputs, grad))


def _relu_masked(grad: torch.Tensor, out: torch.Tensor, relu: bool) -> torch.Tensor:
    """The reference's gradient through ReLU, with the mask taken from our output:
    a pre-activation within rounding of 0 may land on either side in the two
    computations, and one flipped element would fail a whole row of grad_input."""
    return (grad * (out > 0) if relu else grad).float()


def _compare(ours, ref, tol):
    """Weight gradients are sums of thousands of products: the absolute tolerance
    scales with the gradient's magnitude."""
    for a, b in zip(ours, ref, strict=True):
        scale = max(1.0, b.abs().max().item()) if b.numel() else 1.0
        torch.testing.assert_close(a, b, rtol=tol["rtol"], atol=tol["atol"] * scale)


# ---- autograd vs reference, float32 ------------------------------------------------

SHUFFLE = [c for c in shuffle_cases() if len(c.shape) == 4 and c.shape[0] > 0]


@pytest.mark.parametrize("impl,case", impl_params(SHUFFLE, numel=lambda c: prod(c.shape)))
@pytest.mark.parametrize("layout", GRAD_LAYOUTS)
def test_channel_shuffle_grad(impl, case, layout):
    x = make_input(case.shape, layout, torch.float32, impl.device).detach().requires_grad_(True)
    out = impl.ops.channel_shuffle(x, case.groups)
    g = torch.randn_like(out)
    (ours,) = _grads(out, [x], g)
    (ref,) = _grads(reference.channel_shuffle(x, case.groups), [x], g)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


CONCAT = [c for c in concat_cases() if len(c.shape) == 4]


@pytest.mark.parametrize("impl,case", impl_params(CONCAT, numel=lambda c: 2 * prod(c.shape)))
@pytest.mark.parametrize("layout", GRAD_LAYOUTS)
def test_concat_shuffle_grad(impl, case, layout):
    shape_b = list(case.shape)
    shape_b[1] = case.channels_b
    a = make_input(case.shape, layout, torch.float32, impl.device).detach().requires_grad_(True)
    b = make_input(shape_b, layout, torch.float32, impl.device).detach().requires_grad_(True)
    out = impl.ops.concat_shuffle(a, b, case.groups)
    g = torch.randn_like(out)
    ours = _grads(out, [a, b], g)
    ref = _grads(reference.concat_shuffle(a, b, case.groups), [a, b], g)
    _compare(ours, ref, dict(rtol=0, atol=0))


def _pw_numel(c) -> int:
    return c.n * (c.c_in + c.c_out) * c.hw**2


POINTWISE = [c for c in pointwise_cases() if c.name.startswith(("v1g3", "v1g8", "v2")) or "-" in c.name[:3]
             or not c.name.startswith("v")]


def _pointwise_grads(impl, case, layout, dtype, bias, relu):
    x = make_input((case.n, case.c_in, case.hw, case.hw), layout, dtype, impl.device).requires_grad_(True)
    c_in_g = case.c_in // case.groups
    w = weight_like((case.c_out, c_in_g, 1, 1), dtype, impl.device, c_in_g).requires_grad_(True)
    b = torch.randn(case.c_out, dtype=dtype, device=impl.device).requires_grad_(True) if bias else None
    inputs = [x, w] + ([b] if bias else [])
    out = impl.ops.pointwise_conv(x, w, b, case.groups, case.shuffle_groups, relu)
    g = torch.randn_like(out)
    ours = _grads(out, inputs, g)
    ref_inputs = [t.detach().float().requires_grad_(True) for t in inputs]
    xr, wr = ref_inputs[:2]
    br = ref_inputs[2] if bias else None
    ref_out = reference.pointwise_conv(xr, wr, br, case.groups, case.shuffle_groups, False)
    ref = _grads(ref_out, ref_inputs, _relu_masked(g, out, relu))
    return [o.float() for o in ours], ref


@pytest.mark.parametrize("impl,case", impl_params(POINTWISE, numel=_pw_numel))
@pytest.mark.parametrize("layout", GRAD_LAYOUTS)
@pytest.mark.parametrize("bias,relu", [(False, False), (True, True)])
def test_pointwise_conv_grad(impl, case, layout, bias, relu):
    _compare(*_pointwise_grads(impl, case, layout, torch.float32, bias, relu), GRAD_TOL)


@pytest.mark.parametrize("impl,case", impl_params(POINTWISE[-6:], numel=_pw_numel))
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_pointwise_conv_grad_half(impl, case, layout, dtype):
    _compare(*_pointwise_grads(impl, case, layout, dtype, True, True), HALF_GRAD_TOL[dtype])


DEPTHWISE = [c for c in depthwise_cases() if not c.name.startswith("v1")]


def _depthwise_grads(impl, case, layout, dtype, bias, relu):
    x = make_input((case.n, case.c, case.hw, case.hw), layout, dtype, impl.device).requires_grad_(True)
    k = case.kernel
    w = weight_like((case.c, 1, k, k), dtype, impl.device, k * k).requires_grad_(True)
    b = torch.randn(case.c, dtype=dtype, device=impl.device).requires_grad_(True) if bias else None
    conv = ([case.stride] * 2, [case.padding] * 2, [case.dilation] * 2)
    inputs = [x, w] + ([b] if bias else [])
    out = impl.ops.depthwise_conv2d(x, w, b, *conv, relu)
    g = torch.randn_like(out)
    ours = _grads(out, inputs, g)
    ref_inputs = [t.detach().float().requires_grad_(True) for t in inputs]
    br = ref_inputs[2] if bias else None
    ref_out = reference.depthwise_conv2d(ref_inputs[0], ref_inputs[1], br, *conv, False)
    ref = _grads(ref_out, ref_inputs, _relu_masked(g, out, relu))
    return [o.float() for o in ours], ref


@pytest.mark.parametrize("impl,case", impl_params(DEPTHWISE, numel=lambda c: 2 * c.n * c.c * c.hw**2))
@pytest.mark.parametrize("layout", GRAD_LAYOUTS)
@pytest.mark.parametrize("bias,relu", [(False, False), (True, True)])
def test_depthwise_conv2d_grad(impl, case, layout, bias, relu):
    _compare(*_depthwise_grads(impl, case, layout, torch.float32, bias, relu), GRAD_TOL)


@pytest.mark.parametrize("impl,case", impl_params(DEPTHWISE[-11:], numel=lambda c: 2 * c.n * c.c * c.hw**2))
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_depthwise_conv2d_grad_half(impl, case, layout, dtype):
    _compare(*_depthwise_grads(impl, case, layout, dtype, True, True), HALF_GRAD_TOL[dtype])


# ShuffleNet V2 x1.0 branch widths in channels_last (dense and a channel slice),
# stride 1 (the input gradient runs as a forward pass) and 2, float32 and halves.
@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("channels", V2_X1_BRANCH_WIDTHS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("layout", ["channels_last", "slice_cl"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_depthwise_conv2d_grad_v2_widths_channels_last(impl, channels, stride, layout, dtype):
    case = DepthwiseCase(2, channels, 9, 3, stride, 1, 1, f"c{channels}")
    tol = GRAD_TOL if dtype == torch.float32 else HALF_GRAD_TOL[dtype]
    _compare(*_depthwise_grads(impl, case, layout, dtype, True, True), tol)


# channels_last 3x3 with column stride 1 or 2 and at least 16 channels (the CPU's
# register-blocked weight gradient and stride-2 input gradient): widths with an
# empty, short and long interior, every padding and row stride/dilation the
# kernels take from the geometry, channel counts that are and are not a multiple
# of the vector, a channel slice, all three gradients against the reference in
# double.
def _cl_3x3_geometries() -> list[tuple]:
    """(hw, stride, padding, dilation) with a non-empty output."""
    convs = [((1, 1), (1, 1), (1, 1)), ((2, 2), (1, 1), (1, 1)), ((1, 1), (0, 0), (1, 1)), ((2, 2), (2, 2), (1, 1)),
             ((2, 2), (0, 1), (1, 1)), ((1, 2), (1, 0), (1, 1)), ((2, 1), (1, 2), (2, 1)), ((3, 2), (2, 1), (2, 1))]
    out = []
    for hw in [(1, 1), (2, 3), (5, 5), (8, 13), (15, 9)]:
        for s, p, d in convs:
            if all(n + 2 * q - 2 * e - 1 >= 0 for n, q, e in zip(hw, p, d, strict=True)):
                out.append((hw, s, p, d))
    return out


@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("hw,stride,padding,dilation", _cl_3x3_geometries())
@pytest.mark.parametrize("batch,channels,dtype,layout", [
    (2, 16, torch.float32, "channels_last"), (3, 19, torch.float32, "channels_last"),
    (1, 40, torch.float32, "slice_cl"), (3, 19, torch.bfloat16, "channels_last")])
def test_depthwise_conv2d_backward_channels_last_3x3(impl, hw, stride, padding, dilation, batch, channels, dtype,
                                                     layout):
    x = make_input((batch, channels, *hw), layout, dtype, impl.device)
    w = weight_like((channels, 1, 3, 3), dtype, impl.device, 9)
    conv = (list(stride), list(padding), list(dilation))
    ho, wo = ((n + 2 * p - 2 * d - 1) // s + 1 for n, p, d, s in zip(hw, padding, dilation, stride, strict=True))
    go = torch.randn(batch, channels, ho, wo, dtype=dtype, device=impl.device).to(memory_format=torch.channels_last)
    ours = impl.ops.depthwise_conv2d_backward(go, x, w, None, *conv, [True] * 3)
    xr, wr, br = (t.detach().double().requires_grad_(True) for t in (x, w, torch.zeros(channels, device=impl.device)))
    ref_out = reference.depthwise_conv2d(xr, wr, br, *conv, False)
    ref = _grads(ref_out, [xr, wr, br], go.double())
    tol = GRAD_TOL if dtype == torch.float32 else HALF_GRAD_TOL[dtype]
    _compare([o.double() for o in ours], ref, tol)
    assert ours[0].is_contiguous(memory_format=torch.channels_last)


# The channels_last weight gradient is reduced over chunks fixed by the shape:
# bit-identical whatever the thread count.
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_conv2d_backward_channels_last_weight_thread_count_invariant(stride):
    x = make_input((5, 40, 12, 12), "channels_last")
    w = weight_like((40, 1, 3, 3), torch.float32, "cpu", 9)
    go = torch.randn(5, 40, 12 // stride, 12 // stride).to(memory_format=torch.channels_last)
    conv = ([stride] * 2, [1, 1], [1, 1])
    threads = torch.get_num_threads()
    try:
        grads = []
        for n in (1, 2):
            torch.set_num_threads(n)
            grads.append(torch.ops.shufflenet.depthwise_conv2d_backward(go, x, w, None, *conv, [False, True, True]))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# Narrow NCHW planes (the CPU's flat phase planes; the strided input gradient as a
# stride-1 pass over dilated grad_output): sizes, strides, kernels, channel counts
# and layouts as in the forward test of the same name.
@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("hw", [1, 5, 7, 14])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel,padding,dilation", [(3, 1, 1), (5, 2, 1), (3, 2, 2)])
@pytest.mark.parametrize("batch,channels", [(1, 19), (8, 58)])
@pytest.mark.parametrize("layout", ["nchw", "slice", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_depthwise_conv2d_grad_narrow_planes(impl, hw, stride, kernel, padding, dilation, batch, channels, layout,
                                             dtype):
    case = DepthwiseCase(batch, channels, hw, kernel, stride, padding, dilation, f"c{channels}")
    tol = GRAD_TOL if dtype == torch.float32 else HALF_GRAD_TOL[dtype]
    _compare(*_depthwise_grads(impl, case, layout, dtype, True, True), tol)


# Large batches of NCHW planes: the CPU's float weight gradient keeps vector partial
# sums across several images and adds them into double totals every few hundred
# products per lane, so batches this large add several groups of images per channel
# (narrow flat planes, 14x14 and 28x28 planes of the row kernel).
@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("hw,stride", [(7, 1), (14, 2), (14, 1), (28, 1), (28, 2)])
def test_depthwise_conv2d_grad_weight_large_batch(impl, hw, stride):
    case = DepthwiseCase(133, 3, hw, 3, stride, 1, 1, "large-batch")
    _compare(*_depthwise_grads(impl, case, "nchw", torch.float32, True, False), GRAD_TOL)


# An inf in the input reaches only the weight-gradient taps that read it: the
# columns a flat plane computes past each row's end (which read the next row's
# first inputs) must not turn 0 * inf into NaN in the other taps.
@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("hw,stride", [(7, 1), (14, 2)])
def test_depthwise_conv2d_grad_weight_inf_stays_in_its_taps(impl, hw, stride):
    x = torch.randn(2, 3, hw, hw, device=impl.device)
    x[:, :, 3, 0] = float("inf")
    w = torch.randn(3, 1, 3, 3, device=impl.device)
    conv = ([stride] * 2, [1, 1], [1, 1])
    go = torch.randn(2, 3, (hw - 1) // stride + 1, (hw - 1) // stride + 1, device=impl.device).abs()
    _, gw, _ = impl.ops.depthwise_conv2d_backward(go, x, w, None, *conv, [False, True, False])
    xr = x.double().requires_grad_(False)
    wr = w.double().requires_grad_(True)
    reference.depthwise_conv2d(xr, wr, None, *conv, False).backward(go.double())
    torch.testing.assert_close(gw.double(), wr.grad, rtol=1e-4, atol=1e-4, equal_nan=True)
    assert gw[:, :, :, 2].isfinite().all()


# ---- backward ops called directly ---------------------------------------------------

MASKS = [list(m) for m in itertools.product([False, True], repeat=3)]


@pytest.mark.parametrize("impl", ALL_IMPLS)
@pytest.mark.parametrize("mask", MASKS, ids=lambda m: "".join("1" if v else "0" for v in m))
def test_pointwise_conv_backward_output_mask(impl, mask):
    case = by_name(pointwise_cases())["shuffle-ne-groups"]
    x = torch.randn(case.n, case.c_in, case.hw, case.hw, device=impl.device)
    w = torch.randn(case.c_out, case.c_in // case.groups, 1, 1, device=impl.device)
    go = torch.randn(case.n, case.c_out, case.hw, case.hw, device=impl.device)
    full = impl.ops.pointwise_conv_backward(go, x, w, None, case.groups, case.shuffle_groups, [True] * 3)
    part = impl.ops.pointwise_conv_backward(go, x, w, None, case.groups, case.shuffle_groups, mask)
    for want, f, p in zip(mask, full, part, strict=True):
        if want:
            torch.testing.assert_close(p, f, rtol=0, atol=0)
        else:
            assert p.shape == (0,)


@pytest.mark.parametrize("impl", ALL_IMPLS)
@pytest.mark.parametrize("mask", MASKS, ids=lambda m: "".join("1" if v else "0" for v in m))
def test_depthwise_conv2d_backward_output_mask(impl, mask):
    x = torch.randn(2, 5, 9, 9, device=impl.device)
    w = torch.randn(5, 1, 3, 3, device=impl.device)
    go = torch.randn(2, 5, 5, 5, device=impl.device)
    conv = ([2, 2], [1, 1], [1, 1])
    full = impl.ops.depthwise_conv2d_backward(go, x, w, None, *conv, [True] * 3)
    part = impl.ops.depthwise_conv2d_backward(go, x, w, None, *conv, mask)
    for want, f, p in zip(mask, full, part, strict=True):
        if want:
            torch.testing.assert_close(p, f, rtol=0, atol=0)
        else:
            assert p.shape == (0,)


@pytest.mark.parametrize("impl", ALL_IMPLS)
def test_backward_ops_mask_relu_output(impl):
    """relu_output zeroes the gradient where the forward output was <= 0."""
    x = torch.randn(2, 6, 5, 5, device=impl.device)
    w = torch.randn(6, 1, 3, 3, device=impl.device)
    out = impl.ops.depthwise_conv2d(x, w, None, [1, 1], [1, 1], [1, 1], True)
    go = torch.randn_like(out)
    masked = impl.ops.depthwise_conv2d_backward(go, x, w, out, [1, 1], [1, 1], [1, 1], [True, True, True])
    plain = impl.ops.depthwise_conv2d_backward(go * (out > 0), x, w, None, [1, 1], [1, 1], [1, 1], [True] * 3)
    for a, b in zip(masked, plain, strict=True):
        torch.testing.assert_close(a, b)
    pw = torch.randn(12, 3, 1, 1, device=impl.device)
    out = impl.ops.pointwise_conv(x, pw, None, 2, 3, True)
    go = torch.randn_like(out)
    masked = impl.ops.pointwise_conv_backward(go, x, pw, out, 2, 3, [True] * 3)
    plain = impl.ops.pointwise_conv_backward(go * (out > 0), x, pw, None, 2, 3, [True] * 3)
    for a, b in zip(masked, plain, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("impl", ALL_IMPLS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_concat_shuffle_backward_op(impl, layout):
    go = make_input((2, 18, 4, 3), layout, torch.float32, impl.device)
    ga, gb = impl.ops.concat_shuffle_backward(go, 3, 7)
    unshuffled = reference.channel_shuffle(go, 18 // 3)
    torch.testing.assert_close(ga, unshuffled[:, :7], rtol=0, atol=0)
    torch.testing.assert_close(gb, unshuffled[:, 7:], rtol=0, atol=0)


# ---- gradcheck in float64 -------------------------------------------------------------

GRADCHECK_LAYOUTS = ["nchw", "channels_last", "slice"]


def _f64(shape, layout, impl):
    return make_input(shape, layout, torch.float64, impl.device).detach().requires_grad_(True)


def _gradcheck(impl, fn, inputs) -> bool:
    """float64 gradcheck; the interpreted Triton kernels use fast mode (one random
    projection instead of one backward per output element, which would take minutes)."""
    return torch.autograd.gradcheck(fn, inputs, fast_mode=impl.slow)


@pytest.mark.parametrize("impl", ALL_IMPLS)
@pytest.mark.parametrize("layout", GRADCHECK_LAYOUTS)
def test_gradcheck_channel_shuffle(impl, layout):
    if impl.device != "cpu":
        pytest.skip("float64 gradcheck runs on CPU")
    x = _f64((2, 6, 3, 2), layout, impl)
    assert _gradcheck(impl, lambda t: impl.ops.channel_shuffle(t, 3), (x,))


@pytest.mark.parametrize("impl", ALL_IMPLS)
@pytest.mark.parametrize("layout", GRADCHECK_LAYOUTS)
def test_gradcheck_concat_shuffle(impl, layout):
    if impl.device != "cpu":
        pytest.skip("float64 gradcheck runs on CPU")
    a = _f64((2, 4, 3, 2), layout, impl)
    b = _f64((2, 2, 3, 2), layout, impl)
    assert _gradcheck(impl, lambda s, t: impl.ops.concat_shuffle(s, t, 3), (a, b))


@pytest.mark.parametrize("impl", ALL_IMPLS)
@pytest.mark.parametrize("layout", GRADCHECK_LAYOUTS)
@pytest.mark.parametrize("groups,shuffle_groups,bias,relu", [(1, 1, False, False), (2, 2, True, True),
                                                             (2, 3, True, False), (1, 2, False, True)])
def test_gradcheck_pointwise_conv(impl, layout, groups, shuffle_groups, bias, relu):
    if impl.device != "cpu":
        pytest.skip("float64 gradcheck runs on CPU")
    x = _f64((2, 4, 3, 3), layout, impl)
    w = torch.randn(6, 4 // groups, 1, 1, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True) if bias else None

    def fn(x, w, b):
        return impl.ops.pointwise_conv(x, w, b, groups, shuffle_groups, relu)

    assert _gradcheck(impl, fn, (x, w, b))


@pytest.mark.parametrize("impl", ALL_IMPLS)
@pytest.mark.parametrize("layout", GRADCHECK_LAYOUTS)
@pytest.mark.parametrize("kernel,stride,padding,dilation,bias,relu", [
    (3, 1, 1, 1, True, True), (3, 2, 1, 1, False, False), (5, 1, 2, 1, True, False),
    (3, 1, 2, 2, False, True), (7, 2, 3, 1, True, False),
])
def test_gradcheck_depthwise_conv2d(impl, layout, kernel, stride, padding, dilation, bias, relu):
    if impl.device != "cpu":
        pytest.skip("float64 gradcheck runs on CPU")
    x = _f64((2, 3, 7, 6), layout, impl)
    w = torch.randn(3, 1, kernel, kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True) if bias else None

    def fn(x, w, b):
        return impl.ops.depthwise_conv2d(x, w, b, [stride] * 2, [padding] * 2, [dilation] * 2, relu)

    assert _gradcheck(impl, fn, (x, w, b))


# A 1x1 map with several samples (a classifier after global pooling, 1024 -> 1000): the
# backward takes the whole batch as one GEMM per gradient, in NCHW too; the gradients
# against float64 autograd through the reference, in the input's layout.
@pytest.mark.parametrize("n", [2, 8])
@pytest.mark.parametrize("source", ["nchw", "channels_last", "slice"])
@pytest.mark.parametrize("groups,shuffle_groups,relu", [(1, 1, True), (1, 4, False), (4, 2, True)])
def test_pointwise_conv_grad_one_pixel_per_sample(n, source, groups, shuffle_groups, relu):
    c_in, c_out = 1024, 1000
    if source == "slice":
        x = torch.randn(n, 2 * c_in, 1, 1)[:, c_in:]
    else:
        fmt = torch.channels_last if source == "channels_last" else torch.contiguous_format
        x = torch.randn(n, c_in, 1, 1).contiguous(memory_format=fmt)
    x.requires_grad_()
    w = weight_like((c_out, c_in // groups, 1, 1), torch.float32, "cpu", c_in // groups).requires_grad_()
    b = torch.randn(c_out).requires_grad_()
    out = torch.ops.shufflenet.pointwise_conv(x, w, b, groups, shuffle_groups, relu)
    grad = torch.randn_like(out)
    out.backward(grad)
    xr, wr, br = (t.detach().double().requires_grad_() for t in (x, w, b))
    ref = reference.pointwise_conv(xr, wr, br, groups, shuffle_groups, relu)
    ref.backward(grad.double() * (out > 0) if relu else grad.double())
    for got, want in ((x.grad, xr.grad), (w.grad, wr.grad), (b.grad, br.grad)):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    assert x.grad.stride() == (c_in, 1, 1, 1)
