"""CUDA-only tests the device-parametrised suite does not cover.

* every op really has a CUDA kernel (fails, not skips, when the build left them out);
* tensors over 2^31 elements (64-bit indexing) for the channel-gather kernels;
* the kernels run on the current stream: ops captured on a side stream into a
  CUDA graph give the right results on replay;
* ShuffleNet V1/V2 layer shapes at large batch, fp32/fp16/bf16, NCHW and
  channels_last, forward and backward against the plain-PyTorch reference;
* the weight/bias gradients are deterministic (bitwise equal across runs).

All tests are marked ``gpu`` and skipped without CUDA.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import shufflenet_kernels  # noqa: F401  (loads the ops, fake kernels and autograd)
from shufflenet_kernels import reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

ops = torch.ops.shufflenet
OP_NAMES = (
    "channel_shuffle",
    "concat_shuffle",
    "concat_shuffle_backward",
    "pointwise_conv",
    "pointwise_conv_backward",
    "depthwise_conv2d",
    "depthwise_conv2d_backward",
)
TOL = {
    torch.float32: {"atol": 1e-4, "rtol": 1e-4},
    torch.float16: {"atol": 1e-2, "rtol": 1e-2},
    torch.bfloat16: {"atol": 1e-2, "rtol": 1e-2},
}
DTYPES = tuple(TOL)


def _gib_free() -> float:
    free, _ = torch.cuda.mem_get_info()
    return free / 2**30


def _close(actual: Tensor, expected: Tensor, dtype: torch.dtype) -> None:
    """Compares in float64 with the dtype's tolerance, scaled by the reference's magnitude.

    References are computed in float64 (cuDNN's float32 convolutions may use TF32).
    """
    tol = TOL[dtype]
    ref = expected.double()
    mag = max(ref.abs().max().item(), 1.0)
    torch.testing.assert_close(actual.double(), ref, atol=tol["atol"] * mag, rtol=tol["rtol"])


def test_every_op_has_a_cuda_kernel() -> None:
    for name in OP_NAMES:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"shufflenet::{name}", "CUDA"), name


# ---- > 2^31 elements ---------------------------------------------------------


def test_channel_shuffle_over_2_31_elements() -> None:
    n, c, length, groups = 2, 64, 2**24 + 8, 4  # 2^31 + 1024 elements, fp16
    if _gib_free() < 2 * n * c * length * 2 / 2**30 + 1:
        pytest.skip("not enough GPU memory for two 4 GiB tensors")
    x = torch.randn(n, c, length, device="cuda", dtype=torch.float16)
    assert x.numel() > 2**31
    out = ops.channel_shuffle(x, groups)
    torch.cuda.synchronize()
    per_group = c // groups
    positions = torch.tensor([0, 1, length // 2, length - 2, length - 1], device="cuda")
    for o in (0, 1, groups, c // 2 + 3, c - 1):
        src = (o % groups) * per_group + o // groups
        # Last sample: its offsets lie past 2^31.
        assert torch.equal(out[n - 1, o, positions], x[n - 1, src, positions]), o
        assert torch.equal(out[0, o, positions], x[0, src, positions]), o
    del out, x


def test_concat_shuffle_over_2_31_elements_channels_last() -> None:
    n, ca, h, w = 2, 64, 2**12, 2**12 + 8  # output 2 * 128 * h * w > 2^31 elements, fp16
    if _gib_free() < 2 * 2 * n * ca * h * w * 2 / 2**30 + 1:
        pytest.skip("not enough GPU memory")
    cl = torch.channels_last
    a = torch.randn(n, ca, h, w, device="cuda", dtype=torch.float16).contiguous(memory_format=cl)
    b = torch.randn(n, ca, h, w, device="cuda", dtype=torch.float16).contiguous(memory_format=cl)
    out = ops.concat_shuffle(a, b, 2)
    torch.cuda.synchronize()
    assert out.numel() > 2**31
    assert out.is_contiguous(memory_format=torch.channels_last)
    hs = torch.tensor([0, h // 3, h - 1], device="cuda")
    ws = torch.tensor([0, w // 2, w - 1], device="cuda")
    for i in (0, 1, ca // 2, ca - 1):
        assert torch.equal(out[n - 1, 2 * i][hs][:, ws], a[n - 1, i][hs][:, ws]), i
        assert torch.equal(out[n - 1, 2 * i + 1][hs][:, ws], b[n - 1, i][hs][:, ws]), i
    del out, a, b


# ---- current stream / CUDA graphs --------------------------------------------


def test_ops_on_side_stream_under_graph_capture() -> None:
    torch.manual_seed(0)
    dev = "cuda"
    x = torch.randn(4, 48, 14, 14, device=dev)
    y = torch.randn(4, 48, 14, 14, device=dev).contiguous(memory_format=torch.channels_last)
    w_pw = torch.randn(96, 16, 1, 1, device=dev) * 0.2
    b_pw = torch.randn(96, device=dev)
    w_dw = torch.randn(48, 1, 3, 3, device=dev) * 0.3
    b_dw = torch.randn(48, device=dev)
    grad_pw = torch.randn(4, 96, 14, 14, device=dev)
    grad_dw = torch.randn(4, 48, 7, 7, device=dev).contiguous(memory_format=torch.channels_last)

    def run() -> list[Tensor]:
        pw = ops.pointwise_conv(x, w_pw, b_pw, 3, 3, True)
        dw = ops.depthwise_conv2d(y, w_dw, b_dw, [2, 2], [1, 1], [1, 1], True)
        outs = [
            ops.channel_shuffle(x, 4),
            ops.concat_shuffle(x, y, 2),
            *ops.concat_shuffle_backward(x, 2, 16),
            pw,
            *ops.pointwise_conv_backward(grad_pw, x, w_pw, pw, 3, 3, [True, True, True]),
            dw,
            *ops.depthwise_conv2d_backward(grad_dw, y, w_dw, dw, [2, 2], [1, 1], [1, 1], [True, True, True]),
        ]
        return outs

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):  # warm-up outside capture (allocator, lazy init)
            run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        captured = run()

    # New input values, copied in place: the replay must see them.
    for t in (x, y, w_pw, b_pw, w_dw, b_dw, grad_pw, grad_dw):
        t.copy_(torch.randn_like(t))
    graph.replay()
    torch.cuda.synchronize()
    expected = run()
    assert len(captured) == len(expected)
    for i in range(len(expected)):
        assert torch.equal(captured[i], expected[i]), f"output {i} differs between graph replay and eager"

    # And the eager results are right.
    torch.testing.assert_close(expected[0], reference.channel_shuffle(x, 4))
    torch.testing.assert_close(expected[1], reference.concat_shuffle(x, y, 2))
    pw_ref = reference.pointwise_conv(x.double(), w_pw.double(), b_pw.double(), 3, 3, True)
    _close(expected[4], pw_ref, torch.float32)
    dw_ref = reference.depthwise_conv2d(
        y.double(), w_dw.double(), b_dw.double(), (2, 2), (1, 1), (1, 1), True
    )
    _close(expected[8], dw_ref, torch.float32)


# ---- V1/V2 shapes at large batch vs the reference ------------------------------

# (C_in, C_out, groups, shuffle_groups, H): ShuffleNet V1 g=3/g=8 and V2 1.0x/2.0x 1x1 layers.
POINTWISE_SHAPES = [
    (240, 60, 3, 3, 28),  # V1 g=3 stage 2 bottleneck reduce (fused shuffle)
    (60, 240, 3, 1, 28),  # V1 g=3 expand
    (384, 96, 8, 8, 28),  # V1 g=8
    (116, 116, 1, 1, 28),  # V2 1.0x stage 2
    (488, 488, 1, 1, 7),  # V2 2.0x stage 4
    (96, 96, 4, 2, 14),  # shuffle_groups != groups
]
# (C, H, k, stride): V1/V2 depthwise layers plus 5x5 / 7x7.
DEPTHWISE_SHAPES = [
    (116, 28, 3, 1),
    (232, 28, 3, 2),
    (464, 7, 3, 1),
    (240, 56, 3, 2),
    (64, 14, 5, 1),
    (48, 15, 7, 2),
]
LAYOUTS = (torch.contiguous_format, torch.channels_last)
BATCH = 64


def _make(shape: tuple[int, ...], dtype: torch.dtype, fmt: torch.memory_format, scale: float = 1.0) -> Tensor:
    return (torch.randn(shape, device="cuda") * scale).to(dtype).contiguous(memory_format=fmt)


def _check_relu_op(out: Tensor, pre_activation: Tensor, grad: Tensor, dtype: torch.dtype) -> None:
    """Checks ``out = relu(pre_activation)`` and back-propagates ``grad`` through the
    float64 reference's ``pre_activation`` with the op's own ReLU mask (``out > 0``).

    Over millions of outputs a few pre-activations lie within the float32 sum's
    rounding of zero, or round to zero in float16, so their sign can differ from the
    float64 reference's; ReLU's gradient there follows the op's output (as PyTorch's
    own ReLU backward does), and one such element moves an input gradient by a whole
    ``grad * weight`` term."""
    _close(out, torch.relu(pre_activation), dtype)
    out.backward(grad)
    pre_activation.backward(grad.double() * (out > 0))


@pytest.mark.parametrize("fmt", LAYOUTS, ids=["nchw", "cl"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", POINTWISE_SHAPES, ids=str)
def test_pointwise_conv_large_batch(shape: tuple, dtype: torch.dtype, fmt: torch.memory_format) -> None:
    torch.manual_seed(1)
    c_in, c_out, groups, shuffle_groups, h = shape
    x = _make((BATCH, c_in, h, h), dtype, fmt).requires_grad_()
    w_scale = (groups / c_in) ** 0.5
    w = _make((c_out, c_in // groups, 1, 1), dtype, torch.contiguous_format, w_scale).requires_grad_()
    b = _make((c_out,), dtype, torch.contiguous_format).requires_grad_()
    out = ops.pointwise_conv(x, w, b, groups, shuffle_groups, True)
    assert out.is_contiguous(memory_format=fmt)
    xr, wr, br = (t.detach().double().requires_grad_() for t in (x, w, b))
    pre = reference.pointwise_conv(xr, wr, br, groups, shuffle_groups, False)
    _check_relu_op(out, pre, _make(out.shape, dtype, fmt), dtype)
    assert x.grad.is_contiguous(memory_format=fmt)
    _close(x.grad, xr.grad, dtype)
    # Weight/bias gradients sum BATCH*H*W products: _close scales atol by their magnitude.
    _close(w.grad, wr.grad, dtype)
    _close(b.grad, br.grad, dtype)


@pytest.mark.parametrize("fmt", LAYOUTS, ids=["nchw", "cl"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", DEPTHWISE_SHAPES, ids=str)
def test_depthwise_conv2d_large_batch(shape: tuple, dtype: torch.dtype, fmt: torch.memory_format) -> None:
    torch.manual_seed(2)
    c, h, k, stride = shape
    pad = k // 2
    x = _make((BATCH, c, h, h), dtype, fmt).requires_grad_()
    w = _make((c, 1, k, k), dtype, torch.contiguous_format, 1.0 / k).requires_grad_()
    b = _make((c,), dtype, torch.contiguous_format).requires_grad_()
    args = ([stride, stride], [pad, pad], [1, 1])
    out = ops.depthwise_conv2d(x, w, b, *args, True)
    assert out.is_contiguous(memory_format=fmt)
    xr, wr, br = (t.detach().double().requires_grad_() for t in (x, w, b))
    pre = reference.depthwise_conv2d(xr, wr, br, *args, False)
    _check_relu_op(out, pre, _make(out.shape, dtype, fmt), dtype)
    assert x.grad.is_contiguous(memory_format=fmt)
    _close(x.grad, xr.grad, dtype)
    _close(w.grad, wr.grad, dtype)
    _close(b.grad, br.grad, dtype)


@pytest.mark.parametrize("fmt", LAYOUTS, ids=["nchw", "cl"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_depthwise_conv2d_dilated_generic_path(dtype: torch.dtype, fmt: torch.memory_format) -> None:
    torch.manual_seed(3)
    x = _make((8, 40, 23, 19), dtype, fmt)
    w = _make((40, 1, 3, 5), dtype, torch.contiguous_format, 0.3)
    args = ([2, 1], [2, 3], [2, 3])
    out = ops.depthwise_conv2d(x, w, None, *args, False)
    ref = reference.depthwise_conv2d(x.double(), w.double(), None, *args, False)
    _close(out, ref, dtype)


@pytest.mark.parametrize("fmt", LAYOUTS, ids=["nchw", "cl"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels", [(116, 116), (24, 40), (3, 5)], ids=str)
def test_concat_and_channel_shuffle_large_batch(channels: tuple, dtype: torch.dtype,
                                                fmt: torch.memory_format) -> None:
    torch.manual_seed(4)
    ca, cb = channels
    parent = _make((BATCH, 2 * ca, 28, 28), dtype, fmt)
    a = parent.chunk(2, 1)[1]  # a channel slice, read in place
    b = _make((BATCH, cb, 28, 28), dtype, fmt)
    groups = 2  # every case has an even channel total
    out = ops.concat_shuffle(a, b, groups)
    assert out.is_contiguous(memory_format=fmt)
    assert torch.equal(out, reference.concat_shuffle(a, b, groups))
    ga, gb = ops.concat_shuffle_backward(out, groups, ca)
    assert torch.equal(ga, a) and torch.equal(gb, b)
    shuffle_groups = 2 if ca % 2 == 0 else 3
    assert torch.equal(ops.channel_shuffle(a, shuffle_groups), reference.channel_shuffle(a, shuffle_groups))


# ---- determinism ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", LAYOUTS, ids=["nchw", "cl"])
def test_weight_gradients_are_deterministic(fmt: torch.memory_format) -> None:
    torch.manual_seed(5)
    x = _make((BATCH, 240, 28, 28), torch.float32, fmt)
    w_pw = _make((240, 80, 1, 1), torch.float32, torch.contiguous_format, 0.1)
    g_pw = _make((BATCH, 240, 28, 28), torch.float32, fmt)
    w_dw = _make((240, 1, 3, 3), torch.float32, torch.contiguous_format, 0.3)
    g_dw = _make((BATCH, 240, 14, 14), torch.float32, fmt)
    mask = [False, True, True]
    first_pw = ops.pointwise_conv_backward(g_pw, x, w_pw, None, 3, 3, mask)
    first_dw = ops.depthwise_conv2d_backward(g_dw, x, w_dw, None, [2, 2], [1, 1], [1, 1], mask)
    for _ in range(3):
        again_pw = ops.pointwise_conv_backward(g_pw, x, w_pw, None, 3, 3, mask)
        again_dw = ops.depthwise_conv2d_backward(g_dw, x, w_dw, None, [2, 2], [1, 1], [1, 1], mask)
        first = first_pw[1:] + first_dw[1:]
        again = again_pw[1:] + again_dw[1:]
        for i in range(len(first)):
            assert torch.equal(first[i], again[i]), i
