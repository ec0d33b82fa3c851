"""The fused ShuffleNet V2 unit (``v2_unit``) on CPU: against the reference composition
and torchvision's ``InvertedResidual`` with BN folded, every V2 width's channel counts,
layouts, dtypes, odd shapes, bad input, the inference-only rule, opcheck and compile."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import shufflenet_kernels as sk
import shufflenet_kernels.functional as SF
from shufflenet_kernels import fusion, reference
from tests.cases import V2_STAGE_CHANNELS
from tests.helpers import assert_layout_kept, make_input, weight_like
from tests.test_units import randomize

pytestmark = pytest.mark.skipif(not sk.NATIVE_AVAILABLE, reason="the native ops are not built")

OP = torch.ops.shufflenet.v2_unit.default

# Input channels of the first (stride-2) unit of each stage: the stem's 24, then the
# previous stage's output.
STEM_CHANNELS = 24
SPATIAL = {0: (14, 14), 1: (9, 11), 2: (7, 7)}  # per stage: small, one of them odd


def unit_args(
    c_in: int, c_out: int, stride: int, dtype: torch.dtype = torch.float32, *, bias: bool = True,
    c_mid: int | None = None,
) -> list:
    """Random folded-unit weights in the op's argument order (after the input), stride last.

    stride 1: c_in == c_out, the branch runs on c_in/2 channels; stride 2: the branch and
    the projection take all c_in channels, each gives c_out/2.
    """
    half = c_out // 2
    c_branch = c_in if stride == 2 else c_in // 2
    mid = half if c_mid is None else c_mid

    def w(*shape: int, fan_in: int) -> Tensor:
        return weight_like(shape, dtype, "cpu", fan_in)

    def b(n: int) -> Tensor | None:
        return (torch.randn(n) * 0.1).to(dtype) if bias else None

    proj: list = [None, None, None, None]
    if stride == 2:
        proj = [w(c_branch, 1, 3, 3, fan_in=9), b(c_branch), w(half, c_branch, 1, 1, fan_in=c_branch), b(half)]
    return proj + [w(mid, c_branch, 1, 1, fan_in=c_branch), b(mid), w(mid, 1, 3, 3, fan_in=9), b(mid),
                   w(half, mid, 1, 1, fan_in=mid), b(half), stride]


def reference_out(x: Tensor, args: list, dtype: torch.dtype = torch.float64) -> Tensor:
    """reference.v2_unit in ``dtype`` (float64 by default: exact enough to judge float32)."""
    cast = [a.to(dtype) if isinstance(a, Tensor) else a for a in args]
    return reference.v2_unit(x.to(dtype), *cast)


def assert_unit_close(out: Tensor, ref: Tensor, rel: float) -> None:
    """``out`` within ``rel`` of ``ref``, relative to the output's scale (the order in which
    float32 sums are taken differs from oneDNN's, which the reference uses)."""
    scale = max(ref.abs().max().item(), 1.0)
    torch.testing.assert_close(out.to(ref.dtype), ref, rtol=rel, atol=rel * scale)


# ---- every V2 width's unit shapes ------------------------------------------------------


def _width_cases() -> list:
    cases = []
    for width, chans in V2_STAGE_CHANNELS.items():
        prev = STEM_CHANNELS
        for stage, c in enumerate(chans):
            h, w = SPATIAL[stage]
            cases.append(pytest.param(prev, c, 2, (2 * h, 2 * w) if stage < 2 else (h, w),
                                      id=f"x{width}-s{stage + 2}-stride2-{prev}to{c}"))
            cases.append(pytest.param(c, c, 1, (h, w), id=f"x{width}-s{stage + 2}-stride1-{c}"))
            prev = c
    return cases


