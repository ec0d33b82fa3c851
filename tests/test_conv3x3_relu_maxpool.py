"""The fused stem op (``conv3x3_relu_maxpool``) on CPU: against the reference and
``F.conv2d`` + ``relu`` + ``max_pool2d``, odd and even sizes, channel counts, layouts,
dtypes, batch 0, threads, bad input, the inference-only rule, opcheck and compile."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as TF
from torch import Tensor

import shufflenet_kernels as sk
import shufflenet_kernels.functional as SF
from shufflenet_kernels import reference
from tests.helpers import make_input, tolerances, weight_like

pytestmark = pytest.mark.skipif(not sk.NATIVE_AVAILABLE, reason="the native ops are not built")

OP = torch.ops.shufflenet.conv3x3_relu_maxpool.default


def stem_args(c_in: int, c_out: int, dtype: torch.dtype = torch.float32, *, bias: bool = True) -> list:
    weight = weight_like((c_out, c_in, 3, 3), dtype, "cpu", 9 * c_in)
    return [weight, (torch.randn(c_out) * 0.1).to(dtype) if bias else None]


def expected(x: Tensor, args: list, dtype: torch.dtype = torch.float64) -> Tensor:
    """The reference in ``dtype`` (float64 by default: exact enough to judge float32)."""
    weight, bias = (a.to(dtype) if a is not None else None for a in args)
    return reference.conv3x3_relu_maxpool(x.to(dtype), weight, bias)


def assert_stem_close(out: Tensor, ref: Tensor, dtype: torch.dtype) -> None:
    assert out.dtype == dtype
    assert out.shape == ref.shape
    assert out.is_contiguous(memory_format=torch.channels_last), f"output strides {out.stride()}"
    torch.testing.assert_close(out.to(ref.dtype), ref, **tolerances(dtype))


SIZES = [(224, 224), (225, 225), (224, 225), (7, 7), (3, 2), (2, 3), (1, 1), (1, 7), (6, 1)]


@pytest.mark.parametrize("hw", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "slice", "slice_cl", "strided"])
def test_sizes_and_layouts(hw: tuple[int, int], layout: str) -> None:
    """The stem's 3 -> 24 channels: every input layout read as it is, odd and even sizes."""
    x = make_input((2, 3, *hw), layout)
    args = stem_args(3, 24)
    assert_stem_close(OP(x, *args), expected(x, args), torch.float32)


@pytest.mark.parametrize("c_in", [1, 3, 4])
@pytest.mark.parametrize("c_out", [24, 16, 29])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("hw", [(15, 17), (2, 2)], ids=["15x17", "2x2"])
def test_channels_and_bias(c_in: int, c_out: int, bias: bool, hw: tuple[int, int]) -> None:
    x = make_input((3, c_in, *hw), "nchw")
    args = stem_args(c_in, c_out, bias=bias)
    out = OP(x, *args)
    assert_stem_close(out, expected(x, args), torch.float32)
    # F.conv2d + relu + max_pool2d in float32 too (the model's unfused path)
    unfused = TF.max_pool2d(TF.relu(TF.conv2d(x, args[0], args[1], stride=2, padding=1)), 3, 2, 1)
    torch.testing.assert_close(out, unfused, **tolerances(torch.float32))


@pytest.mark.parametrize("c_in,c_out", [(3, 24), (8, 32), (2, 5)])
def test_wider_channel_counts(c_in: int, c_out: int) -> None:
    """Several vectors of output channels (32: whole blocks of 16), odd counts."""
    x = make_input((2, c_in, 33, 30), "channels_last")
    args = stem_args(c_in, c_out)
    assert_stem_close(OP(x, *args), expected(x, args), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_dtypes(dtype: torch.dtype, layout: str) -> None:
    x = make_input((2, 3, 29, 32), layout, dtype)
    args = stem_args(3, 24, dtype)
    out = OP(x, *args)
    # half types: the float32 result of the same (rounded) inputs, rounded once
    assert_stem_close(out, expected(x, args, torch.float64 if dtype == torch.float64 else torch.float32), dtype)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_batch_zero(layout: str) -> None:
    x = make_input((0, 3, 16, 16), layout)
    out = OP(x, *stem_args(3, 24))
    assert out.shape == (0, 24, 4, 4)
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 3])
def test_bands_and_threads(threads: int, n: int) -> None:
    """Images split into bands of output rows (batch 1 on every thread): the same values
    whatever the split."""
    x = make_input((n, 3, 45, 38), "nchw")
    args = stem_args(3, 24)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = OP(x, *args)
    finally:
        torch.set_num_threads(old)
    assert_stem_close(out, expected(x, args), torch.float32)


def test_nan_propagates() -> None:
    """A NaN reaching a pooling window gives NaN there, as relu + max_pool2d do."""
    x = torch.randn(1, 3, 20, 20)
    x[0, 1, 9, 9] = float("nan")
    args = stem_args(3, 24)
    out, ref = OP(x, *args), expected(x, args)
    assert torch.equal(out.isnan(), ref.isnan()) and out.isnan().any()


