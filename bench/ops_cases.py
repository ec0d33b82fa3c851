"""Per-op cases: every op forward and backward on ShuffleNet layer shapes.

Providers per case: the kernels of each backend present (``torch.ops.shufflenet`` on
the CPU; on a GPU the CUDA kernels of ``torch.ops.shufflenet`` and the Triton kernels
of ``torch.ops.shufflenet_triton``), eager PyTorch (``shufflenet_kernels.reference``,
which is ``F.conv2d`` / ``torch.cat`` / the view-transpose shuffle; plus the stock
``F.channel_shuffle``), ``torch.compile`` of the same reference function, and a copy
of the MAC bytes. A backward case times the backward op against the same gradient
computed in PyTorch: ``threshold_backward`` for the ReLU, the inverse shuffle, and
``aten.convolution_backward`` (what autograd runs for the reference).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

import shufflenet_kernels as sk
from shufflenet_kernels import mac, reference

from .core import COMPILE, EAGER, KERNEL, OTHER, Case, Provider, copy_provider, tensor
from .shapes import ConcatShape, DepthwiseShape, PointwiseShape, ShuffleShape, shapes_for

OPS: tuple[str, ...] = ("channel_shuffle", "concat_shuffle", "pointwise_conv", "depthwise_conv2d")


def kernel_namespaces(device: torch.device) -> list[tuple[str, Any]]:
    """``(provider name, op namespace)`` for every backend of these kernels usable on ``device``."""
    out: list[tuple[str, Any]] = []
    if device.type == "cuda":
        if sk.has_cuda_kernels():
            out.append(("cuda", torch.ops.shufflenet))
        if sk.has_triton_ops():
            out.append(("triton", torch.ops.shufflenet_triton))
    elif sk.NATIVE_AVAILABLE:
        out.append(("cpu", torch.ops.shufflenet))
    return out


def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile`` with static shapes: each case gets code specialised to its shape."""
    return torch.compile(fn, dynamic=False)


# ---- PyTorch references for the backward ops --------------------------------------------


def ref_concat_shuffle_backward(grad: torch.Tensor, groups: int, channels_a: int) -> tuple[torch.Tensor, ...]:
    """Un-shuffle ``grad`` and split it at ``channels_a`` (autograd of cat + shuffle)."""
    g = reference.channel_shuffle(grad, grad.shape[1] // groups)
    return g[:, :channels_a], g[:, channels_a:]


def ref_pointwise_conv_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    relu_out: torch.Tensor | None,
    groups: int,
    shuffle_groups: int,
    has_bias: bool,
) -> tuple[torch.Tensor, ...]:
    """Gradients of ``reference.pointwise_conv`` from ``grad`` (ReLU mask, un-shuffle, conv backward)."""
    if relu_out is not None:
        grad = torch.ops.aten.threshold_backward(grad, relu_out, 0)
    if shuffle_groups > 1:
        grad = reference.channel_shuffle(grad, grad.shape[1] // shuffle_groups)
    return torch.ops.aten.convolution_backward(
        grad,
        x,
        w,
        [w.shape[0]] if has_bias else None,
        [1, 1],
        [0, 0],
        [1, 1],
        False,
        [0, 0],
        groups,
        [True, True, has_bias],
    )


def ref_depthwise_conv2d_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    relu_out: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    has_bias: bool,
) -> tuple[torch.Tensor, ...]:
    """Gradients of ``reference.depthwise_conv2d`` from ``grad`` (ReLU mask, conv backward)."""
    if relu_out is not None:
        grad = torch.ops.aten.threshold_backward(grad, relu_out, 0)
    return torch.ops.aten.convolution_backward(
        grad,
        x,
        w,
        [w.shape[0]] if has_bias else None,
        list(stride),
        list(padding),
        [1, 1],
        False,
        [0, 0],
        x.shape[1],
        [True, True, has_bias],
    )


# ---- case construction ------------------------------------------------------------


