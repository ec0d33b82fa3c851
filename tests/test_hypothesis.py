"""Property tests: the C++ CPU ops against ``shufflenet_kernels.reference`` on random
shapes, groups, strides, layouts and dtypes drawn by Hypothesis.

Layouts: NCHW, channels_last, a channel slice of a larger NCHW or channels_last
tensor (read in place), spatial dims permuted in memory, and a non-dense view (every
other element of the last dim). dtypes: float32 and float64 within the usual
tolerances, bfloat16 within a loose one; data movement (channel_shuffle,
concat_shuffle) must be exact in every dtype. Gradients are compared in float64
through autograd against the reference's autograd.

Runs are reproducible (``derandomize=True``, no example database): CI sees the same
examples every time; each example seeds torch from a drawn seed, so a failure
shrinks and replays.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

import shufflenet_kernels
from shufflenet_kernels import reference
from tests.helpers import LAYOUTS, make_input, reference_dtype, tolerances, weight_like

pytestmark = pytest.mark.skipif(
    not shufflenet_kernels.NATIVE_AVAILABLE, reason="the native extension shufflenet_kernels._C is not built"
)

OPS = torch.ops.shufflenet

FORWARD = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BACKWARD = settings(FORWARD, max_examples=50)

DTYPES = (torch.float32, torch.float64, torch.bfloat16)
# The helpers' layouts plus a non-dense view, which no kernel reads in place.
ALL_LAYOUTS = (*LAYOUTS, "every_other")
# Gradients in float64 are sums of at most a few hundred products: tight but not exact.
GRAD_TOL = dict(rtol=1e-9, atol=1e-9)


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a tensor is laid out in memory; ``offset``/``extra`` place a channel slice."""

    name: str
    offset: int = 0
    extra: int = 1


def _tensor(shape: Sequence[int], layout: Layout, dtype: torch.dtype) -> Tensor:
    """A CPU tensor of `shape` laid out as `layout` (see ``tests.helpers.make_input``)."""
    if layout.name == "every_other":
        wide = list(shape)
        wide[-1] *= 2
        return torch.randn(wide, dtype=dtype)[..., ::2]
    return make_input(shape, layout.name, dtype, extra_channels=layout.extra, offset=layout.offset)


@st.composite
def layouts(draw: st.DrawFn, rank: int) -> Layout:
    """A layout a tensor of this rank can take (channels_last is 4-D only)."""
    names = [n for n in ALL_LAYOUTS if rank == 4 or n not in ("channels_last", "slice_cl")]
    name = draw(st.sampled_from(names))
    extra = draw(st.integers(1, 4))
    return Layout(name, draw(st.integers(0, extra)), extra)


seeds = st.integers(0, 2**31 - 1)
dtypes = st.sampled_from(DTYPES)


def _maybe_to(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.to(dtype)


def _leaf(t: Tensor) -> Tensor:
    """`t` (any strides) as a float64 leaf that needs a gradient, strides kept."""
    return t.detach().requires_grad_(True)


def _assert_grads_close(ours: Sequence[Tensor], ref: Sequence[Tensor], tol: dict[str, float]) -> None:
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, **tol)


# ---- channel_shuffle ------------------------------------------------------------------


@st.composite
def shuffle_args(draw: st.DrawFn) -> dict:
    rank = draw(st.integers(3, 5))
    groups = draw(st.integers(1, 6))
    channels = groups * draw(st.integers(1, 6))
    spatial = draw(st.lists(st.integers(1, 6), min_size=rank - 2, max_size=rank - 2))
    shape = (draw(st.integers(0, 3)), channels, *spatial)
    return dict(shape=shape, groups=groups, layout=draw(layouts(rank)), seed=draw(seeds))


@FORWARD
@given(args=shuffle_args(), dtype=dtypes)
def test_channel_shuffle_matches_reference(args: dict, dtype: torch.dtype) -> None:
    torch.manual_seed(args["seed"])
    x = _tensor(args["shape"], args["layout"], dtype)
    out = OPS.channel_shuffle(x, args["groups"])
    torch.testing.assert_close(out, reference.channel_shuffle(x, args["groups"]), rtol=0, atol=0)


