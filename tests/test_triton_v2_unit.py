"""Tests of the fused ShuffleNet V2 unit in Triton (``torch.ops.shufflenet_triton.v2_unit``)
against a composition of plain PyTorch convolutions.

On a GPU the kernel is compiled; without one it runs through the Triton interpreter
on CPU tensors (``TRITON_INTERPRET=1``, set by conftest.py), so shapes stay small.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import assert_layout_kept, make_input, weight_like

pytest.importorskip("triton")

pytestmark = pytest.mark.triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET", "0") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not 1: Triton kernels cannot run here", allow_module_level=True)

import shufflenet_kernels.triton_kernels as tk  # noqa: E402

assert tk.HAS_TRITON
ops = torch.ops.shufflenet_triton
assert hasattr(ops, "v2_unit")


# ---- reference and inputs ---------------------------------------------------------------


def v2_unit_torch_reference(x: torch.Tensor, params: tuple, stride: int) -> torch.Tensor:
    """The unit composed from ``F.conv2d`` (computed in float32, float64 for float64 input)."""
    dt = torch.float64 if x.dtype == torch.float64 else torch.float32
    pdw, pbd, ppw, ppb, w1, b1, wd, bd, w2, b2 = (None if t is None else t.to(dt) for t in params)
    x = x.to(dt)

    def pw(t, w, b):
        return F.relu(F.conv2d(t, w, b))

    def dw(t, w, b, s):
        return F.conv2d(t, w, b, stride=s, padding=1, groups=t.shape[1])

    if stride == 1:
        half = x.shape[1] // 2
        first, branch_in = x[:, :half], x[:, half:]
    else:
        first, branch_in = pw(dw(x, pdw, pbd, 2), ppw, ppb), x
    y = pw(dw(pw(branch_in, w1, b1), wd, bd, stride), w2, b2)
    return torch.stack([first, y], dim=2).flatten(1, 2)  # channel 2i = first[i], 2i + 1 = y[i]


def make_params(stride: int, c_in: int, b: int, dtype: torch.dtype = torch.float32, bias: bool = True) -> tuple:
    """(proj_dw, proj_dw_bias, proj_pw, proj_pw_bias, pw1, pw1_bias, dw, dw_bias, pw2, pw2_bias)."""

    def w(*shape: int) -> torch.Tensor:
        return weight_like(shape, dtype, DEVICE, shape[1] * shape[2] * shape[3])

    def bb(c: int) -> torch.Tensor | None:
        return torch.randn(c, dtype=dtype, device=DEVICE) / 4 if bias else None

    k1 = b if stride == 1 else c_in
    proj = (w(c_in, 1, 3, 3), bb(c_in), w(b, c_in, 1, 1), bb(b)) if stride == 2 else (None,) * 4
    return (*proj, w(b, k1, 1, 1), bb(b), w(b, 1, 3, 3), bb(b), w(b, b, 1, 1), bb(b))


def input_channels(stride: int, c: int, b: int) -> int:
    return 2 * b if stride == 1 else c


def check(x: torch.Tensor, params: tuple, stride: int, rtol: float = 1e-5, atol: float = 1e-5) -> torch.Tensor:
    out = ops.v2_unit(x, *params, stride)
    ref = v2_unit_torch_reference(x, params, stride)
    assert out.dtype == x.dtype and out.shape == ref.shape
    torch.testing.assert_close(out, ref.to(out.dtype), rtol=rtol, atol=atol)
    assert_layout_kept(out, x)
    if stride == 1:  # the identity half is a copy: exact
        assert torch.equal(out[:, 0::2], x[:, : x.shape[1] // 2])
    return out


# ---- results ----------------------------------------------------------------------------

# (stride, input channels at stride 2, B, layout): V2 widths x0.5 / x1.0 / x1.5 / x2.0.
UNIT_CASES = [
    (1, 0, 24, "nchw"),
    (1, 0, 58, "channels_last"),
    (1, 0, 116, "slice"),
    (1, 0, 122, "slice_cl"),
    (1, 0, 24, "strided"),
    (2, 24, 58, "nchw"),  # x1.0 stage 2's first unit: 24 -> 2 * 58
    (2, 116, 116, "channels_last"),
    (2, 176, 176, "slice"),
    (2, 24, 24, "slice_cl"),
    (2, 48, 24, "strided"),
]


@pytest.mark.parametrize("stride,c,b,layout", UNIT_CASES)
def test_v2_unit_matches_reference(stride: int, c: int, b: int, layout: str) -> None:
    x = make_input((2, input_channels(stride, c, b), 5, 7), layout, device=DEVICE)
    check(x, make_params(stride, x.shape[1], b), stride)


# Several tiles per image (tile halos overlap), 1-pixel images and thin ones.
@pytest.mark.parametrize("stride,h,w", [(1, 1, 1), (2, 1, 1), (1, 18, 3), (2, 35, 2), (2, 2, 9), (1, 1, 17)])
def test_v2_unit_odd_spatial_sizes(stride: int, h: int, w: int) -> None:
    b = 16
    x = torch.randn(2, input_channels(stride, 24, b), h, w, device=DEVICE)
    check(x, make_params(stride, x.shape[1], b), stride)


@pytest.mark.skipif(DEVICE != "cpu", reason="the GPU runs this blocking in every test")
@pytest.mark.parametrize("stride,c,b,h,w", [(1, 0, 58, 10, 9), (2, 40, 40, 17, 15)])
def test_v2_unit_gpu_blocking_interpreted(
    stride: int, c: int, b: int, h: int, w: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU's tiles and blocks (8x8 tiles, halo and channels in several chunks, K
    loops of several steps), which the interpreter's single-chunk blocking skips."""
    monkeypatch.setattr(tk.v2_unit, "INTERPRET", False)
    meta = tk.v2_unit._blocks(h, w, stride, b, input_channels(stride, c, b))
    assert meta["HALO_CHUNKS"] > 1 and meta["BLOCK_C"] < b and meta["TILE_H"] < h
    x = make_input((2, input_channels(stride, c, b), h, w), "slice_cl", device=DEVICE)
    check(x, make_params(stride, x.shape[1], b), stride)


