"""The CUDA kernels, run on the CPU by the SIMT emulation build (``_C_simt``).

Every op and backward op through ``torch.ops.shufflenet_simt`` (the CUDA host code
and kernels of csrc/cuda, compiled for the CPU) against the CPU kernels
(``torch.ops.shufflenet``) on small shapes chosen to reach every kernel path:
NCHW, channels_last, channel slices (aligned and misaligned), float32/float16/
bfloat16, stride 1 and 2, dilation, 3x3/5x5/7x7, V1 group counts, N = 0,
H = W = 1, the 16-byte vector and the scalar paths, the split weight-gradient
reductions and, through a test hook, the 64-bit index instantiations. A coverage
test checks that every ``__global__`` kernel of csrc/cuda ran, and kernels with
planted bugs check that the emulator reports each bug.

Skipped when ``_C_simt`` is not built (``SHUFFLENET_SIMT=1 python setup.py
build_ext --inplace``); with ``SHUFFLENET_EXPECT_SIMT=1`` a missing build fails.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

try:
    import shufflenet_kernels.simt as simt

    SIMT_ERROR = None
except ImportError as exc:  # not built
    simt = None
    SIMT_ERROR = (
        f"the SIMT emulation build shufflenet_kernels._C_simt is not available ({exc}); build it with "
        "`SHUFFLENET_SIMT=1 python setup.py build_ext --inplace`"
    )

EXPECT_SIMT = os.environ.get("SHUFFLENET_EXPECT_SIMT") == "1"
if simt is None and not EXPECT_SIMT:
    pytest.skip(SIMT_ERROR, allow_module_level=True)
CUDA_SOURCES = Path(__file__).resolve().parent.parent / "csrc" / "cuda"

pytestmark = pytest.mark.simt

cpu = torch.ops.shufflenet
emu = torch.ops.shufflenet_simt


@pytest.fixture(autouse=True)
def _need_simt():
    if simt is None:  # only with SHUFFLENET_EXPECT_SIMT=1: every test fails
        pytest.fail(f"SHUFFLENET_EXPECT_SIMT=1 but {SIMT_ERROR}")
    yield
    simt.set_index32_limit(2**31 - 1)
    simt.set_grid_limits(0, 65535)


# ---- inputs ------------------------------------------------------------------------

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
DTYPES = (F32, F16, BF16)


def t(shape, layout="nchw", dtype=F32, *, offset=1, extra=3) -> torch.Tensor:
    """[N, C, *spatial] in `layout`:
    nchw / cl: dense; slice / slice_cl: channels [offset, offset + C) of a wider
    tensor; shifted: dense NCHW one element past a 16-byte boundary (every vector
    path must notice); strided: spatial dims permuted in memory."""
    shape = list(shape)
    if layout == "nchw":
        return torch.randn(shape, dtype=dtype)
    if layout == "cl":
        return torch.randn(shape, dtype=dtype).contiguous(memory_format=torch.channels_last)
    if layout in ("slice", "slice_cl"):
        big = list(shape)
        big[1] += extra
        base = torch.randn(big, dtype=dtype)
        if layout == "slice_cl":
            base = base.contiguous(memory_format=torch.channels_last)
        return base.narrow(1, offset, shape[1])
    if layout == "shifted":
        n = 1
        for s in shape:
            n *= s
        return torch.randn(n + 1, dtype=dtype)[1:].view(shape)
    if layout == "strided":
        return torch.randn([shape[0], shape[1]] + shape[2:][::-1], dtype=dtype).transpose(2, -1)
    raise ValueError(layout)


def pos(shape, layout="nchw", dtype=F32) -> torch.Tensor:
    """A ReLU output: zero where the pre-activation was negative, like the forward's."""
    return t(shape, layout, dtype).clamp_min(0)


def fmt_of(x: torch.Tensor) -> torch.memory_format:
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


TOL = {F32: (1e-4, 1e-4), F16: (1e-2, 1e-2), BF16: (2e-2, 2e-2)}