@BACKWARD
@given(args=shuffle_args())
def test_channel_shuffle_grad_matches_reference(args: dict) -> None:
    torch.manual_seed(args["seed"])
    x = _leaf(_tensor(args["shape"], args["layout"], torch.float64))
    out = OPS.channel_shuffle(x, args["groups"])
    g = torch.randn_like(out)
    ours = torch.autograd.grad(out, [x], g)
    ref = torch.autograd.grad(reference.channel_shuffle(x, args["groups"]), [x], g)
    _assert_grads_close(ours, ref, dict(rtol=0, atol=0))


# ---- concat_shuffle -------------------------------------------------------------------


@st.composite
def concat_args(draw: st.DrawFn) -> dict:
    rank = draw(st.integers(3, 5))
    groups = draw(st.integers(1, 6))
    channels = groups * draw(st.integers(1 if groups > 1 else 2, 6))  # >= 2: a and b both have channels
    channels_a = draw(st.integers(1, channels - 1))
    spatial = draw(st.lists(st.integers(1, 6), min_size=rank - 2, max_size=rank - 2))
    n = draw(st.integers(0, 3))
    return dict(
        shape_a=(n, channels_a, *spatial),
        shape_b=(n, channels - channels_a, *spatial),
        groups=groups,
        layout_a=draw(layouts(rank)),
        layout_b=draw(layouts(rank)),
        seed=draw(seeds),
    )


@FORWARD
@given(args=concat_args(), dtype=dtypes)
def test_concat_shuffle_matches_reference(args: dict, dtype: torch.dtype) -> None:
    torch.manual_seed(args["seed"])
    a = _tensor(args["shape_a"], args["layout_a"], dtype)
    b = _tensor(args["shape_b"], args["layout_b"], dtype)
    out = OPS.concat_shuffle(a, b, args["groups"])
    torch.testing.assert_close(out, reference.concat_shuffle(a, b, args["groups"]), rtol=0, atol=0)


@BACKWARD
@given(args=concat_args())
def test_concat_shuffle_grad_matches_reference(args: dict) -> None:
    torch.manual_seed(args["seed"])
    a = _leaf(_tensor(args["shape_a"], args["layout_a"], torch.float64))
    b = _leaf(_tensor(args["shape_b"], args["layout_b"], torch.float64))
    out = OPS.concat_shuffle(a, b, args["groups"])
    g = torch.randn_like(out)
    ours = torch.autograd.grad(out, [a, b], g)
    ref = torch.autograd.grad(reference.concat_shuffle(a, b, args["groups"]), [a, b], g)
    _assert_grads_close(ours, ref, dict(rtol=0, atol=0))


# ---- pointwise_conv -------------------------------------------------------------------