class _CompileBudget:
    """At most ``limit`` compiled providers per (op, direction); ``limit < 0``: no limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used: dict[tuple[str, str], int] = {}

    def take(self, op: str, direction: str) -> bool:
        key = (op, direction)
        if 0 <= self.limit <= self.used.get(key, 0):
            return False
        self.used[key] = self.used.get(key, 0) + 1
        return True


def _providers(
    kernels: list[tuple[str, Callable[[], Callable[[], Any]]]],
    eager: Callable[[], Any],
    compile_fn: Callable[[], Callable[[], Any]] | None,
    mac_bytes: int,
    dtype: torch.dtype,
    device: torch.device,
    extra_eager: list[tuple[str, Callable[[], Any]]] = (),
) -> list[Provider]:
    # Eager first: its output is what the kernels' outputs are checked against.
    out = [Provider("eager", EAGER, lambda: eager)]
    out += [Provider(name, OTHER, (lambda f=f: f)) for name, f in extra_eager]
    if compile_fn is not None:
        out.append(Provider("compile", COMPILE, compile_fn))
    out += [Provider(name, KERNEL, build) for name, build in kernels]
    out.append(copy_provider(mac_bytes, dtype, device))
    return out


def _op_case(
    op: str,
    direction: str,
    label: str,
    info: dict,
    cost: mac.Cost,
    namespaces: list,
    kernel_op: str,
    kernel_args: tuple,
    ref: Callable[..., Any],
    ref_args: tuple,
    budget: _CompileBudget,
    dtype: torch.dtype,
    device: torch.device,
    extra_eager: list[tuple[str, Callable[[], Any]]] = (),
) -> Case:
    """One timed case: ``kernel_op(*kernel_args)`` of every kernel namespace against
    ``ref(*ref_args)`` run eagerly and, while the compile budget lasts, compiled."""
    ops = [(f"kernel_{name}", getattr(ns, kernel_op)) for name, ns in namespaces]
    kernels = [(name, (lambda fn=fn: lambda: fn(*kernel_args))) for name, fn in ops]
    compile_fn = None
    if budget.take(op, direction):

        def compile_fn() -> Callable[[], Any]:
            f = compiled(ref)
            return lambda: f(*ref_args)

    return Case(
        op,
        direction,
        label,
        info,
        cost.mac_bytes,
        cost.flops,
        _providers(kernels, lambda: ref(*ref_args), compile_fn, cost.mac_bytes, dtype, device, extra_eager),
    )


def _shuffle_cases(
    s: ShuffleShape,
    n: int,
    dtype: torch.dtype,
    layout: str,
    device: torch.device,
    namespaces: list,
    budget: _CompileBudget,
    directions: Sequence[str],
) -> list[Case]:
    cases = []
    shape = (n, s.channels, s.hw, s.hw)
    elem = mac.dtype_size(dtype)
    x = tensor(shape, dtype, device, layout)
    for direction in directions:
        # The backward of a shuffle by g is a shuffle by C/g of the gradient.
        groups = s.groups if direction == "fwd" else s.channels // s.groups
        cost = (mac.channel_shuffle_cost if direction == "fwd" else mac.channel_shuffle_backward_cost)(
            shape, elem
        )
        extra = [("eager_native", lambda g=groups: F.channel_shuffle(x, g))] if direction == "fwd" else []
        info = {
            "batch": n,
            "dtype": str(dtype).removeprefix("torch."),
            "layout": layout,
            "shape": list(shape),
            "groups": groups,
        }
        cases.append(
            _op_case(
                "channel_shuffle", direction, s.label, info, cost, namespaces, "channel_shuffle", (x, groups),
                reference.channel_shuffle, (x, groups), budget, dtype, device, extra,
            )
        )
    return cases


def _concat_cases(
    s: ConcatShape,
    n: int,
    dtype: torch.dtype,
    layout: str,
    device: torch.device,
    namespaces: list,
    budget: _CompileBudget,
    directions: Sequence[str],
) -> list[Case]:
    cases = []
    elem = mac.dtype_size(dtype)
    ca, cb = s.channels_a, s.channels_b
    # a is the first half of the unit input (the V2 split: a channel slice, read in place).
    a = tensor((n, ca + cb, s.hw, s.hw), dtype, device, layout)[:, :ca]
    b = tensor((n, cb, s.hw, s.hw), dtype, device, layout)
    grad = tensor((n, ca + cb, s.hw, s.hw), dtype, device, layout)
    common = {
        "batch": n,
        "dtype": str(dtype).removeprefix("torch."),
        "layout": layout,
        "shape": [n, ca + cb, s.hw, s.hw],
        "channels_a": ca,
        "groups": s.groups,
    }
    if "fwd" in directions:
        cost = mac.concat_shuffle_cost(a.shape, b.shape, elem)
        cases.append(
            _op_case(
                "concat_shuffle", "fwd", s.label, dict(common), cost, namespaces, "concat_shuffle", (a, b, s.groups),
                reference.concat_shuffle, (a, b, s.groups), budget, dtype, device,
            )
        )
    if "bwd" in directions:
        cost = mac.concat_shuffle_backward_cost(grad.shape, ca, elem)
        bargs = (grad, s.groups, ca)
        cases.append(
            _op_case(
                "concat_shuffle", "bwd", s.label, dict(common), cost, namespaces, "concat_shuffle_backward", bargs,
                ref_concat_shuffle_backward, bargs, budget, dtype, device,
            )
        )
    return cases


def _pointwise_cases(
    s: PointwiseShape,
    n: int,
    dtype: torch.dtype,
    layout: str,
    device: torch.device,
    namespaces: list,
    budget: _CompileBudget,
    directions: Sequence[str],
) -> list[Case]:
    cases = []
    elem = mac.dtype_size(dtype)
    # Inference form of conv + BN: BN folds into a bias, so the bias is always present.
    x = tensor((n, s.c_in, s.hw, s.hw), dtype, device, layout)
    w = tensor((s.c_out, s.c_in // s.groups, 1, 1), dtype, device) * (s.c_in // s.groups) ** -0.5
    bias = tensor((s.c_out,), dtype, device)
    common = {
        "batch": n,
        "dtype": str(dtype).removeprefix("torch."),
        "layout": layout,
        "shape": [n, s.c_in, s.hw, s.hw],
        "c_out": s.c_out,
        "groups": s.groups,
        "shuffle_groups": s.shuffle_groups,
        "relu": s.relu,
        "bias": True,
    }
    args = (s.groups, s.shuffle_groups, s.relu)
    if "fwd" in directions:
        cost = mac.pointwise_conv_cost(
            x.shape, s.c_out, s.groups, elem, bias=True, relu=s.relu, shuffle_groups=s.shuffle_groups
        )
        fargs = (x, w, bias, *args)
        cases.append(
            _op_case(
                "pointwise_conv", "fwd", s.label, dict(common), cost, namespaces, "pointwise_conv", fargs,
                reference.pointwise_conv, fargs, budget, dtype, device,
            )
        )
    if "bwd" in directions:
        out = reference.pointwise_conv(x, w, bias, *args)
        relu_out = out if s.relu else None
        grad = tensor(tuple(out.shape), dtype, device, layout)
        mask = [True, True, True]
        cost = mac.pointwise_conv_backward_cost(
            x.shape, s.c_out, s.groups, elem, relu=s.relu, output_mask=mask
        )
        cases.append(
            _op_case(
                "pointwise_conv", "bwd", s.label, dict(common), cost, namespaces, "pointwise_conv_backward",
                (grad, x, w, relu_out, s.groups, s.shuffle_groups, mask),
                ref_pointwise_conv_backward, (grad, x, w, relu_out, s.groups, s.shuffle_groups, True),
                budget, dtype, device,
            )
        )
    return cases


def _depthwise_cases(
    s: DepthwiseShape,
    n: int,
    dtype: torch.dtype,
    layout: str,
    device: torch.device,
    namespaces: list,
    budget: _CompileBudget,
    directions: Sequence[str],
) -> list[Case]:
    cases = []
    elem = mac.dtype_size(dtype)
    k, pad = s.kernel, s.kernel // 2
    stride, padding, dilation = [s.stride, s.stride], [pad, pad], [1, 1]
    relu = False  # ShuffleNet's depthwise convs are followed by BN only, never ReLU
    x = tensor((n, s.channels, s.hw, s.hw), dtype, device, layout)
    w = tensor((s.channels, 1, k, k), dtype, device) / k
    bias = tensor((s.channels,), dtype, device)
    common = {
        "batch": n,
        "dtype": str(dtype).removeprefix("torch."),
        "layout": layout,
        "shape": [n, s.channels, s.hw, s.hw],
        "kernel": k,
        "stride": s.stride,
        "relu": relu,
        "bias": True,
    }
    if "fwd" in directions:
        cost = mac.depthwise_conv2d_cost(x.shape, (k, k), elem, stride=stride, padding=padding, bias=True)
        fargs = (x, w, bias, stride, padding, dilation, relu)
        cases.append(
            _op_case(
                "depthwise_conv2d", "fwd", s.label, dict(common), cost, namespaces, "depthwise_conv2d", fargs,
                reference.depthwise_conv2d, fargs, budget, dtype, device,
            )
        )
    if "bwd" in directions:
        out = reference.depthwise_conv2d(x, w, bias, stride, padding, dilation, relu)
        grad = tensor(tuple(out.shape), dtype, device, layout)
        mask = [True, True, True]
        cost = mac.depthwise_conv2d_backward_cost(
            x.shape, (k, k), elem, stride=stride, padding=padding, relu=relu, output_mask=mask
        )
        cases.append(
            _op_case(
                "depthwise_conv2d", "bwd", s.label, dict(common), cost, namespaces, "depthwise_conv2d_backward",
                (grad, x, w, None, stride, padding, dilation, mask),
                ref_depthwise_conv2d_backward, (grad, x, w, None, stride, padding, True),
                budget, dtype, device,
            )
        )
    return cases


_BUILDERS = {
    "channel_shuffle": _shuffle_cases,
    "concat_shuffle": _concat_cases,
    "pointwise_conv": _pointwise_cases,
    "depthwise_conv2d": _depthwise_cases,
}


def op_cases(
    op: str,
    device: torch.device,
    batches: Sequence[int],
    dtypes: Sequence[torch.dtype],
    layouts: Sequence[str],
    *,
    quick: bool = False,
    full: bool = False,
    compile_limit: int = -1,
    directions: Sequence[str] = ("fwd", "bwd"),
    max_shapes: int | None = None,
) -> list[Callable[[], list[Case]]]:
    """Every case of ``op``: shapes x batches x dtypes x layouts, each factory giving ``directions``.

    Factories, not cases: a case's tensors are allocated when its factory runs, so only
    one shape's tensors are alive at a time. ``compile_limit`` bounds how many cases per
    direction get a ``torch.compile`` provider (the first ones built; -1: all). The
    order is (batch, dtype, layout) outermost, shapes innermost, so a limit spends the
    compilations across shapes first. ``max_shapes`` keeps the first shapes only.
    """
    if op not in _BUILDERS:
        raise ValueError(f"unknown op {op!r}; expected one of {OPS}")
    namespaces = kernel_namespaces(device)
    budget = _CompileBudget(compile_limit)
    shapes = shapes_for(op, quick, full)
    if max_shapes is not None:
        shapes = shapes[:max_shapes]
    build = _BUILDERS[op]
    return [
        (
            lambda s=s, n=n, dtype=dtype, layout=layout: build(
                s, n, dtype, layout, device, namespaces, budget, directions
            )
        )
        for n in batches
        for dtype in dtypes
        for layout in layouts
        for s in shapes
    ]
