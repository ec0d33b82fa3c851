"""Tests of the Triton ops (``torch.ops.shufflenet_triton``) against ``shufflenet_kernels.reference``.

On a GPU the kernels are compiled; without one they run through the Triton
interpreter on CPU tensors (``TRITON_INTERPRET=1`` must be set before Triton is
imported), so shapes here stay small. Gradchecks run in float64 on CPU (the
interpreter supports float64, tl.dot included) and in float32 with loose
tolerances on a GPU (float64 is not a supported GPU dtype of these ops).
"""

from __future__ import annotations

import os

import pytest
import torch

triton = pytest.importorskip("triton")

from shufflenet_kernels import reference as R  # noqa: E402

pytestmark = pytest.mark.triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET", "0") != "1":
    pytest.skip(
        "no GPU and TRITON_INTERPRET is not 1: Triton kernels cannot run here", allow_module_level=True
    )

# Importing registers the ops; with Triton importable they must be there (a
# missing registration fails here instead of skipping).
import shufflenet_kernels.triton_kernels as tk  # noqa: E402

assert tk.HAS_TRITON
ops = torch.ops.shufflenet_triton
assert hasattr(ops, "channel_shuffle") and hasattr(ops, "depthwise_conv2d_backward")

DTYPES = [(torch.float32, 1e-5, 1e-5), (torch.float16, 1e-2, 1e-2), (torch.bfloat16, 2e-2, 2e-2)]
LAYOUTS = ["nchw", "channels_last", "slice_nchw", "slice_channels_last"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def make_input(
    n: int, c: int, h: int, w: int, layout: str, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """[n, c, h, w] in ``layout``; the slice layouts are channel slices of a wider tensor (no copy)."""
    cl = layout.endswith("channels_last")
    if layout.startswith("slice"):
        big = torch.randn(n, c + 3, h, w, device=DEVICE, dtype=dtype)
        if cl:
            big = big.contiguous(memory_format=torch.channels_last)
        x = big[:, 2 : 2 + c]
        assert x.data_ptr() != big.data_ptr() or c == 0 or n == 0
        return x
    x = torch.randn(n, c, h, w, device=DEVICE, dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last) if cl else x


def expected_strides(sizes: tuple[int, ...], like: torch.Tensor) -> tuple[int, ...]:
    fmt = torch._prims_common.suggest_memory_format(like)
    return torch.empty(sizes, device="meta").contiguous(memory_format=fmt).stride()


def check_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> None:
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=rtol, atol=atol)


# ---- channel_shuffle / concat_shuffle -------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("c,groups", [(12, 3), (12, 4), (24, 2), (8, 8), (6, 1), (58, 2)])
def test_channel_shuffle_matches_reference(layout: str, dtype: torch.dtype, c: int, groups: int) -> None:
    x = make_input(2, c, 5, 7, layout, dtype)
    y = ops.channel_shuffle(x, groups)
    assert torch.equal(y, R.channel_shuffle(x, groups))  # pure data movement: exact
    assert y.stride() == expected_strides(tuple(x.shape), x)


@pytest.mark.parametrize("shape", [(2, 6, 9), (2, 6, 3, 4, 5), (1, 4, 1, 1), (0, 6, 3, 3), (3, 6, 0, 2)])
def test_channel_shuffle_odd_shapes(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, device=DEVICE)
    y = ops.channel_shuffle(x, 2)
    assert y.shape == x.shape
    assert torch.equal(y, R.channel_shuffle(x, 2))


def test_channel_shuffle_permuted_input() -> None:
    x = torch.randn(2, 6, 5, 4, device=DEVICE).permute(0, 1, 3, 2)  # neither NCHW nor NHWC
    assert torch.equal(ops.channel_shuffle(x, 3), R.channel_shuffle(x, 3))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("ca,cb,groups", [(6, 6, 2), (4, 8, 3), (5, 3, 4), (2, 2, 4), (0, 4, 2)])
def test_concat_shuffle_matches_reference(layout: str, ca: int, cb: int, groups: int) -> None:
    x = make_input(2, ca + cb, 4, 5, layout)
    a, b = x[:, :ca], x[:, ca:]  # channel slices: the V2 split, no copy
    y = ops.concat_shuffle(a, b, groups)
    assert torch.equal(y, R.concat_shuffle(a, b, groups))
    assert y.stride() == expected_strides(tuple(y.shape), a)
    ga, gb = ops.concat_shuffle_backward(y, groups, ca)
    assert torch.equal(ga, a) and torch.equal(gb, b)  # the backward undoes the forward


def test_concat_shuffle_mixed_layouts() -> None:
    a = torch.randn(2, 4, 3, 5, device=DEVICE).contiguous(memory_format=torch.channels_last)
    b = torch.randn(2, 4, 3, 5, device=DEVICE)
    y = ops.concat_shuffle(a, b, 2)
    assert torch.equal(y, R.concat_shuffle(a, b, 2))
    assert y.is_contiguous(memory_format=torch.channels_last)


# ---- depthwise_conv2d ------------------------------------------------------------------

DW_CASES = [  # kernel, stride, padding, dilation
    (3, 1, 1, 1),
    (3, 2, 1, 1),
    (5, 1, 2, 1),
    (5, 2, 2, 1),
    (7, 1, 3, 1),
    (7, 2, 3, 1),
    (3, 1, 2, 2),
    (3, 2, 0, 1),
    (1, 1, 0, 1),
]


def dw_reference(x, w, b, stride, padding, dilation, relu):
    return R.depthwise_conv2d(
        x.float(), w.float(), None if b is None else b.float(), stride, padding, dilation, relu
    )


# Every layout for the 3x3 fast path; NCHW and channels_last for the others (the
# larger kernels are slow under the interpreter).
DW_PARAMS = [
    (*case, layout)
    for case in DW_CASES
    for layout in (LAYOUTS if case[0] == 3 else ["nchw", "channels_last"])
]


@pytest.mark.parametrize("k,s,p,d,layout", DW_PARAMS)
def test_depthwise_forward_backward(k: int, s: int, p: int, d: int, layout: str) -> None:
    x = make_input(2, 6, 9, 8, layout)
    w = torch.randn(6, 1, k, k, device=DEVICE)
    b = torch.randn(6, device=DEVICE)
    relu = k != 5  # both epilogues are covered across the cases
    args = ([s, s], [p, p], [d, d])
    y = ops.depthwise_conv2d(x, w, b, *args, relu)
    xr, wr, br = (t.detach().clone().requires_grad_() for t in (x, w, b))
    ref = R.depthwise_conv2d(xr, wr, br, *args, relu)
    check_close(y, ref, 1e-5, 1e-5)
    assert y.stride() == expected_strides(tuple(y.shape), x)
    go = torch.randn_like(ref)
    ref.backward(go)
    gi, gw, gb = ops.depthwise_conv2d_backward(go, x, w, y if relu else None, *args, [True, True, True])
    check_close(gi, xr.grad, 1e-5, 1e-5)
    check_close(gw, wr.grad, 1e-5, 1e-4)
    check_close(gb, br.grad, 1e-5, 1e-4)
    assert gi.stride() == x.contiguous(memory_format=torch._prims_common.suggest_memory_format(x)).stride()


@pytest.mark.parametrize("dtype,rtol,atol", DTYPES[1:])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_depthwise_half_types(dtype: torch.dtype, rtol: float, atol: float, layout: str) -> None:
    x = make_input(2, 8, 7, 6, layout, dtype)
    w = torch.randn(8, 1, 3, 3, device=DEVICE, dtype=dtype)
    b = torch.randn(8, device=DEVICE, dtype=dtype)
    for s in (1, 2):
        y = ops.depthwise_conv2d(x, w, b, [s, s], [1, 1], [1, 1], True)
        assert y.dtype == dtype
        check_close(y, dw_reference(x, w, b, (s, s), (1, 1), (1, 1), True), rtol, atol)


def test_depthwise_output_mask_and_empty_batch() -> None:
    x = torch.randn(2, 4, 5, 5, device=DEVICE)
    w = torch.randn(4, 1, 3, 3, device=DEVICE)
    go = torch.randn(2, 4, 5, 5, device=DEVICE)
    args = ([1, 1], [1, 1], [1, 1])
    gi, gw, gb = ops.depthwise_conv2d_backward(go, x, w, None, *args, [False, True, False])
    assert gi.shape == (0,) and gb.shape == (0,) and gw.shape == w.shape
    # Fixed-order split reduction: bitwise reproducible.
    _, gw2, _ = ops.depthwise_conv2d_backward(go, x, w, None, *args, [False, True, False])
    assert torch.equal(gw, gw2)
    x0 = torch.randn(0, 4, 5, 5, device=DEVICE)
    y0 = ops.depthwise_conv2d(x0, w, None, *args, False)
    assert y0.shape == (0, 4, 5, 5)
    gi0, gw0, gb0 = ops.depthwise_conv2d_backward(y0, x0, w, None, *args, [True, True, True])
    assert (
        gi0.shape == x0.shape and torch.equal(gw0, torch.zeros_like(w)) and torch.equal(gb0, torch.zeros(4))
    )


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_depthwise_forward_int64_taps(monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    """The forward's int64 tap arithmetic (taken when an image row spans 2^31 elements)
    computes the same results: forced here on a small tensor."""
    from shufflenet_kernels.triton_kernels import depthwise as dw

    x = make_input(2, 3, 9, 11, layout)
    big = torch.empty_strided((1, 1, 2, 2), (4, 4, 2**31, 1), device="meta")
    assert dw._rows_index64(big) and not dw._rows_index64(x)
    monkeypatch.setattr(dw, "_INT32_LIMIT", 0)
    assert dw._rows_index64(x)
    w = torch.randn(3, 1, 7, 7, device=DEVICE)
    b = torch.randn(3, device=DEVICE)
    y = ops.depthwise_conv2d(x, w, b, [2, 2], [3, 3], [1, 1], True)
    check_close(y, R.depthwise_conv2d(x, w, b, [2, 2], [3, 3], [1, 1], True), 1e-5, 1e-5)


def test_depthwise_tiny_and_asymmetric() -> None:
    for shape, k, s, p in [((1, 3, 1, 1), (3, 3), (1, 1), (1, 1)), ((2, 5, 4, 9), (3, 5), (2, 1), (1, 2))]:
        x = torch.randn(shape, device=DEVICE)
        w = torch.randn(shape[1], 1, *k, device=DEVICE)
        y = ops.depthwise_conv2d(x, w, None, list(s), list(p), [1, 1], False)
        check_close(y, R.depthwise_conv2d(x, w, None, s, p, (1, 1), False), 1e-5, 1e-5)


# ---- pointwise_conv ------------------------------------------------------------------------

PW_CASES = [  # c_in, c_out, groups, shuffle_groups
    (12, 24, 1, 1),
    (24, 24, 3, 3),
    (24, 48, 4, 2),
    (8, 8, 8, 8),
    (40, 20, 2, 1),
    (6, 10, 1, 2),
    (48, 48, 8, 8),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("c_in,c_out,groups,shuffle_groups", PW_CASES)
def test_pointwise_forward_backward(
    layout: str, c_in: int, c_out: int, groups: int, shuffle_groups: int
) -> None:
    x = make_input(2, c_in, 5, 6, layout)
    w = torch.randn(c_out, c_in // groups, 1, 1, device=DEVICE)
    b = torch.randn(c_out, device=DEVICE)
    relu = groups != 4
    y = ops.pointwise_conv(x, w, b, groups, shuffle_groups, relu)
    xr, wr, br = (t.detach().clone().requires_grad_() for t in (x, w, b))
    ref = R.pointwise_conv(xr, wr, br, groups, shuffle_groups, relu)
    check_close(y, ref, 1e-5, 1e-5)
    assert y.stride() == expected_strides(tuple(y.shape), x)
    go = torch.randn_like(ref)
    ref.backward(go)
    gi, gw, gb = ops.pointwise_conv_backward(
        go, x, w, y if relu else None, groups, shuffle_groups, [True, True, True]
    )
    check_close(gi, xr.grad, 1e-5, 1e-5)
    check_close(gw, wr.grad, 1e-5, 1e-4)
    check_close(gb, br.grad, 1e-5, 1e-4)


@pytest.mark.parametrize("dtype,rtol,atol", DTYPES[1:])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_pointwise_half_types(dtype: torch.dtype, rtol: float, atol: float, layout: str) -> None:
    x = make_input(2, 24, 4, 4, layout, dtype)
    w = torch.randn(48, 8, 1, 1, device=DEVICE, dtype=dtype) / 4
    b = torch.randn(48, device=DEVICE, dtype=dtype)
    y = ops.pointwise_conv(x, w, b, 3, 3, True)
    assert y.dtype == dtype
    ref = R.pointwise_conv(x.float(), w.float(), b.float(), 3, 3, True)
    check_close(y, ref, rtol, atol)


def test_pointwise_odd_shapes() -> None:
    # C = groups, H = W = 1, N = 0, and no bias.
    x = torch.randn(3, 4, 1, 1, device=DEVICE)
    w = torch.randn(4, 1, 1, 1, device=DEVICE)
    check_close(
        ops.pointwise_conv(x, w, None, 4, 4, False), R.pointwise_conv(x, w, None, 4, 4, False), 1e-5, 1e-5
    )
    x0 = torch.randn(0, 4, 3, 3, device=DEVICE)
    y0 = ops.pointwise_conv(x0, w, None, 4, 2, True)
    assert y0.shape == (0, 4, 3, 3)
    gi, gw, gb = ops.pointwise_conv_backward(y0, x0, w, y0, 4, 2, [True, True, True])
    assert gi.shape == x0.shape and torch.equal(gw, torch.zeros_like(w)) and torch.equal(gb, torch.zeros(4))
    gi, gw, gb = ops.pointwise_conv_backward(torch.randn(3, 4, 1, 1), x, w, None, 4, 4, [True, False, False])
    assert gw.shape == (0,) and gb.shape == (0,)


def test_pointwise_index64_choice() -> None:
    """int64 tile offsets only when some tensor's largest element offset reaches 2^31."""
    from shufflenet_kernels.triton_kernels import pointwise as pw

    def t(*sizes_strides: tuple[int, int]) -> torch.Tensor:
        sizes, strides = zip(*sizes_strides, strict=True)
        return torch.empty_strided(sizes, strides, device="meta")

    assert not pw._index64(t((2, 2**30 - 1), (4, 1)), t((3, 1), (1, 1)))
    assert pw._index64(t((2, 2**30 - 1), (4, 1)), t((2, 1), (2**31, 1)))
    assert pw._index64(t((2, 2**30 + 1), (2**30 + 1, 1)))


@pytest.mark.parametrize("layout", ["nchw", "slice_channels_last"])
def test_pointwise_int64_offsets(monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    """The int64 fallback of the pointwise kernels (taken past 2^31 elements) computes the
    same results: forced here on small tensors."""
    from shufflenet_kernels.triton_kernels import pointwise as pw

    monkeypatch.setattr(pw, "_INT32_LIMIT", 0)
    x = make_input(2, 24, 3, 5, layout)
    w = torch.randn(48, 8, 1, 1, device=DEVICE)
    b = torch.randn(48, device=DEVICE)
    y = ops.pointwise_conv(x, w, b, 3, 4, True)
    xr, wr, br = (t.detach().clone().requires_grad_() for t in (x, w, b))
    ref = R.pointwise_conv(xr, wr, br, 3, 4, True)
    check_close(y, ref, 1e-5, 1e-5)
    go = torch.randn_like(ref)
    ref.backward(go)
    gi, gw, gb = ops.pointwise_conv_backward(go, x, w, y, 3, 4, [True, True, True])
    check_close(gi, xr.grad, 1e-5, 1e-5)
    check_close(gw, wr.grad, 1e-5, 1e-4)
    check_close(gb, br.grad, 1e-5, 1e-4)


# ---- autograd, opcheck, compile ------------------------------------------------------------

GRAD_DTYPE = torch.float64 if DEVICE == "cpu" else torch.float32
GRAD_TOL = {} if DEVICE == "cpu" else {"eps": 1e-2, "atol": 5e-2, "rtol": 5e-2}


def _leaf(*shape: int, cl: bool = False) -> torch.Tensor:
    t = torch.randn(*shape, device=DEVICE, dtype=GRAD_DTYPE)
    if cl:
        t = t.contiguous(memory_format=torch.channels_last)
    return t.requires_grad_()


def test_relu_mask_passes_nan_like_cpu() -> None:
    """Only relu_output <= 0 masks the gradient: where it is NaN the gradient passes,
    as in the CPU kernels (and threshold_backward)."""
    x = torch.randn(1, 4, 5, 5)
    g = torch.randn(1, 4, 5, 5)
    r = torch.full((1, 4, 5, 5), float("nan"))
    r[0, 0] = -1.0
    w = torch.randn(4, 4, 1, 1)
    cpu = torch.ops.shufflenet
    dev = [a.to(DEVICE) for a in (g, x, w, r)]
    ours = ops.pointwise_conv_backward(*dev, 1, 1, [True, True, True])
    ref = cpu.pointwise_conv_backward(g, x, w, r, 1, 1, [True, True, True])
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours[2].cpu()[1:], g[0, 1:].sum((1, 2)), rtol=1e-4, atol=1e-4)
    wd = torch.randn(4, 1, 3, 3)
    dev = [a.to(DEVICE) for a in (g, x, wd, r)]
    ours = ops.depthwise_conv2d_backward(*dev, [1, 1], [1, 1], [1, 1], [True, True, True])
    ref = cpu.depthwise_conv2d_backward(g, x, wd, r, [1, 1], [1, 1], [1, 1], [True, True, True])
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-4)
    assert ours[2].cpu()[0] == 0 and (ours[2].cpu()[1:] != 0).all()


# Under the interpreter every op call runs its kernels in Python, and a full
# gradcheck calls the op twice per input element and its backward once per output
# element. The data-movement ops are cheap enough for the full check; the convs
# use gradcheck's fast mode (random projections of the Jacobians: it fails on a
# wrong gradient just the same) on both layouts, plus one full check on a tiny input.
@pytest.mark.parametrize("cl", [False, True])
def test_gradcheck_shuffles(cl: bool) -> None:
    x = _leaf(2, 4, 3, 2, cl=cl)
    assert torch.autograd.gradcheck(lambda t: ops.channel_shuffle(t, 2), (x,), **GRAD_TOL)
    a, b = _leaf(2, 2, 3, 2, cl=cl), _leaf(2, 4, 3, 2, cl=cl)
    assert torch.autograd.gradcheck(lambda p, q: ops.concat_shuffle(p, q, 3), (a, b), **GRAD_TOL)


@pytest.mark.parametrize("cl", [False, True])
def test_gradcheck_convs_fast_mode(cl: bool) -> None:
    x = _leaf(2, 4, 5, 4, cl=cl)
    w, bias = _leaf(4, 1, 3, 3), _leaf(4)
    assert torch.autograd.gradcheck(
        lambda t, k, c: ops.depthwise_conv2d(t, k, c, [2, 1], [1, 1], [1, 1], True),
        (x, w, bias),
        fast_mode=True,
        **GRAD_TOL,
    )
    wp, bp = _leaf(6, 2, 1, 1), _leaf(6)
    assert torch.autograd.gradcheck(
        lambda t, k, c: ops.pointwise_conv(t, k, c, 2, 3, True), (x, wp, bp), fast_mode=True, **GRAD_TOL
    )


@pytest.mark.slow  # ~20 s interpreted; test_gradcheck_convs_fast_mode covers the same ops
def test_gradcheck_convs_full() -> None:
    x = _leaf(1, 2, 4, 3)
    w, bias = _leaf(2, 1, 3, 3), _leaf(2)
    assert torch.autograd.gradcheck(
        lambda t, k, c: ops.depthwise_conv2d(t, k, c, [1, 2], [1, 1], [1, 1], True), (x, w, bias), **GRAD_TOL
    )
    wp, bp = _leaf(4, 1, 1, 1), _leaf(4)
    assert torch.autograd.gradcheck(
        lambda t, k, c: ops.pointwise_conv(t, k, c, 2, 2, True), (x, wp, bp), **GRAD_TOL
    )


def _opcheck_inputs() -> list[torch.Tensor]:
    x = torch.randn(2, 6, 4, 5, device=DEVICE)
    return [x, x.contiguous(memory_format=torch.channels_last), x.permute(0, 1, 3, 2)]


@pytest.mark.parametrize("which", range(3), ids=["contiguous", "channels_last", "permuted"])
def test_opcheck(which: int) -> None:
    x = _opcheck_inputs()[which]
    w_dw = torch.randn(6, 1, 3, 3, device=DEVICE)
    w_pw = torch.randn(9, 2, 1, 1, device=DEVICE)
    bias = torch.randn(6, device=DEVICE)
    conv = ([1, 1], [1, 1], [1, 1])
    y_dw = ops.depthwise_conv2d(x, w_dw, bias, *conv, True)
    y_pw = ops.pointwise_conv(x, w_pw, None, 3, 3, True)
    cases = [
        (ops.channel_shuffle.default, (x, 3)),
        (ops.concat_shuffle.default, (x[:, :2], x[:, 2:], 2)),
        (ops.concat_shuffle_backward.default, (x, 2, 4)),
        (ops.depthwise_conv2d.default, (x, w_dw, bias, *conv, True)),
        (
            ops.depthwise_conv2d_backward.default,
            (torch.randn_like(y_dw), x, w_dw, y_dw, *conv, [True, True, True]),
        ),
        (ops.pointwise_conv.default, (x, w_pw, None, 3, 3, True)),
        (
            ops.pointwise_conv_backward.default,
            (torch.randn_like(y_pw), x, w_pw, y_pw, 3, 3, [True, True, False]),
        ),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


class _TinyUnit(torch.nn.Module):
    """A V2-like unit built only from the Triton ops."""

    def __init__(self, c: int) -> None:
        super().__init__()
        half = c // 2
        self.w1 = torch.nn.Parameter(torch.randn(half, half, 1, 1) / half)
        self.wd = torch.nn.Parameter(torch.randn(half, 1, 3, 3) / 3)
        self.w2 = torch.nn.Parameter(torch.randn(half, half // 2, 1, 1) / half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        b = ops.pointwise_conv(b, self.w1, None, 1, 1, True)
        b = ops.depthwise_conv2d(b, self.wd, None, [1, 1], [1, 1], [1, 1], False)
        b = ops.pointwise_conv(b, self.w2, None, 2, 2, True)
        return ops.channel_shuffle(ops.concat_shuffle(a, b, 2), 1)


def test_compile_fullgraph() -> None:
    torch._dynamo.reset()
    model = _TinyUnit(8).to(DEVICE)
    x = torch.randn(2, 8, 5, 5, device=DEVICE).contiguous(memory_format=torch.channels_last)
    # On a GPU Inductor compiles the Triton kernels into its graph; under the
    # interpreter the ops are opaque custom ops and an eager backend runs them.
    backend = "inductor" if DEVICE == "cuda" else "aot_eager"
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    expected = model(x)
    out = compiled(x)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    out.sum().backward()  # the backward ops trace too
    assert all(p.grad is not None for p in model.parameters())


# ---- bad input -------------------------------------------------------------------------------


def test_bad_input_errors() -> None:
    x = torch.randn(2, 6, 4, 4, device=DEVICE)
    with pytest.raises(RuntimeError, match="groups"):
        ops.channel_shuffle(x, 4)
    with pytest.raises(RuntimeError, match="groups must be positive"):
        ops.channel_shuffle(x, 0)
    with pytest.raises(RuntimeError, match="input must have rank"):
        ops.channel_shuffle(torch.randn(6, device=DEVICE), 2)
    with pytest.raises(RuntimeError, match="dtype"):
        ops.channel_shuffle(x.int(), 2)
    with pytest.raises(RuntimeError, match="a and b must match"):
        ops.concat_shuffle(x, torch.randn(2, 6, 4, 5, device=DEVICE), 2)
    with pytest.raises(RuntimeError, match="channels_a"):
        ops.concat_shuffle_backward(x, 2, 7)
    with pytest.raises(RuntimeError, match="unsupported kernel size"):
        ops.depthwise_conv2d(x, torch.randn(6, 1, 9, 9, device=DEVICE), None, [1, 1], [4, 4], [1, 1], False)
    with pytest.raises(RuntimeError, match="weight must have shape"):
        ops.depthwise_conv2d(x, torch.randn(5, 1, 3, 3, device=DEVICE), None, [1, 1], [1, 1], [1, 1], False)
    with pytest.raises(RuntimeError, match="stride must be positive"):
        ops.depthwise_conv2d(x, torch.randn(6, 1, 3, 3, device=DEVICE), None, [0, 1], [1, 1], [1, 1], False)
    with pytest.raises(RuntimeError, match="weight must have shape"):
        ops.pointwise_conv(x, torch.randn(4, 4, 1, 1, device=DEVICE), None, 2, 1, False)
    with pytest.raises(RuntimeError, match="shuffle_groups"):
        ops.pointwise_conv(x, torch.randn(4, 3, 1, 1, device=DEVICE), None, 2, 3, False)
    with pytest.raises(RuntimeError, match="bias must have shape"):
        ops.pointwise_conv(
            x, torch.randn(4, 3, 1, 1, device=DEVICE), torch.randn(3, device=DEVICE), 2, 1, False
        )
    with pytest.raises(RuntimeError, match="grad_output must have shape"):
        ops.pointwise_conv_backward(
            x, x, torch.randn(4, 3, 1, 1, device=DEVICE), None, 2, 1, [True, True, True]
        )
