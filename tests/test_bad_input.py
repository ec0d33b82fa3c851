"""Bad input raises a clear error naming the offending argument, on every implementation.

Each case starts from a valid call of an op (checked to succeed, so no case passes
only because the base call is broken) and changes one argument: wrong rank, an
unsupported or mismatched dtype, groups <= 0 or not dividing the channels, a weight,
bias or grad_output of the wrong shape, stride/padding/dilation of the wrong length
or value, a kernel larger than supported, an argument on another device.

Implementations: the C++ ops (``torch.ops.shufflenet``), the functional API over
them, the Triton ops (``torch.ops.shufflenet_triton``, interpreted on CPU) and the
fake kernels (every tensor on the ``meta`` device). Without a GPU a tensor on another
device is a ``meta`` tensor: the dispatcher then routes the call to the fake kernel,
so on CPU the device check exercised is the fake kernel's; on a GPU the second
argument is a CPU tensor and the CUDA kernel's own check runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

import shufflenet_kernels
from shufflenet_kernels import functional
from shufflenet_kernels.backend import has_triton_ops
from tests.helpers import ALL_IMPLS, CUDA

# Argument order of each op's schema (csrc/ops.cpp); the functional API takes the
# same positional order for the four forward ops.
SCHEMA_ARGS: dict[str, tuple[str, ...]] = {
    "channel_shuffle": ("input", "groups"),
    "concat_shuffle": ("a", "b", "groups"),
    "concat_shuffle_backward": ("grad_output", "groups", "channels_a"),
    "pointwise_conv": ("input", "weight", "bias", "groups", "shuffle_groups", "relu"),
    "pointwise_conv_backward": (
        "grad_output", "input", "weight", "relu_output", "groups", "shuffle_groups", "output_mask",
    ),
    "depthwise_conv2d": ("input", "weight", "bias", "stride", "padding", "dilation", "relu"),
    "depthwise_conv2d_backward": (
        "grad_output", "input", "weight", "relu_output", "stride", "padding", "dilation", "output_mask",
    ),
}
FORWARD_OPS = ("channel_shuffle", "concat_shuffle", "pointwise_conv", "depthwise_conv2d")


@dataclasses.dataclass(frozen=True)
class Target:
    """How an op is called: ``ops`` (``torch.ops.<namespace>``) or ``functional``,
    with every tensor on ``device``."""

    kind: str
    namespace: str
    device: str

    @property
    def other_device(self) -> str:
        """A device that is not ``device``, for the device-mismatch cases."""
        return "cpu" if self.device in ("meta", "cuda") else "meta"

    def supports(self, op: str) -> bool:
        return self.kind == "ops" or op in FORWARD_OPS

    def call(self, op: str, args: dict[str, Any]) -> Any:
        positional = [args[name] for name in SCHEMA_ARGS[op]]
        if self.kind == "functional":
            backend = "triton" if self.namespace == "shufflenet_triton" else "auto"
            return getattr(functional, op)(*positional, backend=backend)
        return getattr(getattr(torch.ops, self.namespace), op)(*positional)


def _targets() -> list:
    params = []
    for p in ALL_IMPLS:  # C++ CPU, and (where present) C++ CUDA, Triton CUDA, interpreted Triton
        impl = p.values[0]
        params.append(pytest.param(Target("ops", impl.namespace, impl.device), id=p.id, marks=p.marks))
    if shufflenet_kernels.NATIVE_AVAILABLE:
        params.append(pytest.param(Target("functional", "shufflenet", "cpu"), id="functional-cpu"))
        params.append(pytest.param(Target("ops", "shufflenet", "meta"), id="fake-meta"))
        if CUDA and shufflenet_kernels.has_cuda_kernels():
            params.append(pytest.param(Target("functional", "shufflenet", "cuda"), id="functional-cuda",
                                       marks=pytest.mark.gpu))
    if CUDA and has_triton_ops():
        params.append(pytest.param(Target("functional", "shufflenet_triton", "cuda"),
                                   id="functional-triton-cuda", marks=[pytest.mark.gpu, pytest.mark.triton]))
    return params


TARGETS = _targets()


@dataclasses.dataclass(frozen=True)
class Ctx:
    """Builds the tensors of one call on the target's device."""

    device: str
    other: str

    def t(self, *shape: int, dtype: torch.dtype = torch.float32, device: str | None = None) -> Tensor:
        dev = device or self.device
        if dtype.is_floating_point:
            return torch.randn(shape, dtype=dtype, device=dev)
        return torch.ones(shape, dtype=dtype, device=dev)

    def pos(self, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """A valid ``relu_output``: non-negative, like a ReLU's output."""
        return self.t(*shape, dtype=dtype).abs()


# Valid calls, small enough for the Triton interpreter.
VALID: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "channel_shuffle": lambda c: dict(input=c.t(2, 6, 4, 4), groups=3),
    "concat_shuffle": lambda c: dict(a=c.t(2, 4, 3, 3), b=c.t(2, 2, 3, 3), groups=3),
    "concat_shuffle_backward": lambda c: dict(grad_output=c.t(2, 6, 3, 3), groups=3, channels_a=4),
    "pointwise_conv": lambda c: dict(input=c.t(2, 8, 4, 4), weight=c.t(12, 4, 1, 1), bias=c.t(12), groups=2,
                                     shuffle_groups=3, relu=True),
    "pointwise_conv_backward": lambda c: dict(
        grad_output=c.t(2, 12, 4, 4), input=c.t(2, 8, 4, 4), weight=c.t(12, 4, 1, 1),
        relu_output=c.pos(2, 12, 4, 4), groups=2, shuffle_groups=3, output_mask=[True, True, True]),
    "depthwise_conv2d": lambda c: dict(
        input=c.t(2, 4, 6, 6), weight=c.t(4, 1, 3, 3), bias=c.t(4), stride=[1, 1], padding=[1, 1],
        dilation=[1, 1], relu=True),
    "depthwise_conv2d_backward": lambda c: dict(
        grad_output=c.t(2, 4, 6, 6), input=c.t(2, 4, 6, 6), weight=c.t(4, 1, 3, 3),
        relu_output=c.pos(2, 4, 6, 6), stride=[1, 1], padding=[1, 1], dilation=[1, 1],
        output_mask=[True, True, True]),
}