def assert_same(ours, ref, *, exact: bool) -> None:
    ours = ours if isinstance(ours, (tuple, list)) else (ours,)
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        if b.numel() > 1:
            assert a.stride() == b.stride(), f"strides {a.stride()} != CPU op's {b.stride()}"
        if exact:
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
        else:
            rtol, atol = TOL[b.dtype]
            scale = max(1.0, b.float().abs().max().item()) if b.numel() else 1.0
            torch.testing.assert_close(a.float(), b.float(), rtol=rtol, atol=atol * scale, equal_nan=True)


# ---- cases: (op, argument builder, exact) ---------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    op: str
    args: Callable[[], tuple]
    exact: bool = False


CASES: list[Case] = []


def case(id: str, op: str, args: Callable[[], tuple], exact: bool = False) -> None:
    CASES.append(Case(id, op, args, exact))


# channel_shuffle / concat_shuffle / concat_shuffle_backward: the gather kernels.
for dt in DTYPES:
    n = str(dt).split(".")[1]
    case(f"cs-nchw-vec-{n}", "channel_shuffle", lambda dt=dt: (t((2, 8, 4, 4), "nchw", dt), 2), True)
    case(f"cs-nchw-scalar-{n}", "channel_shuffle", lambda dt=dt: (t((2, 6, 3, 5), "nchw", dt), 3), True)
    case(f"cs-shifted-{n}", "channel_shuffle", lambda dt=dt: (t((2, 8, 4, 4), "shifted", dt), 4), True)
    case(f"cs-cl-vec-{n}", "channel_shuffle", lambda dt=dt: (t((2, 16, 3, 3), "cl", dt), 4), True)
    case(f"cs-cl-scalar-{n}", "channel_shuffle", lambda dt=dt: (t((2, 6, 3, 3), "cl", dt), 2), True)
    case(f"cs-slice-cl-misaligned-{n}", "channel_shuffle", lambda dt=dt: (t((2, 8, 3, 3), "slice_cl", dt), 2), True)
    case(f"cs-slice-cl-aligned-{n}", "channel_shuffle",
         lambda dt=dt: (t((2, 8, 3, 3), "slice_cl", dt, offset=8, extra=8), 2), True)
    case(f"cs-slice-nchw-{n}", "channel_shuffle", lambda dt=dt: (t((2, 8, 4, 4), "slice", dt, offset=2), 2), True)
    case(f"cs-concat-nchw-{n}", "concat_shuffle",
         lambda dt=dt: (t((2, 6, 4, 4), "nchw", dt), t((2, 2, 4, 4), "nchw", dt), 2), True)
    case(f"cs-concat-cl-chunks-{n}", "concat_shuffle",
         lambda dt=dt: (*t((2, 16, 3, 3), "cl", dt).chunk(2, 1), 2), True)
    case(f"cs-concat-bwd-cl-{n}", "concat_shuffle_backward", lambda dt=dt: (t((2, 16, 3, 3), "cl", dt), 2, 8), True)
# More pixels than one tile of the channels-last kernel (64): with small grids a
# block moves several tiles.
case("cs-cl-many-pixels", "channel_shuffle", lambda: (t((2, 16, 8, 9), "cl"), 2), True)
case("cs-concat-cl-many-pixels-f16", "concat_shuffle",
     lambda: (*t((2, 24, 8, 9), "cl", F16).chunk(2, 1), 2), True)
case("cs-cl-wide-elements-f32", "channel_shuffle", lambda: (t((1, 12288, 1, 2), "cl"), 2), True)
case("cs-cl-wide-elements-f16", "channel_shuffle", lambda: (t((1, 12288, 1, 2), "cl", F16), 3), True)
case("cs-hw1", "channel_shuffle", lambda: (t((2, 8, 1, 1), "cl"), 2), True)
case("cs-n0", "channel_shuffle", lambda: (t((0, 8, 3, 3)), 2), True)
case("cs-3d", "channel_shuffle", lambda: (t((2, 6, 10)), 3), True)
case("cs-5d", "channel_shuffle", lambda: (t((1, 4, 2, 3, 2)), 2), True)
case("cs-strided", "channel_shuffle", lambda: (t((2, 6, 3, 4), "strided"), 2), True)
case("cs-concat-slices-nchw", "concat_shuffle", lambda: (*t((2, 12, 5, 5), "nchw").chunk(2, 1), 2), True)
case("cs-concat-bwd-nchw-uneven", "concat_shuffle_backward", lambda: (t((2, 16, 4, 4)), 2, 6), True)
case("cs-concat-bwd-n0", "concat_shuffle_backward", lambda: (t((0, 8, 4, 4)), 2, 4), True)