@pytest.mark.parametrize("c_in,c_out,stride,hw", _width_cases())
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "slice", "slice_cl"])
def test_widths_match_reference(c_in: int, c_out: int, stride: int, hw: tuple[int, int], layout: str) -> None:
    x = make_input((2, c_in, *hw), layout)
    args = unit_args(c_in, c_out, stride)
    out = OP(x, *args)
    assert out.shape == (2, c_out, (hw[0] - 1) // stride + 1, (hw[1] - 1) // stride + 1)
    assert_layout_kept(out, x)
    assert_unit_close(out, reference_out(x, args), 1e-4)


def _folded_args(unit: nn.Module) -> list:
    """The op's arguments from a torchvision InvertedResidual in eval mode (BN folded)."""
    def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> list:
        return list(fusion.fold_conv_bn(conv.weight, conv.bias, bn))

    b2 = unit.branch2
    proj = [None] * 4 if len(unit.branch1) == 0 else fold(unit.branch1[0], unit.branch1[1]) + fold(
        unit.branch1[2], unit.branch1[3])
    return proj + fold(b2[0], b2[1]) + fold(b2[3], b2[4]) + fold(b2[5], b2[6]) + [unit.stride]


@pytest.mark.parametrize("width", list(V2_STAGE_CHANNELS))
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_matches_torchvision_inverted_residual(width: float, stride: int, layout: str) -> None:
    tv = pytest.importorskip("torchvision")
    c = V2_STAGE_CHANNELS[width][0]
    c_in = STEM_CHANNELS if stride == 2 else c
    unit = randomize(tv.models.shufflenetv2.InvertedResidual(c_in, c, stride)).eval()
    x = make_input((2, c_in, 14, 14), layout)
    with torch.no_grad():
        args = _folded_args(unit)
        out = OP(x, *args)
        ref = unit(x)
    assert_layout_kept(out, x)
    assert_unit_close(out, ref, 1e-4)


# ---- layouts, dtypes, odd shapes -------------------------------------------------------


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "slice", "slice_cl", "strided"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_dtypes_and_layouts(stride: int, layout: str, dtype: torch.dtype) -> None:
    c_in, c_out = (58, 116) if stride == 2 else (116, 116)
    x = make_input((2, c_in, 9, 11), layout, dtype)
    args = unit_args(c_in, c_out, stride, dtype)
    out = OP(x, *args)
    assert out.dtype == dtype
    assert_layout_kept(out, x)
    if dtype == torch.float64:
        assert_unit_close(out, reference_out(x, args), 1e-10)
    elif dtype == torch.float32:
        assert_unit_close(out, reference_out(x, args), 1e-4)
    else:
        # Computed in float32 and rounded once: within a rounding or two of the float32
        # result on the same (rounded) values.
        assert_unit_close(out, reference_out(x, args, torch.float32), 2e-2)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("shape", [(2, 48, 1, 1), (1, 48, 1, 9), (3, 48, 5, 1), (2, 48, 5, 3), (1, 48, 2, 2),
                                   (2, 48, 3, 40)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_odd_shapes(stride: int, shape: tuple, layout: str) -> None:
    x = make_input(shape, layout)
    args = unit_args(48, 48 if stride == 1 else 96, stride)
    out = OP(x, *args)
    assert_layout_kept(out, x)
    assert_unit_close(out, reference_out(x, args), 1e-4)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_batch_zero(stride: int, layout: str) -> None:
    x = make_input((0, 48, 7, 7), layout)
    out = OP(x, *unit_args(48, 48 if stride == 1 else 96, stride))
    assert out.shape == (0, 48 if stride == 1 else 96, 7 if stride == 1 else 4, 7 if stride == 1 else 4)
    assert_layout_kept(out, x)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("c_mid", [None, 5, 40], ids=["mid-eq", "mid-5", "mid-40"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_biases_and_branch_width(stride: int, bias: bool, c_mid: int | None, layout: str) -> None:
    """Biases are optional; the branch's inner width need not equal its output width."""
    c_in, c_out = (20, 34) if stride == 2 else (34, 34)
    x = make_input((2, c_in, 8, 7), layout)
    args = unit_args(c_in, c_out, stride, bias=bias, c_mid=c_mid)
    assert_unit_close(OP(x, *args), reference_out(x, args), 1e-4)


# (batch, input channels, H, W): one or two images split into bands; input channels that
# are not whole blocks of 16 (stride 2 then converts input rows, also for the first 1x1
# conv's own pass over the images); and an image whose first 1x1 conv results are too many
# to compute in a pass of their own (over 2**17 floats), so that its bands compute the
# rows at their edges themselves.
BAND_CASES = [(1, 32, 23, 30), (2, 32, 9, 11), (1, 20, 13, 7), (1, 128, 48, 47)]


@pytest.mark.parametrize("threads", [1, 3, 8])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", BAND_CASES, ids=lambda c: "x".join(map(str, c)))
def test_bands_and_steps(threads: int, stride: int, layout: str, case: tuple[int, int, int, int]) -> None:
    """Images split into bands of rows over several threads, each band walked in
    steps that share input rows: every split gives the reference's result."""
    n, c_in, h, w = case
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = make_input((n, c_in, h, w), layout)
        args = unit_args(c_in, c_in if stride == 1 else 2 * c_in, stride)
        out = OP(x, *args)
    finally:
        torch.set_num_threads(previous)
    assert_unit_close(out, reference_out(x, args), 1e-4)


# Half the output channels: last 16-channel blocks of 1, 7, 9, 16 and 1 channels (masked
# tail loads and stores), alone in a group of register-tile blocks (8), after whole blocks
# in the same group (40, 116) and in a second group (116); row widths of 1..10 output pixels (interior pixels of the
# depthwise conv in groups of 4, 2 and 1, the edge pixels, a single column) and GEMM row
# counts that leave tail tiles of every height below the register tile's.
TAIL_HALVES = [1, 7, 8, 9, 16, 17, 40, 116]
ROW_SHAPES = [(1, 1), (2, 3), (3, 6), (5, 9), (7, 10)]


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("half", TAIL_HALVES)
@pytest.mark.parametrize("hw", ROW_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("layout", ["channels_last", "slice_cl", "nchw"])
def test_channel_tails_and_row_widths(stride: int, half: int, hw: tuple[int, int], batch: int,
                                      layout: str) -> None:
    """Every tail of a 16-channel block and every row width the kernel splits
    differently, at batch 1 (bands of rows per thread) and 8 (an image per task)."""
    c_in = 2 * half if stride == 1 else half + 3
    x = make_input((batch, c_in, *hw), layout)
    args = unit_args(c_in, 2 * half, stride)
    out = OP(x, *args)
    assert_layout_kept(out, x)
    assert_unit_close(out, reference_out(x, args), 1e-4)


@pytest.mark.parametrize("stride", [1, 2])
def test_signed_zero_and_infinities_pass_through(stride: int) -> None:
    """The kept half (stride 1) goes to the output as is: -0.0 and infinities too."""
    x = make_input((2, 32, 5, 7), "channels_last")
    x[:, :16:3] = -0.0
    x[:, 1:16:5] = float("inf")
    x[:, 2:16:7] = float("-inf")
    args = unit_args(32, 32 if stride == 1 else 64, stride)
    out = OP(x, *args)
    ref = reference_out(x, args).to(out.dtype)
    if stride == 1:
        kept = out[:, 0::2]
        assert torch.equal(kept, x[:, :16])
        assert torch.equal(torch.signbit(kept), torch.signbit(x[:, :16]))
    else:
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-3, equal_nan=True)


def test_weight_changes_are_seen() -> None:
    """Packed weights are cached per weight tensor: in-place writes and new tensors repack."""
    x = make_input((2, 32, 6, 6), "channels_last")
    args = unit_args(32, 32, 1)
    with torch.no_grad():
        first = OP(x, *args)
        args[4].mul_(-1.0)  # pw1_weight, in place
        args[9].add_(0.5)  # pw2_bias
        assert_unit_close(OP(x, *args), reference_out(x, args), 1e-4)
        args[6] = args[6].clone() * 2  # a new dw_weight tensor
        assert_unit_close(OP(x, *args), reference_out(x, args), 1e-4)
        # A write that does not bump the version counter (as compiled code writes into a
        # reused buffer): the cache compares values, not versions.
        args[8].data.mul_(0.5)  # pw2_weight
        assert_unit_close(OP(x, *args), reference_out(x, args), 1e-4)
    assert not torch.allclose(first, OP(x, *args))


def test_pinned_weight_changes_are_seen() -> None:
    """Pinned weights (``_pin_weights``, what the nn modules do with their cached folded
    weights) are checked by identity, data pointer and version: in-place writes, a swapped
    storage and new tensors repack; and a pinned tensor that dies unpins (a new tensor at
    its address is compared by value again)."""
    x = make_input((2, 32, 6, 6), "channels_last")
    args = unit_args(32, 32, 1)
    torch.ops.shufflenet._pin_weights([a for a in args if isinstance(a, torch.Tensor)])
    with torch.no_grad():
        assert_unit_close(OP(x, *args), reference_out(x, args), 1e-4)
        args[4].mul_(-1.0)  # pw1_weight, in place: version bump
        assert_unit_close(OP(x, *args), reference_out(x, args), 1e-4)
        args[8].data = args[8] * 0.5  # pw2_weight: new storage, same tensor
        assert_unit_close(OP(x, *args), reference_out(x, args), 1e-4)
        args[6] = args[6].clone() * 2  # a new (unpinned) dw_weight
        assert_unit_close(OP(x, *args), reference_out(x, args), 1e-4)
        args[6].data.mul_(0.5)  # unpinned, no version bump: compared by value
        assert_unit_close(OP(x, *args), reference_out(x, args), 1e-4)
    torch.ops.shufflenet._pin_weights([])  # an empty list is fine


def test_inference_tensors() -> None:
    with torch.inference_mode():
        x = make_input((2, 48, 7, 7), "channels_last")
        args = unit_args(48, 96, 2)
        out = OP(x, *args)
    assert_unit_close(out, reference_out(x, args), 1e-4)


@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_other_instruction_sets(isa: str) -> None:
    """The AVX2 and baseline versions of the kernel (SHUFFLENET_CPU_ISA caps the choice)."""
    code = textwrap.dedent("""
        import torch, shufflenet_kernels
        from tests.test_v2_unit import unit_args, reference_out, assert_unit_close, make_input
        torch.set_num_threads(3)  # batch 1: bands, after a pass of the first 1x1 conv alone
        for stride, layout in [(1, "channels_last"), (2, "channels_last"), (1, "nchw"), (2, "slice_cl")]:
            c_in, c_out = (58, 116) if stride == 2 else (116, 116)
            for batch in (1, 2):
                x = make_input((batch, c_in, 9, 11), layout)
                args = unit_args(c_in, c_out, stride)
                assert_unit_close(torch.ops.shufflenet.v2_unit(x, *args), reference_out(x, args), 1e-4)
        print("ok")
    """)
    env = dict(os.environ, SHUFFLENET_CPU_ISA=isa)
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


# ---- bad input and the inference-only rule ---------------------------------------------


def _bad_cases() -> list:
    def s1(**change):
        args = unit_args(32, 32, 1)
        names = ["proj_dw_weight", "proj_dw_bias", "proj_pw_weight", "proj_pw_bias", "pw1_weight", "pw1_bias",
                 "dw_weight", "dw_bias", "pw2_weight", "pw2_bias", "stride"]
        for k, v in change.items():
            args[names.index(k)] = v
        return args

    x = torch.randn(2, 32, 6, 6)
    s2 = unit_args(32, 64, 2)
    return [
        pytest.param(x, s1(stride=3), "stride must be 1 or 2", id="stride3"),
        pytest.param(x, s1(proj_dw_weight=torch.randn(16, 1, 3, 3)), "proj_dw_weight must be None with stride 1",
                     id="proj-with-stride1"),
        pytest.param(x, s2[:2] + [None] + s2[3:], "proj_pw_weight must be given with stride 2", id="no-proj-pw"),
        pytest.param(torch.randn(2, 31, 6, 6), s1(), "must be even", id="odd-channels"),
        pytest.param(torch.randn(2, 32, 6), s1(), "input must be 4-D", id="rank3"),
        pytest.param(x, s1(pw1_weight=torch.randn(16, 32, 1, 1)), r"pw1_weight must have shape \[16, 16, 1, 1\]",
                     id="pw1-shape"),
        pytest.param(x, s1(dw_weight=torch.randn(16, 1, 5, 5)), r"dw_weight must have shape \[16, 1, 3, 3\]",
                     id="dw-5x5"),
        pytest.param(x, s1(pw2_weight=torch.randn(8, 16, 1, 1)), r"pw2_weight must have shape \[16, 16, 1, 1\]",
                     id="pw2-shape"),
        pytest.param(x, s1(dw_bias=torch.randn(15)), r"dw_bias must have shape \[16\]", id="dw-bias-shape"),
        pytest.param(x, s1(pw2_weight=torch.randn(16, 16, 1, 1, dtype=torch.float64)),
                     "pw2_weight has dtype .* but input has dtype .*; expected the same dtype", id="dtype-mismatch"),
        pytest.param(x.to(torch.int32), s1(), "input has dtype", id="int-input"),
        pytest.param(x, s2[:2] + [torch.randn(32, 16, 1, 1)] + s2[3:],
                     r"proj_pw_weight must have shape \[32, 32, 1, 1\]", id="proj-pw-shape"),
        pytest.param(torch.randn(2, 32, 0, 4), s1(), "must be at least 1x1", id="h0"),
    ]


@pytest.mark.parametrize("x,args,match", _bad_cases())
def test_bad_input(x: Tensor, args: list, match: str) -> None:
    with pytest.raises(RuntimeError, match=match):
        OP(x, *args)
    # The fake kernel says the same (torch.compile sees the error at trace time).
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode, pytest.raises(RuntimeError, match=match):
        fake = [mode.from_tensor(a) if isinstance(a, Tensor) else a for a in args]
        OP(mode.from_tensor(x), *fake)


@pytest.mark.parametrize("which", ["input", "pw1_weight", "proj_pw_bias"])
def test_requires_grad_is_refused(which: str) -> None:
    x = torch.randn(2, 24, 8, 8)
    args = unit_args(24, 48, 2)
    index = {"pw1_weight": 4, "proj_pw_bias": 3}
    if which == "input":
        x.requires_grad_(True)
    else:
        args[index[which]].requires_grad_(True)
    with pytest.raises(RuntimeError, match=f"v2_unit: {which} requires grad, but v2_unit is an inference-only op"):
        OP(x, *args)
    with torch.no_grad():  # grad mode off: runs
        out = OP(x, *args)
    assert not out.requires_grad
    assert_unit_close(out, reference_out(x.detach(), [a.detach() if isinstance(a, Tensor) else a for a in args]),
                      1e-4)


# ---- opcheck, compile ------------------------------------------------------------------

# No autograd registration test: the op has no derivative and refuses inputs that
# require grad (test_requires_grad_is_refused).
OPCHECK_UTILS = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided", "slice_cl"])
def test_opcheck(stride: int, layout: str) -> None:
    x = make_input((2, 20, 5, 6), layout)
    args = unit_args(20, 20 if stride == 1 else 34, stride)
    torch.library.opcheck(OP, (x, *args), test_utils=OPCHECK_UTILS)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_compile_fullgraph(memory_format: torch.memory_format) -> None:
    torch._dynamo.reset()
    s1 = unit_args(32, 32, 1)
    s2 = unit_args(32, 64, 2)

    def two_units(x: Tensor) -> Tensor:
        return SF.v2_unit(SF.v2_unit(x, *s1), *s2)

    x = torch.randn(2, 32, 9, 9).to(memory_format=memory_format)
    with torch.no_grad():
        out = torch.compile(two_units, fullgraph=True)(x)
        ref = reference_out(reference_out(x, s1).float(), s2)
    assert_unit_close(out, ref, 1e-4)
    assert out.is_contiguous(memory_format=memory_format)