@dataclasses.dataclass(frozen=True)
class Bad:
    """One bad call: ``VALID[op]`` with the arguments ``change`` returns replaced;
    the error must name ``arg``."""

    op: str
    name: str
    arg: str
    change: Callable[[Ctx], dict[str, Any]]

    @property
    def id(self) -> str:
        return f"{self.op}-{self.name}"


def _bad(op: str, cases: list[tuple[str, str, Callable[[Ctx], dict[str, Any]]]]) -> list[Bad]:
    return [Bad(op, name, arg, change) for name, arg, change in cases]


i32, i64, f64, f16, bf16 = torch.int32, torch.int64, torch.float64, torch.float16, torch.bfloat16

BAD: list[Bad] = [
    *_bad("channel_shuffle", [
        ("rank2", "input", lambda c: dict(input=c.t(2, 6))),
        ("rank6", "input", lambda c: dict(input=c.t(1, 6, 1, 1, 1, 2))),
        ("int32", "input", lambda c: dict(input=c.t(2, 6, 4, 4, dtype=i32))),
        ("int64", "input", lambda c: dict(input=c.t(2, 6, 4, 4, dtype=i64))),
        ("bool", "input", lambda c: dict(input=c.t(2, 6, 4, 4, dtype=torch.bool))),
        ("complex", "input", lambda c: dict(input=c.t(2, 6, 4, 4, dtype=torch.complex64))),
        ("groups0", "groups", lambda c: dict(groups=0)),
        ("groups-neg", "groups", lambda c: dict(groups=-3)),
        ("groups-not-dividing", "groups", lambda c: dict(groups=4)),
        ("groups-huge", "groups", lambda c: dict(groups=2**40)),
    ]),
    *_bad("concat_shuffle", [
        ("a-rank2", "a", lambda c: dict(a=c.t(2, 4), b=c.t(2, 2))),
        ("a-int32", "a", lambda c: dict(a=c.t(2, 4, 3, 3, dtype=i32), b=c.t(2, 2, 3, 3, dtype=i32))),
        ("b-float64", "b", lambda c: dict(b=c.t(2, 2, 3, 3, dtype=f64))),
        ("b-int32", "b", lambda c: dict(b=c.t(2, 2, 3, 3, dtype=i32))),
        ("b-float16", "b", lambda c: dict(b=c.t(2, 2, 3, 3, dtype=f16))),
        ("b-rank3", "b", lambda c: dict(b=c.t(2, 2, 9))),
        ("b-batch", "b", lambda c: dict(b=c.t(3, 2, 3, 3))),
        ("b-height", "b", lambda c: dict(b=c.t(2, 2, 4, 3))),
        ("b-width", "b", lambda c: dict(b=c.t(2, 2, 3, 2))),
        ("b-device", "b", lambda c: dict(b=c.t(2, 2, 3, 3, device=c.other))),
        ("groups0", "groups", lambda c: dict(groups=0)),
        ("groups-neg", "groups", lambda c: dict(groups=-1)),
        ("groups-not-dividing", "groups", lambda c: dict(groups=4)),
    ]),
    *_bad("concat_shuffle_backward", [
        ("rank2", "grad_output", lambda c: dict(grad_output=c.t(2, 6))),
        ("rank6", "grad_output", lambda c: dict(grad_output=c.t(1, 6, 1, 1, 1, 2))),
        ("int32", "grad_output", lambda c: dict(grad_output=c.t(2, 6, 3, 3, dtype=i32))),
        ("groups0", "groups", lambda c: dict(groups=0)),
        ("groups-not-dividing", "groups", lambda c: dict(groups=4)),
        ("channels_a-neg", "channels_a", lambda c: dict(channels_a=-1)),
        ("channels_a-too-big", "channels_a", lambda c: dict(channels_a=7)),
    ]),
    *_bad("pointwise_conv", [
        ("input-rank3", "input", lambda c: dict(input=c.t(2, 8, 16))),
        ("input-rank5", "input", lambda c: dict(input=c.t(2, 8, 4, 4, 1))),
        ("input-int32", "input", lambda c: dict(input=c.t(2, 8, 4, 4, dtype=i32))),
        ("weight-rank2", "weight", lambda c: dict(weight=c.t(12, 4))),
        ("weight-float64", "weight", lambda c: dict(weight=c.t(12, 4, 1, 1, dtype=f64))),
        ("weight-int32", "weight", lambda c: dict(weight=c.t(12, 4, 1, 1, dtype=i32))),
        ("weight-bfloat16", "weight", lambda c: dict(weight=c.t(12, 4, 1, 1, dtype=bf16))),
        ("weight-cin", "weight", lambda c: dict(weight=c.t(12, 8, 1, 1))),
        ("weight-3x3", "weight", lambda c: dict(weight=c.t(12, 4, 3, 3))),
        ("weight-no-cout", "weight", lambda c: dict(weight=c.t(0, 4, 1, 1))),
        ("weight-device", "weight", lambda c: dict(weight=c.t(12, 4, 1, 1, device=c.other))),
        ("groups0", "groups", lambda c: dict(groups=0)),
        ("groups-neg", "groups", lambda c: dict(groups=-2)),
        ("groups-not-dividing-cin", "groups", lambda c: dict(groups=3, weight=c.t(12, 2, 1, 1))),
        ("groups-not-dividing-cout", "groups", lambda c: dict(weight=c.t(9, 4, 1, 1), bias=c.t(9))),
        ("shuffle_groups0", "shuffle_groups", lambda c: dict(shuffle_groups=0)),
        ("shuffle_groups-neg", "shuffle_groups", lambda c: dict(shuffle_groups=-3)),
        ("shuffle_groups-not-dividing", "shuffle_groups", lambda c: dict(shuffle_groups=5)),
        ("bias-length", "bias", lambda c: dict(bias=c.t(13))),
        ("bias-rank2", "bias", lambda c: dict(bias=c.t(12, 1))),
        ("bias-float64", "bias", lambda c: dict(bias=c.t(12, dtype=f64))),
        ("bias-device", "bias", lambda c: dict(bias=c.t(12, device=c.other))),
    ]),
    *_bad("pointwise_conv_backward", [
        ("grad_output-channels", "grad_output", lambda c: dict(grad_output=c.t(2, 8, 4, 4))),
        ("grad_output-spatial", "grad_output", lambda c: dict(grad_output=c.t(2, 12, 3, 4))),
        ("grad_output-batch", "grad_output", lambda c: dict(grad_output=c.t(3, 12, 4, 4))),
        ("grad_output-float64", "grad_output", lambda c: dict(grad_output=c.t(2, 12, 4, 4, dtype=f64))),
        ("grad_output-device", "grad_output", lambda c: dict(grad_output=c.t(2, 12, 4, 4, device=c.other))),
        ("relu_output-shape", "relu_output", lambda c: dict(relu_output=c.pos(2, 12, 4, 3))),
        ("relu_output-float64", "relu_output", lambda c: dict(relu_output=c.pos(2, 12, 4, 4, dtype=f64))),
        ("relu_output-device", "relu_output", lambda c: dict(relu_output=c.t(2, 12, 4, 4, device=c.other))),
        ("weight-cin", "weight", lambda c: dict(weight=c.t(12, 8, 1, 1))),
        ("weight-float64", "weight", lambda c: dict(weight=c.t(12, 4, 1, 1, dtype=f64))),
        ("input-rank3", "input", lambda c: dict(input=c.t(2, 8, 16))),
        ("groups0", "groups", lambda c: dict(groups=0)),
        ("shuffle_groups-not-dividing", "shuffle_groups", lambda c: dict(shuffle_groups=5)),
        ("output_mask-length", "output_mask", lambda c: dict(output_mask=[True, True])),
    ]),
    *_bad("depthwise_conv2d", [
        ("input-rank3", "input", lambda c: dict(input=c.t(2, 4, 36))),
        ("input-rank5", "input", lambda c: dict(input=c.t(2, 4, 6, 6, 1))),
        ("input-int64", "input", lambda c: dict(input=c.t(2, 4, 6, 6, dtype=i64))),
        ("input-too-small", "input", lambda c: dict(input=c.t(2, 4, 2, 2), padding=[0, 0])),
        # Shorter than the window, yet (in + 2p - d(k-1) - 1) / s + 1 == 1 when the division
        # truncates toward zero: caught only by checking the padded extent itself.
        ("input-too-small-stride2", "input", lambda c: dict(input=c.t(2, 4, 2, 2), padding=[0, 0], stride=[2, 2])),
        ("input-too-small-dilated", "input",
         lambda c: dict(input=c.t(2, 4, 4, 6), padding=[0, 0], dilation=[3, 1], stride=[4, 1])),
        ("weight-rank3", "weight", lambda c: dict(weight=c.t(4, 3, 3))),
        ("weight-channels", "weight", lambda c: dict(weight=c.t(5, 1, 3, 3))),
        ("weight-dim1", "weight", lambda c: dict(weight=c.t(4, 2, 3, 3))),
        ("weight-float64", "weight", lambda c: dict(weight=c.t(4, 1, 3, 3, dtype=f64))),
        ("weight-float16", "weight", lambda c: dict(weight=c.t(4, 1, 3, 3, dtype=f16))),
        ("weight-device", "weight", lambda c: dict(weight=c.t(4, 1, 3, 3, device=c.other))),
        ("kernel-9x9", "weight", lambda c: dict(weight=c.t(4, 1, 9, 9), padding=[4, 4])),
        ("kernel-3x9", "weight", lambda c: dict(weight=c.t(4, 1, 3, 9), padding=[1, 4])),
        ("kernel-0x3", "weight", lambda c: dict(weight=c.t(4, 1, 0, 3))),
        ("stride-length1", "stride", lambda c: dict(stride=[1])),
        ("stride-length3", "stride", lambda c: dict(stride=[1, 1, 1])),
        ("padding-length3", "padding", lambda c: dict(padding=[1, 1, 1])),
        ("dilation-length1", "dilation", lambda c: dict(dilation=[1])),
        ("stride0", "stride", lambda c: dict(stride=[1, 0])),
        ("stride-neg", "stride", lambda c: dict(stride=[-1, 1])),
        ("padding-neg", "padding", lambda c: dict(padding=[1, -1])),
        ("dilation0", "dilation", lambda c: dict(dilation=[0, 1])),
        ("dilation-neg", "dilation", lambda c: dict(dilation=[1, -2])),
        ("bias-length", "bias", lambda c: dict(bias=c.t(5))),
        ("bias-rank2", "bias", lambda c: dict(bias=c.t(4, 1))),
        ("bias-bfloat16", "bias", lambda c: dict(bias=c.t(4, dtype=bf16))),
        ("bias-device", "bias", lambda c: dict(bias=c.t(4, device=c.other))),
    ]),
    *_bad("depthwise_conv2d_backward", [
        ("grad_output-spatial", "grad_output", lambda c: dict(grad_output=c.t(2, 4, 3, 3))),
        ("grad_output-channels", "grad_output", lambda c: dict(grad_output=c.t(2, 5, 6, 6))),
        ("grad_output-float64", "grad_output", lambda c: dict(grad_output=c.t(2, 4, 6, 6, dtype=f64))),
        ("grad_output-device", "grad_output", lambda c: dict(grad_output=c.t(2, 4, 6, 6, device=c.other))),
        ("relu_output-shape", "relu_output", lambda c: dict(relu_output=c.pos(2, 4, 5, 6))),
        ("relu_output-float64", "relu_output", lambda c: dict(relu_output=c.pos(2, 4, 6, 6, dtype=f64))),
        ("relu_output-device", "relu_output", lambda c: dict(relu_output=c.t(2, 4, 6, 6, device=c.other))),
        ("weight-channels", "weight", lambda c: dict(weight=c.t(5, 1, 3, 3))),
        ("kernel-9x9", "weight", lambda c: dict(weight=c.t(4, 1, 9, 9), padding=[4, 4])),
        ("stride0", "stride", lambda c: dict(stride=[0, 1])),
        ("input-too-small-stride2", "input", lambda c: dict(
            grad_output=c.t(2, 4, 1, 1), input=c.t(2, 4, 2, 2), relu_output=c.pos(2, 4, 1, 1), padding=[0, 0],
            stride=[2, 2])),
        ("padding-neg", "padding", lambda c: dict(padding=[-1, 1])),
        ("dilation0", "dilation", lambda c: dict(dilation=[1, 0])),
        ("output_mask-length", "output_mask", lambda c: dict(output_mask=[True, True])),
    ]),
]