@st.composite
def pointwise_args(draw: st.DrawFn) -> dict:
    groups = draw(st.integers(1, 4))
    shuffle_groups = draw(st.integers(1, 4))
    c_in = groups * draw(st.integers(1, 6))
    c_out = math.lcm(groups, shuffle_groups) * draw(st.integers(1, 3))
    shape = (draw(st.integers(0, 3)), c_in, draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    return dict(
        shape=shape,
        c_out=c_out,
        groups=groups,
        shuffle_groups=shuffle_groups,
        bias=draw(st.booleans()),
        relu=draw(st.booleans()),
        layout=draw(layouts(4)),
        seed=draw(seeds),
    )


def _pointwise_inputs(args: dict, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor | None]:
    torch.manual_seed(args["seed"])
    x = _tensor(args["shape"], args["layout"], dtype)
    c_in_g = args["shape"][1] // args["groups"]
    w = weight_like((args["c_out"], c_in_g, 1, 1), dtype, "cpu", c_in_g)
    b = torch.randn(args["c_out"], dtype=dtype) if args["bias"] else None
    return x, w, b


def _pointwise_conf(args: dict) -> tuple[int, int, bool]:
    return args["groups"], args["shuffle_groups"], args["relu"]


@FORWARD
@given(args=pointwise_args(), dtype=dtypes)
def test_pointwise_conv_matches_reference(args: dict, dtype: torch.dtype) -> None:
    x, w, b = _pointwise_inputs(args, dtype)
    out = OPS.pointwise_conv(x, w, b, *_pointwise_conf(args))
    rt = reference_dtype(dtype)
    ref = reference.pointwise_conv(x.to(rt), w.to(rt), _maybe_to(b, rt), *_pointwise_conf(args))
    assert out.dtype == dtype
    torch.testing.assert_close(out.to(rt), ref, **tolerances(dtype))


@BACKWARD
@given(args=pointwise_args())
def test_pointwise_conv_grad_matches_reference(args: dict) -> None:
    x, w, b = (None if t is None else _leaf(t) for t in _pointwise_inputs(args, torch.float64))
    inputs = [t for t in (x, w, b) if t is not None]
    out = OPS.pointwise_conv(x, w, b, *_pointwise_conf(args))
    g = torch.randn_like(out)
    ours = torch.autograd.grad(out, inputs, g)
    ref = torch.autograd.grad(reference.pointwise_conv(x, w, b, *_pointwise_conf(args)), inputs, g)
    _assert_grads_close(ours, ref, GRAD_TOL)


# ---- depthwise_conv2d -----------------------------------------------------------------


@st.composite
def depthwise_args(draw: st.DrawFn) -> dict:
    kernel = [draw(st.integers(1, 7)) for _ in range(2)]
    stride = [draw(st.integers(1, 3)) for _ in range(2)]
    dilation = [draw(st.integers(1, 2)) for _ in range(2)]
    padding = [draw(st.integers(0, 3)) for _ in range(2)]
    # Smallest input extent with a non-empty output, then a few more.
    spatial = [
        draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), max(1, d * (k - 1) + 1 - 2 * p) + 6))
        for k, d, p in zip(kernel, dilation, padding, strict=True)
    ]
    shape = (draw(st.integers(0, 3)), draw(st.integers(1, 8)), *spatial)
    return dict(
        shape=shape,
        kernel=kernel,
        conv=(stride, padding, dilation),
        bias=draw(st.booleans()),
        relu=draw(st.booleans()),
        layout=draw(layouts(4)),
        seed=draw(seeds),
    )


def _depthwise_inputs(args: dict, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor | None]:
    torch.manual_seed(args["seed"])
    x = _tensor(args["shape"], args["layout"], dtype)
    c = args["shape"][1]
    kh, kw = args["kernel"]
    w = weight_like((c, 1, kh, kw), dtype, "cpu", kh * kw)
    b = torch.randn(c, dtype=dtype) if args["bias"] else None
    return x, w, b


@FORWARD
@given(args=depthwise_args(), dtype=dtypes)
def test_depthwise_conv2d_matches_reference(args: dict, dtype: torch.dtype) -> None:
    x, w, b = _depthwise_inputs(args, dtype)
    out = OPS.depthwise_conv2d(x, w, b, *args["conv"], args["relu"])
    rt = reference_dtype(dtype)
    ref = reference.depthwise_conv2d(x.to(rt), w.to(rt), _maybe_to(b, rt), *args["conv"], args["relu"])
    assert out.dtype == dtype
    torch.testing.assert_close(out.to(rt), ref, **tolerances(dtype))


@BACKWARD
@given(args=depthwise_args())
def test_depthwise_conv2d_grad_matches_reference(args: dict) -> None:
    x, w, b = (None if t is None else _leaf(t) for t in _depthwise_inputs(args, torch.float64))
    inputs = [t for t in (x, w, b) if t is not None]
    out = OPS.depthwise_conv2d(x, w, b, *args["conv"], args["relu"])
    g = torch.randn_like(out)
    ours = torch.autograd.grad(out, inputs, g)
    ref = torch.autograd.grad(reference.depthwise_conv2d(x, w, b, *args["conv"], args["relu"]), inputs, g)
    _assert_grads_close(ours, ref, GRAD_TOL)