@pytest.mark.parametrize("stride", [1, 2])
def test_v2_unit_without_biases(stride: int) -> None:
    x = torch.randn(1, input_channels(stride, 20, 18), 4, 6, device=DEVICE)
    check(x, make_params(stride, x.shape[1], 18, bias=False), stride)


# Half types round the intermediates to their precision, as the per-op path does.
HALF = [(torch.float16, 2e-2, 2e-2), (torch.bfloat16, 5e-2, 5e-2)]


def test_v2_unit_strided_weights_and_biases() -> None:
    x = torch.randn(2, 24, 5, 6, device=DEVICE)
    params = make_params(2, 24, 16)
    # The same values with a stride of 2 in their last dim (not contiguous).
    strided = tuple(torch.stack([t, t], dim=-1)[..., 0] for t in params)
    assert not any(t.is_contiguous() for t in strided)
    check(x, strided, 2)


@pytest.mark.parametrize(
    "stride,dtype,rtol,atol",
    [(s, *d) for s in (1, 2) for d in HALF] + [(2, torch.float64, 1e-10, 1e-10)],
)
def test_v2_unit_dtypes(stride: int, dtype: torch.dtype, rtol: float, atol: float) -> None:
    if dtype == torch.float64 and DEVICE != "cpu":
        pytest.skip("float64 is a CPU dtype of these ops")
    x = torch.randn(2, input_channels(stride, 48, 24), 5, 7, device=DEVICE, dtype=dtype)
    check(x, make_params(stride, x.shape[1], 24, dtype), stride, rtol, atol)