BACKWARD_OPS = ("concat_shuffle_backward", "pointwise_conv_backward", "depthwise_conv2d_backward")


def _known_gap(target: Target, case: Bad) -> str | None:
    """Why the library does not (yet) give the expected error for this call, or None."""
    if target.kind != "ops" or target.namespace != "shufflenet":
        return None
    if case.name == "output_mask-length" and target.device != "meta":
        return ("bool[3] output_mask: the dispatcher's list-to-array conversion fails first, with a message "
                "that does not name output_mask")
    return None


def _bad_params() -> list:
    out = []
    for p in TARGETS:
        target = p.values[0]
        for case in BAD:
            if not target.supports(case.op):
                continue
            marks = list(p.marks)
            reason = _known_gap(target, case)
            if reason is not None:
                marks.append(pytest.mark.xfail(strict=True, reason=reason))
            out.append(pytest.param(target, case, id=f"{p.id}-{case.id}", marks=marks))
    return out


def _target_op_params(targets: list) -> list:
    """(target, op) for every op the target has."""
    return [
        pytest.param(p.values[0], op, id=f"{p.id}-{op}", marks=p.marks)
        for p in targets
        for op in SCHEMA_ARGS
        if p.values[0].supports(op)
    ]


@pytest.mark.parametrize("target,op", _target_op_params(TARGETS))
def test_valid_call_succeeds(target: Target, op: str) -> None:
    """The unchanged base call of every bad case runs."""
    ctx = Ctx(target.device, target.other_device)
    out = target.call(op, VALID[op](ctx))
    outs = out if isinstance(out, tuple) else (out,)
    assert all(o.device.type == target.device for o in outs)