def test_inference_tensors() -> None:
    with torch.inference_mode():
        x = make_input((2, 3, 17, 17), "channels_last")
        args = stem_args(3, 24)
        out = OP(x, *args)
    assert_stem_close(out, expected(x, args), torch.float32)


@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_other_instruction_sets(isa: str) -> None:
    """The AVX2 and baseline versions of the kernel (SHUFFLENET_CPU_ISA caps the choice)."""
    code = textwrap.dedent("""
        import torch, shufflenet_kernels
        from tests.test_conv3x3_relu_maxpool import OP, stem_args, expected, assert_stem_close, make_input
        for c_in, c_out, layout in [(3, 24, "nchw"), (3, 32, "channels_last"), (4, 29, "slice_cl"), (1, 5, "nchw")]:
            x = make_input((2, c_in, 31, 26), layout)
            args = stem_args(c_in, c_out)
            assert_stem_close(OP(x, *args), expected(x, args), torch.float32)
        print("ok")
    """)
    env = dict(os.environ, SHUFFLENET_CPU_ISA=isa)
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


# ---- bad input and the inference-only rule ---------------------------------------------


def _bad_cases() -> list:
    x = torch.randn(2, 3, 8, 8)
    w, b = stem_args(3, 24)
    return [
        pytest.param(torch.randn(3, 8, 8), w, b, "input must be 4-D", id="rank3"),
        pytest.param(x.to(torch.int32), w, b, "input has dtype", id="int-input"),
        pytest.param(torch.randn(2, 3, 0, 8), w, b, "must be at least 1x1", id="h0"),
        pytest.param(torch.randn(2, 0, 8, 8), torch.randn(24, 0, 3, 3), b, "input must have at least one channel",
                     id="c0"),
        pytest.param(x, torch.randn(24, 3, 3), b, "weight must be 4-D", id="weight-rank"),
        pytest.param(x, torch.randn(24, 4, 3, 3), b, r"weight must have shape \[24, 3, 3, 3\]", id="weight-c-in"),
        pytest.param(x, torch.randn(24, 3, 5, 5), b, r"weight must have shape \[24, 3, 3, 3\]", id="weight-5x5"),
        pytest.param(x, torch.randn(0, 3, 3, 3), None, "weight must have at least one output channel", id="c-out0"),
        pytest.param(x, w.double(), b, "weight has dtype .* but input has dtype .*; expected the same dtype",
                     id="weight-dtype"),
        pytest.param(x, w, torch.randn(23), r"bias must have shape \[24\]", id="bias-shape"),
        pytest.param(x, w, b.half(), "bias has dtype", id="bias-dtype"),
    ]


@pytest.mark.parametrize("x,weight,bias,match", _bad_cases())
def test_bad_input(x: Tensor, weight: Tensor, bias: Tensor | None, match: str) -> None:
    with pytest.raises(RuntimeError, match=match):
        OP(x, weight, bias)
    # The fake kernel says the same (torch.compile sees the error at trace time).
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode, pytest.raises(RuntimeError, match=match):
        OP(mode.from_tensor(x), mode.from_tensor(weight), mode.from_tensor(bias) if bias is not None else None)


def test_functional_refuses_other_devices() -> None:
    x = torch.randn(1, 3, 8, 8, device="meta")
    with pytest.raises(RuntimeError, match="conv3x3_relu_maxpool: no implementation for meta tensors"):
        SF.conv3x3_relu_maxpool(x, torch.randn(24, 3, 3, 3, device="meta"))
    assert SF.conv3x3_relu_maxpool_available("cpu") and not SF.conv3x3_relu_maxpool_available("cuda")


@pytest.mark.parametrize("which", ["input", "weight", "bias"])
def test_requires_grad_is_refused(which: str) -> None:
    x = torch.randn(2, 3, 9, 9)
    args = stem_args(3, 24)
    (x if which == "input" else args[0] if which == "weight" else args[1]).requires_grad_(True)
    with pytest.raises(RuntimeError, match=f"conv3x3_relu_maxpool: {which} requires grad, but "
                       "conv3x3_relu_maxpool is an inference-only op"):
        OP(x, *args)
    with torch.no_grad():  # grad mode off: runs
        out = OP(x, *args)
    assert not out.requires_grad
    assert_stem_close(out, expected(x.detach(), [a.detach() for a in args]), torch.float32)


# ---- opcheck, compile ------------------------------------------------------------------

# No autograd registration test: the op has no derivative (test_requires_grad_is_refused).
OPCHECK_UTILS = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided", "slice_cl"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_opcheck(layout: str, bias: bool) -> None:
    x = make_input((2, 3, 11, 10), layout)
    torch.library.opcheck(OP, (x, *stem_args(3, 24, bias=bias)), test_utils=OPCHECK_UTILS)


def test_compile_fullgraph() -> None:
    torch._dynamo.reset()
    args = stem_args(3, 24)

    def stem(x: Tensor) -> Tensor:
        return SF.conv3x3_relu_maxpool(x, *args) * 2.0

    x = torch.randn(2, 3, 20, 21)
    with torch.no_grad():
        out = torch.compile(stem, fullgraph=True)(x)
    torch.testing.assert_close(out, 2.0 * expected(x, args).float(), **tolerances(torch.float32))