# pointwise_conv and its backward: the GEMM kernels.
def pw_args(shape, c_out, groups, shuffle, layout="nchw", dtype=F32, bias=True, relu=True):
    c_in = shape[1]
    x = t(shape, layout, dtype)
    w = torch.randn(c_out, c_in // groups, 1, 1, dtype=dtype) / max(1, c_in // groups) ** 0.5
    b = torch.randn(c_out, dtype=dtype) if bias else None
    return x, w, b, groups, shuffle, relu


def pw_bwd_args(shape, c_out, groups, shuffle, layout="nchw", dtype=F32, relu=True, mask=(True, True, True)):
    x, w, _, g, s, _ = pw_args(shape, c_out, groups, shuffle, layout, dtype)
    out_shape = (shape[0], c_out, *shape[2:])
    out_layout = "cl" if layout in ("cl", "slice_cl") else "nchw"
    grad = t(out_shape, out_layout, dtype)
    relu_out = pos(out_shape, out_layout, dtype) if relu else None
    return grad, x, w, relu_out, g, s, list(mask)


for dt in DTYPES:
    n = str(dt).split(".")[1]
    for layout in ("nchw", "cl"):
        case(f"pw-{layout}-{n}", "pointwise_conv", lambda dt=dt, lo=layout: pw_args((2, 16, 5, 5), 24, 1, 1, lo, dt))
        case(f"pw-bwd-{layout}-{n}", "pointwise_conv_backward",
             lambda dt=dt, lo=layout: pw_bwd_args((2, 16, 5, 5), 24, 1, 1, lo, dt))
for g in (2, 3, 4, 8):
    for layout in ("nchw", "cl", "slice", "slice_cl"):
        case(f"pw-v1-g{g}-{layout}", "pointwise_conv", lambda g=g, lo=layout: pw_args((2, 24, 4, 3), 48, g, g, lo))
        case(f"pw-bwd-v1-g{g}-{layout}", "pointwise_conv_backward",
             lambda g=g, lo=layout: pw_bwd_args((2, 24, 4, 3), 48, g, g, lo))
case("pw-no-bias-no-relu", "pointwise_conv", lambda: pw_args((2, 8, 3, 3), 8, 1, 2, bias=False, relu=False))
case("pw-hw1", "pointwise_conv", lambda: pw_args((3, 8, 1, 1), 16, 2, 4, "cl"))
case("pw-n0", "pointwise_conv", lambda: pw_args((0, 8, 3, 3), 16, 2, 2))
case("pw-shifted", "pointwise_conv", lambda: pw_args((2, 8, 3, 3), 8, 1, 1, "shifted"))
case("pw-strided", "pointwise_conv", lambda: pw_args((2, 8, 3, 4), 8, 2, 2, "strided"))
# K = 10240 channels per group: the B-row table needs more than 48 KB of shared
# memory (cudaFuncSetAttribute).
case("pw-wide-k", "pointwise_conv", lambda: pw_args((1, 10240, 1, 2), 2, 1, 1))
case("pw-bwd-splits-nchw", "pointwise_conv_backward", lambda: pw_bwd_args((2, 8, 32, 32), 8, 2, 2))
case("pw-bwd-splits-cl", "pointwise_conv_backward", lambda: pw_bwd_args((2, 8, 32, 32), 8, 1, 1, "cl"))
case("pw-bwd-no-relu-masks", "pointwise_conv_backward",
     lambda: pw_bwd_args((2, 8, 3, 3), 12, 4, 3, relu=False, mask=(True, False, True)))
case("pw-bwd-weight-only", "pointwise_conv_backward",
     lambda: pw_bwd_args((2, 8, 3, 3), 12, 2, 1, "cl", mask=(False, True, False)))
case("pw-bwd-n0", "pointwise_conv_backward", lambda: pw_bwd_args((0, 8, 3, 3), 8, 1, 1))


# depthwise_conv2d and its backward.
def dw_args(shape, k, stride=1, pad=None, dil=1, layout="nchw", dtype=F32, bias=True, relu=True):
    c = shape[1]
    pad = (k // 2) * dil if pad is None else pad
    x = t(shape, layout, dtype)
    w = torch.randn(c, 1, k, k, dtype=dtype) / k
    b = torch.randn(c, dtype=dtype) if bias else None
    return x, w, b, [stride, stride], [pad, pad], [dil, dil], relu


def dw_bwd_args(shape, k, stride=1, pad=None, dil=1, layout="nchw", dtype=F32, relu=True, mask=(True, True, True)):
    x, w, _, st, pd, dl, _ = dw_args(shape, k, stride, pad, dil, layout, dtype)
    ho = (shape[2] + 2 * pd[0] - dil * (k - 1) - 1) // stride + 1
    wo = (shape[3] + 2 * pd[1] - dil * (k - 1) - 1) // stride + 1
    out_shape = (shape[0], shape[1], ho, wo)
    out_layout = "cl" if layout in ("cl", "slice_cl") else "nchw"
    grad = t(out_shape, out_layout, dtype)
    relu_out = pos(out_shape, out_layout, dtype) if relu else None
    return grad, x, w, relu_out, st, pd, dl, list(mask)


for dt in DTYPES:
    n = str(dt).split(".")[1]
    for layout in ("nchw", "cl"):
        for k, s in ((3, 1), (3, 2), (5, 1)):
            case(f"dw-{layout}-{k}x{k}-s{s}-{n}", "depthwise_conv2d",
                 lambda dt=dt, lo=layout, k=k, s=s: dw_args((2, 16, 9, 9), k, s, layout=lo, dtype=dt))
        case(f"dw-bwd-{layout}-3x3-{n}", "depthwise_conv2d_backward",
             lambda dt=dt, lo=layout: dw_bwd_args((2, 16, 7, 7), 3, 1, layout=lo, dtype=dt))
for layout in ("nchw", "cl", "slice", "slice_cl"):
    for k, s, d in ((3, 1, 1), (3, 2, 1), (5, 2, 1), (7, 1, 1), (3, 1, 2)):
        case(f"dw-{layout}-{k}x{k}-s{s}-d{d}", "depthwise_conv2d",
             lambda lo=layout, k=k, s=s, d=d: dw_args((2, 8, 10, 9), k, s, dil=d, layout=lo))
        case(f"dw-bwd-{layout}-{k}x{k}-s{s}-d{d}", "depthwise_conv2d_backward",
             lambda lo=layout, k=k, s=s, d=d: dw_bwd_args((2, 8, 10, 9), k, s, dil=d, layout=lo))
case("dw-cl-scalar-c6", "depthwise_conv2d", lambda: dw_args((2, 6, 6, 6), 3, 1, layout="cl"))
case("dw-cl-scalar-c6-5x5", "depthwise_conv2d", lambda: dw_args((2, 6, 6, 6), 5, 1, layout="cl"))
case("dw-slice-cl-aligned", "depthwise_conv2d",
     lambda: (t((2, 8, 6, 6), "slice_cl", offset=8, extra=8), *dw_args((2, 8, 6, 6), 3)[1:]))
case("dw-shifted", "depthwise_conv2d", lambda: (t((2, 8, 6, 6), "shifted"), *dw_args((2, 8, 6, 6), 3)[1:]))
case("dw-strided", "depthwise_conv2d", lambda: dw_args((2, 4, 6, 5), 3, layout="strided"))
case("dw-no-bias-no-relu", "depthwise_conv2d", lambda: dw_args((2, 4, 6, 6), 3, bias=False, relu=False))
case("dw-hw1", "depthwise_conv2d", lambda: dw_args((2, 8, 1, 1), 3))
case("dw-hw1-cl", "depthwise_conv2d", lambda: dw_args((2, 8, 1, 1), 3, layout="cl"))
case("dw-n0", "depthwise_conv2d", lambda: dw_args((0, 8, 5, 5), 3))
case("dw-stride2-7x7-pad0", "depthwise_conv2d", lambda: dw_args((1, 4, 11, 12), 7, 2, pad=0))
# Dilation 50 on 7x7: the input tile exceeds 48 KB of shared memory, so the
# one-thread-per-output fallback runs.
case("dw-direct-fallback", "depthwise_conv2d", lambda: dw_args((1, 2, 8, 8), 7, 1, pad=150, dil=50))
case("dw-bwd-splits-nchw", "depthwise_conv2d_backward", lambda: dw_bwd_args((2, 4, 40, 40), 3))
case("dw-bwd-splits-nchw-5x5", "depthwise_conv2d_backward", lambda: dw_bwd_args((2, 4, 40, 40), 5, 2))
case("dw-bwd-splits-cl", "depthwise_conv2d_backward", lambda: dw_bwd_args((2, 32, 20, 20), 3, layout="cl"))
case("dw-bwd-no-relu-masks", "depthwise_conv2d_backward",
     lambda: dw_bwd_args((2, 4, 6, 6), 3, relu=False, mask=(False, True, True)))
case("dw-bwd-input-only-cl", "depthwise_conv2d_backward",
     lambda: dw_bwd_args((2, 6, 6, 6), 5, 2, layout="cl", mask=(True, False, False)))
case("dw-bwd-hw1", "depthwise_conv2d_backward", lambda: dw_bwd_args((2, 8, 1, 1), 3))
case("dw-bwd-n0", "depthwise_conv2d_backward", lambda: dw_bwd_args((0, 8, 5, 5), 3))
case("dw-bwd-f16-cl-7x7", "depthwise_conv2d_backward", lambda: dw_bwd_args((2, 8, 9, 9), 7, 2, layout="cl", dtype=F16))

# The 64-bit index instantiations run (with the test hook) on one case per kernel path.
INT64_IDS = [
    "cs-nchw-vec-float32", "cs-nchw-scalar-float16", "cs-cl-vec-float32", "cs-cl-scalar-bfloat16",
    "cs-cl-wide-elements-f32", "cs-concat-bwd-cl-float16", "pw-nchw-float32", "pw-bwd-cl-float16",
    "pw-bwd-v1-g3-slice", "pw-wide-k", "dw-nchw-3x3-s1-float32", "dw-cl-3x3-s2-float16", "dw-nchw-5x5-s1-bfloat16",
    "dw-cl-5x5-s1-float32", "dw-cl-scalar-c6", "dw-direct-fallback", "dw-bwd-nchw-3x3-float32",
    "dw-bwd-cl-3x3-bfloat16", "dw-bwd-splits-nchw-5x5", "dw-bwd-f16-cl-7x7",
]
BY_ID = {c.id: c for c in CASES}
assert len(BY_ID) == len(CASES)
assert all(i in BY_ID for i in INT64_IDS)


def run_case(c: Case) -> None:
    torch.manual_seed(hash(c.id) % 2**31)
    args = c.args()
    ref = getattr(cpu, c.op)(*args)
    ours = getattr(emu, c.op)(*args)
    assert_same(ours, ref, exact=c.exact)


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.id)
def test_matches_cpu(c: Case) -> None:
    run_case(c)


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.id)
def test_matches_cpu_on_small_grids(c: Case) -> None:
    """With at most 2 blocks along x and 3 along y every grid-stride loop and every
    loop over grid.y runs several times per block (what large tensors do on the
    H200), so the barriers that protect reused shared memory are exercised."""
    simt.set_grid_limits(2, 3)
    run_case(c)