@pytest.mark.parametrize("target,case", _bad_params())
def test_bad_input_names_argument(target: Target, case: Bad) -> None:
    ctx = Ctx(target.device, target.other_device)
    args = VALID[case.op](ctx)
    changed = case.change(ctx)
    assert set(changed) <= set(args), f"unknown argument in {sorted(changed)}"
    args.update(changed)
    with pytest.raises((RuntimeError, ValueError), match=rf"\b{case.arg}\b"):
        target.call(case.op, args)


# ---- dtypes that depend on the device ---------------------------------------------

CPU_TARGETS = [p for p in TARGETS if p.values[0].device == "cpu"]
CUDA_TARGETS = [p for p in TARGETS if p.values[0].device == "cuda"]

# The tensor arguments of each op that carry the op's dtype.
FLOAT_ARGS: dict[str, tuple[str, ...]] = {
    "channel_shuffle": ("input",),
    "concat_shuffle": ("a", "b"),
    "concat_shuffle_backward": ("grad_output",),
    "pointwise_conv": ("input", "weight", "bias"),
    "pointwise_conv_backward": ("grad_output", "input", "weight", "relu_output"),
    "depthwise_conv2d": ("input", "weight", "bias"),
    "depthwise_conv2d_backward": ("grad_output", "input", "weight", "relu_output"),
}