@pytest.mark.parametrize("stride", [1, 2])
def test_v2_unit_empty_batch(stride: int) -> None:
    x = torch.randn(0, input_channels(stride, 24, 16), 5, 7, device=DEVICE).to(memory_format=torch.channels_last)
    out = ops.v2_unit(x, *make_params(stride, x.shape[1], 16), stride)
    assert out.shape == (0, 32, 5 if stride == 1 else 3, 7 if stride == 1 else 4)
    assert_layout_kept(out, x)


# ---- inference only, bad input, opcheck ---------------------------------------------------


@pytest.mark.parametrize("which", ["input", "pw1_weight"])
def test_v2_unit_refuses_grad(which: str) -> None:
    x = torch.randn(1, 32, 3, 3, device=DEVICE)
    params = list(make_params(1, 32, 16))
    if which == "input":
        x.requires_grad_()
    else:
        params[4].requires_grad_()
    with pytest.raises(RuntimeError, match="inference only"):
        ops.v2_unit(x, *params, 1)
    with torch.no_grad():
        out = ops.v2_unit(x, *params, 1)
    ref = v2_unit_torch_reference(x.detach(), tuple(t if t is None else t.detach() for t in params), 1)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_v2_unit_bad_input() -> None:
    x = torch.randn(2, 32, 4, 4, device=DEVICE)
    p1 = make_params(1, 32, 16)
    p2 = make_params(2, 32, 16)
    bad = [
        ("input must be 4-D", (x[0], *p1, 1)),
        ("stride must be 1 or 2", (x, *p1, 3)),
        ("pw1_weight must have shape", (x[:, :30], *p1, 1)),
        ("proj_dw_weight must be None with stride 1", (x, *p2[:4], *p1[4:], 1)),
        ("proj_dw_weight must be given with stride 2", (x, *p1, 2)),
        ("pw1_weight must have shape", (x, *p2[:4], *p1[4:], 2)),
        ("dw_weight must have shape", (x, *p1[:6], p1[6][:, :, :2], *p1[7:], 1)),
        ("pw2_bias must have shape", (x, *p1[:9], p1[9][:8], 1)),
        ("proj_dw_weight must have shape", (x, p2[0][:5], *p2[1:], 2)),
        ("dtype", (x.int(), *p1, 1)),
        ("pw2_weight has dtype", (x, *p1[:8], p1[8].double(), p1[9], 1)),
        # a narrower inner width is a valid unit, but not one this kernel runs
        ("pw1_weight's outputs \\(8\\) to equal", (x, *p1[:4], p1[4][:8], p1[5][:8], p1[6][:8], p1[7][:8],
                                                   p1[8][:, :8], p1[9], 1)),
    ]
    for message, args in bad:
        with pytest.raises(RuntimeError, match=message):
            ops.v2_unit(*args)


@pytest.mark.parametrize("stride,layout", [(1, "nchw"), (2, "channels_last"), (1, "strided"), (2, "slice")])
def test_v2_unit_opcheck(stride: int, layout: str) -> None:
    x = make_input((2, 32, 4, 5), layout, device=DEVICE)
    torch.library.opcheck(ops.v2_unit.default, (x, *make_params(stride, 32, 16), stride))


def test_v2_unit_compile_fullgraph() -> None:
    torch._dynamo.reset()
    down = make_params(2, 24, 16)
    keep = make_params(1, 32, 16)

    def two_units(x: torch.Tensor) -> torch.Tensor:
        return ops.v2_unit(ops.v2_unit(x, *down, 2), *keep, 1)

    x = torch.randn(2, 24, 6, 5, device=DEVICE).contiguous(memory_format=torch.channels_last)
    # On a GPU Inductor compiles the Triton kernel into its graph; under the
    # interpreter the op is an opaque custom op run by an eager backend.
    backend = "inductor" if DEVICE == "cuda" else "aot_eager"
    with torch.no_grad():
        out = torch.compile(two_units, fullgraph=True, backend=backend)(x)
        torch.testing.assert_close(out, two_units(x), rtol=1e-5, atol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last)