@pytest.mark.parametrize("c", [BY_ID[i] for i in INT64_IDS], ids=lambda c: c.id)
def test_matches_cpu_int64_index(c: Case) -> None:
    simt.set_index32_limit(0)
    simt.reset_launch_counts()
    run_case(c)
    names = list(simt.launch_counts())
    assert names and all("long int" in n for n in names if "finish_kernel" not in n), names


# ---- registration ---------------------------------------------------------------------

OPS = ("channel_shuffle", "concat_shuffle", "concat_shuffle_backward", "pointwise_conv", "pointwise_conv_backward",
       "depthwise_conv2d", "depthwise_conv2d_backward")


def test_same_ops_and_schemas_as_shufflenet() -> None:
    names = {n.split("::")[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("shufflenet_simt::")}
    assert names == set(OPS)
    for op in OPS:
        ours = str(getattr(emu, op).default._schema).replace("shufflenet_simt::", "")
        ref = str(getattr(cpu, op).default._schema).replace("shufflenet::", "")
        assert ours == ref
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"shufflenet_simt::{op}", "CPU")


def test_simt_extension_is_abi3() -> None:
    assert Path(simt._C_simt.__file__).name.endswith(".abi3.so")


# ---- coverage -------------------------------------------------------------------------


def kernels_in_sources() -> set[str]:
    names = set()
    for f in CUDA_SOURCES.glob("*.cu"):
        names |= set(re.findall(r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)", f.read_text()))
    return names


def test_every_kernel_runs() -> None:
    """Every __global__ kernel of csrc/cuda runs in the cases above, and every kernel
    with an index type runs in its 32-bit and its 64-bit instantiation."""
    if not CUDA_SOURCES.is_dir():
        pytest.skip("csrc/cuda is not next to the tests")
    expected = kernels_in_sources()
    assert len(expected) >= 10, expected
    simt.reset_launch_counts()
    for c in CASES:
        run_case(c)
    counts32 = simt.launch_counts()
    simt.set_index32_limit(0)
    simt.reset_launch_counts()
    for i in INT64_IDS:
        run_case(BY_ID[i])
    counts64 = simt.launch_counts()
    ran32 = {n.split("<")[0] for n in counts32}
    ran64 = {n.split("<")[0] for n in counts64 if "long int" in n}
    assert expected - ran32 == set(), f"kernels that never ran: {sorted(expected - ran32)}"
    indexed = {k for k in expected if "finish" not in k}
    assert indexed - ran64 == set(), f"kernels whose int64 instantiation never ran: {sorted(indexed - ran64)}"
    # Paths inside the kernel families: vector and scalar, NCHW and channels_last,
    # fixed 3x3 and generic depthwise, small and large weight-gradient tiles.
    inst = set(counts32)
    for needle in (
        "gather_planes_kernel<float, int, 4>", "gather_planes_kernel<float, int, 1>",
        "gather_planes_kernel<c10::Half, int, 8>", "gather_pixels_kernel<float, int, 4>",
        "gather_pixels_kernel<c10::BFloat16, int, 1>", "gather_elements_kernel<float, int>",
        "pw_gemm_kernel<float, int, true>", "pw_gemm_kernel<float, int, false>",
        "pw_wgrad_partial_kernel<float, int, true>", "pw_mma_kernel<c10::Half, int, true, 32, 128, 1>",
        "pw_wgrad_mma_kernel<c10::Half, int, true, 16, 32>", "dw_fwd_nchw_kernel<float, int, 3, 3, 1, 1>",
        "dw_fwd_nchw_kernel<float, int, 3, 3, 2, 2>", "dw_fwd_nchw_kernel<float, int, 0, 0, 0, 0>",
        "dw_fwd_nhwc_kernel<float, int, 4, 3, 3, 1, 1, 4>", "dw_fwd_nhwc_kernel<c10::Half, int, 8, 3, 3, 2, 2, 2>",
        "dw_fwd_nhwc_kernel<float, int, 1, 0, 0, 0, 0, 1>", "dw_fwd_nhwc_kernel<float, int, 4, 0, 0, 0, 0, 1>",
        "dw_bwd_input_kernel<float, int, true>", "dw_bwd_input_kernel<float, int, false>",
        "dw_wgrad_partial_kernel<float, int, true, 3, 3>", "dw_wgrad_partial_kernel<float, int, true, 7, 7>",
        "dw_wgrad_partial_kernel<float, int, false, 3, 3>", "dw_wgrad_partial_kernel<float, int, false, 7, 7>",
    ):
        assert needle in inst, f"{needle} never ran; ran: {sorted(inst)}"


# ---- known bugs, pinned ---------------------------------------------------------------


def test_int32_selection_leaves_room_for_one_grid_stride() -> None:
    """A grid-stride loop adds gridDim.x * blockDim.x to its int32 index before
    testing it: a tensor within one grid stride of the limit must take the 64-bit
    instantiation or the index wraps negative (e.g. depthwise_conv2d_backward with
    input [1, 2047, 1024, 1024] on the GPU). The hook lowers the limit so that
    small tensors sit on either side of it."""
    limit = simt.max_grid_stride() + 1000
    simt.set_index32_limit(limit)

    def index_types(shape):
        simt.reset_launch_counts()
        run_case(Case("sel", "depthwise_conv2d_backward", lambda: dw_bwd_args(shape, 3)))
        run_case(Case("sel", "depthwise_conv2d", lambda: dw_args(shape, 3, layout="cl")))
        run_case(Case("sel", "depthwise_conv2d", lambda: dw_args(shape, 7, pad=150, dil=50)))
        run_case(Case("sel", "channel_shuffle", lambda: (t(shape, "strided"), 2), exact=True))
        names = [n for n in simt.launch_counts() if "finish" not in n]
        for kernel in ("dw_bwd_input", "dw_fwd_nhwc", "dw_fwd_direct", "gather_planes"):
            assert any(n.startswith(kernel) for n in names), (kernel, names)
        return {("long" if "long int" in n else "int") for n in names}

    assert index_types((1, 2, 15, 30)) == {"int"}  # 900 elements: 900 + stride <= limit
    assert index_types((1, 2, 17, 33)) == {"long"}  # 1122 elements: one stride would pass the limit


def test_pointwise_backward_without_input_channels() -> None:
    """C_in = 0: empty grad_input and grad_weight, grad_bias = sum of grad_output; no
    launch of a grid with zero blocks."""
    for layout in ("nchw", "cl"):
        args = pw_bwd_args((2, 0, 3, 3), 4, 1, 1, layout)
        assert_same(emu.pointwise_conv_backward(*args), cpu.pointwise_conv_backward(*args), exact=False)
        fwd = pw_args((2, 0, 3, 3), 4, 1, 1, layout)
        assert_same(emu.pointwise_conv(*fwd), cpu.pointwise_conv(*fwd), exact=False)


def test_relu_mask_passes_nan_like_cpu() -> None:
    """Where the forward output is NaN the gradient passes (only <= 0 masks it), as
    in the CPU kernels and threshold_backward."""
    g, x, w, r, gr, sh, mask = pw_bwd_args((1, 4, 3, 3), 4, 1, 1)
    r = r.clone()
    r[0, 1, 1, 1] = float("nan")
    ours = emu.pointwise_conv_backward(g, x, w, r, gr, sh, mask)
    ref = cpu.pointwise_conv_backward(g, x, w, r, gr, sh, mask)
    assert_same(ours, ref, exact=False)
    assert ours[2][1] != 0  # grad_bias sums the passed gradient
    g, x, w, r, st, pd, dl, mask = dw_bwd_args((1, 4, 5, 5), 3)
    r = torch.full_like(r, float("nan"))
    ours = emu.depthwise_conv2d_backward(g, x, w, r, st, pd, dl, mask)
    ref = cpu.depthwise_conv2d_backward(g, x, w, r, st, pd, dl, mask)
    assert_same(ours, ref, exact=False)
    torch.testing.assert_close(ours[2], g.sum((0, 2, 3)), rtol=1e-5, atol=1e-5)


# ---- the emulator itself: planted bugs and a correct control --------------------------


def planted(name: str) -> torch.Tensor:
    return torch.ops.shufflenet_simt_testing.planted(name)


def test_control_kernel_runs_clean() -> None:
    """Shared memory with a barrier, shuffles and a ballot, checked value by value."""
    res = planted("control")
    inp = torch.arange(2 * 256 + 8, dtype=torch.float32) - 100
    v = inp[(torch.arange(256) + 1) % 256]
    warps = v.view(8, 32)
    s = warps.sum(1, keepdim=True).expand(8, 32).reshape(256)
    first = warps[:, :1].expand(8, 32).reshape(256)
    down = torch.cat([warps[:, 1:], warps[:, 31:]], 1).reshape(256)
    torch.testing.assert_close(res[:256], v + s + first + down, rtol=0, atol=0)
    up = torch.cat([warps[:, :2], warps[:, :30]], 1)
    up = up + 1000 * (warps > 100).any(1, keepdim=True) + 2000 * (warps > -101).all(1, keepdim=True)
    torch.testing.assert_close(res[256:512], up.reshape(256).float(), rtol=0, atol=0)
    ballots = [sum(1 << i for i in range(32) if warps[k, i] > 0) for k in range(8)]
    halves = res[512:].to(torch.int64).view(2, 8)
    got = (halves[0] | (halves[1] << 16)).tolist()
    assert got == ballots


ACCESS_CHECKED = {
    "shared_overflow": r"out-of-bounds shared-memory write of 4 bytes at 0 bytes past the end of `tile`",
    "missing_sync": r"shared-memory race: thread \(0, 0, 0\) read `tile` \+ 4 .* thread \(1, 0, 0\) writes it in the "
                    r"same barrier interval",
}
ALWAYS_CHECKED = {
    "misaligned": r"misaligned address: 16-byte vector load",
    "too_many_threads": r"invalid configuration argument .*2048 threads per block|invalid configuration argument .*"
                        r"block dimensions are at most",
    "grid_y_zero": r"invalid configuration argument .*every grid dimension must be >= 1",
    "too_much_shared": r"invalid argument .*65536 bytes of dynamic shared memory, the kernel's limit is 49152",
    "divergent_sync": r"128 of 256 threads wait at __syncthreads\(\) while 128 exited",
    "partial_warp": r"warp 0: lanes \{0, 1, .*15\} wait in __shfl_xor_sync\(mask 0xffffffff\) for lanes \{16, .*31\}",
}


@pytest.mark.parametrize("name", sorted(ALWAYS_CHECKED))
def test_planted_bug_is_reported(name: str) -> None:
    with pytest.raises(RuntimeError, match=ALWAYS_CHECKED[name]) as info:
        planted(name)
    if name not in ("too_many_threads", "grid_y_zero", "too_much_shared"):
        assert f"{name}_kernel" in str(info.value) or "divergent_sync_kernel" in str(info.value)


@pytest.mark.parametrize("name", sorted(ACCESS_CHECKED))
def test_planted_shared_memory_bug_is_reported(name: str) -> None:
    if not simt.access_checks():
        pytest.skip("_C_simt was built without the access checks (SHUFFLENET_SIMT_CHECKS=0 or the ASan build)")
    with pytest.raises(RuntimeError, match=ACCESS_CHECKED[name]) as info:
        planted(name)
    assert f"{name}_kernel, block (0, 0, 0)" in str(info.value)


def test_access_checks_are_built_in_unless_asan() -> None:
    assert simt.access_checks() != simt.asan_build()


def test_global_overflow_needs_asan() -> None:
    """One past the end of a global buffer: only the AddressSanitizer build
    (SHUFFLENET_SIMT_ASAN=1, run with the ASan runtime preloaded) sees it, and it
    aborts the process, so .ci/run checks it in a subprocess. Here: the kernel
    refuses to run without ASan."""
    if simt.asan_build():
        pytest.skip("the AddressSanitizer run checks this kernel (see .ci/run)")
    with pytest.raises(RuntimeError, match="only in the AddressSanitizer build"):
        planted("global_overflow")