def _as_float64(args: dict[str, Any], op: str) -> dict[str, Any]:
    return {k: (v.double() if k in FLOAT_ARGS[op] else v) for k, v in args.items()}


@pytest.mark.parametrize("target,op", _target_op_params(CPU_TARGETS))
def test_float64_accepted_on_cpu(target: Target, op: str) -> None:
    """float64 is a supported dtype on CPU (gradcheck runs in it): not bad input there."""
    args = _as_float64(VALID[op](Ctx("cpu", "meta")), op)
    out = target.call(op, args)
    outs = out if isinstance(out, tuple) else (out,)
    assert all(o.dtype == torch.float64 for o in outs)


# Without a GPU: one placeholder, reported as skipped with its reason.
_NO_GPU = pytest.param(None, None, id="no-gpu",
                       marks=pytest.mark.skip(reason="needs a CUDA GPU (float64 is rejected on CUDA only)"))


@pytest.mark.parametrize("target,op", _target_op_params(CUDA_TARGETS) or [_NO_GPU])
def test_float64_rejected_on_cuda(target: Target, op: str) -> None:
    """float64 is CPU-only: on a GPU it is an unsupported dtype, named in the error
    (the backward ops check ``input`` before ``grad_output``)."""
    args = _as_float64(VALID[op](Ctx("cuda", "cpu")), op)
    checked_first = "input" if "input" in args else SCHEMA_ARGS[op][0]
    with pytest.raises(RuntimeError, match=rf"\b{checked_first}\b"):
        target.call(op, args)


# ---- input smaller than the dilated kernel ------------------------------------------

# (H, W, kernel, stride, padding, dilation): the padded input is shorter than the
# dilated window in at least one dim, though truncating division would give one output.
TOO_SMALL = [
    pytest.param(2, 2, 3, (2, 2), (0, 0), (1, 1), id="2x2-k3-s2"),
    pytest.param(4, 6, 3, (4, 1), (0, 0), (3, 1), id="4x6-k3-s4-d3"),
    pytest.param(5, 1, 3, (1, 2), (1, 0), (1, 1), id="5x1-k3-w-only"),
    pytest.param(1, 1, 5, (3, 3), (1, 1), (1, 1), id="1x1-k5-p1-s3"),
]


@pytest.mark.parametrize("h,w,k,stride,padding,dilation", TOO_SMALL)
@pytest.mark.parametrize("target", TARGETS)
def test_input_smaller_than_dilated_kernel_raises(
    target: Target, h: int, w: int, k: int, stride: tuple, padding: tuple, dilation: tuple
) -> None:
    """Like F.conv2d (and the fake kernel), every implementation refuses an input the
    dilated kernel does not fit in, forward and backward, and says why; it does not
    return the sum of a partial window."""
    ctx = Ctx(target.device, target.other_device)
    x, wt = ctx.t(1, 4, h, w), ctx.t(4, 1, k, k)
    with pytest.raises(RuntimeError):
        torch.nn.functional.conv2d(x.cpu(), wt.cpu(), None, stride, padding, dilation, groups=4)
    conv = dict(stride=list(stride), padding=list(padding), dilation=list(dilation))
    expected = (rf"input spatial size \[{h}, {w}\] is too small for kernel \[{k}, {k}\] with padding "
                rf"\[{padding[0]}, {padding[1]}\] and dilation \[{dilation[0]}, {dilation[1]}\]")
    with pytest.raises(RuntimeError, match=expected):
        target.call("depthwise_conv2d", dict(input=x, weight=wt, bias=ctx.t(4), relu=False, **conv))
    if not target.supports("depthwise_conv2d_backward"):
        return
    # The output size truncating division gives: at least 1 in every dim.
    out = [max(1, (s + 2 * p - d * (k - 1) - 1) // st + 1)
           for s, p, d, st in zip((h, w), padding, dilation, stride, strict=True)]
    with pytest.raises(RuntimeError, match=expected):
        target.call("depthwise_conv2d_backward", dict(
            grad_output=ctx.t(1, 4, *out), input=x, weight=wt, relu_output=None,
            output_mask=[True, True, True], **conv))


@pytest.mark.parametrize("target", TARGETS)
def test_input_exactly_one_window_runs(target: Target) -> None:
    """The boundary stays valid: a padded input exactly one dilated window long gives one output."""
    ctx = Ctx(target.device, target.other_device)
    x, wt = ctx.t(1, 4, 3, 5), ctx.t(4, 1, 3, 3)
    out = target.call("depthwise_conv2d", dict(input=x, weight=wt, bias=None, stride=[2, 2], padding=[0, 0],
                                               dilation=[1, 2], relu=False))
    assert tuple(out.shape) == (1, 4, 1, 1)
    if target.device == "cpu":
        ref = torch.nn.functional.conv2d(x, wt, None, 2, 0, (1, 2), groups=4)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
