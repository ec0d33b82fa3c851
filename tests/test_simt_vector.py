"""Vector widths of the CUDA kernels on ShuffleNet V2 channel counts (SIMT emulation).

ShuffleNet V2's channel counts (24, 58, 116, 232, 464 for x1.0) are mostly not
multiples of 8, so 16-byte vectors do not fit fp16/bf16 channels_last pixel rows;
the channels_last depthwise conv and the gather kernels (channel_shuffle,
concat_shuffle, concat_shuffle_backward) pick the widest of 16-, 8- and 4-byte
vectors that the channel count, strides and pointers allow. These tests run the
CUDA kernels through ``torch.ops.shufflenet_simt`` (the emulator raises on a
misaligned vector access) against the CPU kernels on V2 shapes (dense tensors and
``x.chunk(2, 1)`` halves, odd spatial sizes, stride 1 and 2), read the width each
launch took from the kernel instantiation names of ``simt.launch_counts()``, and
check that the tap-major depthwise weight gives the same bits as the plain one.
"""

from __future__ import annotations

import re

import pytest
import torch

from tests.test_simt import BF16, DTYPES, F16, SIMT_ERROR, assert_same, simt

pytestmark = pytest.mark.simt

cpu = torch.ops.shufflenet
emu = torch.ops.shufflenet_simt

V2_CHANNELS = (24, 58, 116, 232, 464)
LAYOUTS = ("nchw", "cl", "half_nchw", "half_cl")


@pytest.fixture(autouse=True)
def _reset_hooks():
    if simt is None:  # only with SHUFFLENET_EXPECT_SIMT=1 (else tests.test_simt skips the module)
        pytest.fail(f"SHUFFLENET_EXPECT_SIMT=1 but {SIMT_ERROR}")
    yield
    simt.set_grid_limits(0, 65535)


def expected_vector_bytes(count: int, dtype: torch.dtype, shift: int = 0) -> int:
    """Width a run of `count` values allows (a channels_last pixel row of `count`
    channels, or an NCHW plane of `count` pixels): the widest of 16, 8 and 4 bytes
    dividing its pitch (also that of a ``chunk(2, 1)`` half, whose offset and pitch
    are multiples of it) and the data's offset of `shift` elements from an
    allocation; the element size when none is a vector."""
    elem = torch.empty((), dtype=dtype).element_size()
    for width in (16, 8, 4):
        if width > elem and count * elem % width == 0 and shift * elem % width == 0:
            return width
    return elem


def shifted_cl(c: int, hw: tuple[int, int], dtype: torch.dtype, shift: int, n: int = 2) -> torch.Tensor:
    """Dense channels_last [n, c, *hw] starting `shift` elements into its storage."""
    numel = n * c * hw[0] * hw[1]
    flat = torch.randn(numel + shift, dtype=dtype)[shift:]
    return flat.view(n, hw[0], hw[1], c).permute(0, 3, 1, 2)


def v2_input(c: int, hw: tuple[int, int], layout: str, dtype: torch.dtype, n: int = 2) -> torch.Tensor:
    """[n, c, *hw]: dense (nchw, cl), or the second half of x.chunk(2, 1) of a
    [n, 2c, *hw] tensor (half_nchw, half_cl), as a ShuffleNet V2 unit splits it."""
    wide = layout.startswith("half_")
    x = torch.randn(n, 2 * c if wide else c, *hw, dtype=dtype)
    if layout.endswith("cl"):
        x = x.contiguous(memory_format=torch.channels_last)
    return x.chunk(2, 1)[1] if wide else x


def launched(kernel: str) -> list[tuple[str, int]]:
    """(scalar type, vector elements) of every launch of `kernel` since the last
    reset: the first and third template arguments of its instantiation name."""
    out = []
    for name in simt.launch_counts():
        m = re.fullmatch(rf"{kernel}<([\w:]+), [\w ]+, (\d+)(?:, .*)?>", name)
        if m:
            out.append((m.group(1), int(m.group(2))))
    return out


def vector_bytes(kernel: str, dtype: torch.dtype) -> int:
    """Bytes per access of the one launch of `kernel` since the last reset."""
    runs = launched(kernel)
    assert len(runs) == 1, (kernel, simt.launch_counts())
    return runs[0][1] * torch.empty((), dtype=dtype).element_size()


def dw_weight(c: int, k: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(c, 1, k, k, dtype=dtype) / k


def tap_major(w: torch.Tensor) -> torch.Tensor:
    """The same [C, 1, kH, kW] weight stored tap by tap (strides (1, C*kH*kW, kW*C, C))."""
    return w.permute(2, 3, 1, 0).contiguous().permute(3, 2, 0, 1)


def dtype_id(dt: torch.dtype) -> str:
    return str(dt).split(".")[1]


# ---- depthwise_conv2d ------------------------------------------------------------------


@pytest.mark.parametrize("stride", (1, 2))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("c", V2_CHANNELS)
def test_depthwise_v2_channels(c: int, dtype: torch.dtype, layout: str, stride: int) -> None:
    torch.manual_seed(c * 10 + stride)
    x = v2_input(c, (7, 9), layout, dtype)
    w, b = dw_weight(c, 3, dtype), torch.randn(c, dtype=dtype)
    args = (x, w, b, [stride, stride], [1, 1], [1, 1], True)
    simt.reset_launch_counts()
    ours = emu.depthwise_conv2d(*args)
    assert_same(ours, cpu.depthwise_conv2d(*args), exact=False)
    if layout.endswith("cl"):
        assert vector_bytes("dw_fwd_nhwc_kernel", dtype) == expected_vector_bytes(c, dtype)


@pytest.mark.parametrize("k", (3, 5))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("c", (58, 116))
def test_depthwise_tap_major_weight_same_bits(c: int, dtype: torch.dtype, layout: str, k: int) -> None:
    """The tap-major weight is read in place and gives exactly the plain weight's
    results, forward and backward (3x3: the fixed kernels; 5x5 stride 2: the
    generic ones)."""
    torch.manual_seed(c + k)
    stride = 1 if k == 3 else 2
    x = v2_input(c, (9, 7), layout, dtype)
    w = dw_weight(c, k, dtype)
    wt = tap_major(w)
    assert wt.stride(0) == 1 and wt.reshape(c, k * k).t().is_contiguous()
    assert torch.equal(wt, w)
    b = torch.randn(c, dtype=dtype)
    conv = ([stride, stride], [k // 2, k // 2], [1, 1])
    ref = emu.depthwise_conv2d(x, w, b, *conv, True)
    ours = emu.depthwise_conv2d(x, wt, b, *conv, True)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    assert_same(ours, cpu.depthwise_conv2d(x, w, b, *conv, True), exact=False)
    g = torch.randn_like(ref)
    ref_b = emu.depthwise_conv2d_backward(g, x, w, ref, *conv, [True, True, True])
    ours_b = emu.depthwise_conv2d_backward(g, x, wt, ref, *conv, [True, True, True])
    for a, r in zip(ours_b, ref_b, strict=True):
        torch.testing.assert_close(a, r, rtol=0, atol=0)


def test_depthwise_tap_major_weight_unaligned() -> None:
    """A tap-major weight one element past an aligned address: the kernel must fall
    back to scalar weight loads (the emulator raises on a misaligned vector load)."""
    c, dtype = 116, F16
    x = v2_input(c, (6, 5), "cl", dtype)
    w = dw_weight(c, 3, dtype)
    storage = torch.empty(c * 9 + 1, dtype=dtype)[1:]
    wt = storage.view(3, 3, 1, c).copy_(w.permute(2, 3, 1, 0)).permute(3, 2, 0, 1)
    assert wt.stride(0) == 1 and wt.data_ptr() % 8 != 0
    args = ([1, 1], [1, 1], [1, 1], False)
    torch.testing.assert_close(emu.depthwise_conv2d(x, wt, None, *args), emu.depthwise_conv2d(x, w, None, *args),
                               rtol=0, atol=0)


# ---- channel_shuffle / concat_shuffle / concat_shuffle_backward ----------------------------


@pytest.mark.parametrize("hw", ((7, 9), (8, 8)), ids=lambda hw: f"{hw[0]}x{hw[1]}")
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("c", V2_CHANNELS)
def test_shuffles_v2_channels(c: int, dtype: torch.dtype, layout: str, hw: tuple[int, int]) -> None:
    """concat_shuffle of a V2 unit (x.chunk(2, 1) half and a branch output of C
    channels each), its backward, and channel_shuffle of the 2C-channel result."""
    torch.manual_seed(c)
    a = v2_input(c, hw, layout, dtype)
    b = v2_input(c, hw, "cl" if layout.endswith("cl") else "nchw", dtype)
    simt.reset_launch_counts()
    out = emu.concat_shuffle(a, b, 2)
    assert_same(out, cpu.concat_shuffle(a, b, 2), exact=True)
    if layout.endswith("cl"):
        assert vector_bytes("gather_pixels_kernel", dtype) == expected_vector_bytes(c, dtype)
    assert_same(emu.concat_shuffle_backward(out, 2, c), cpu.concat_shuffle_backward(out, 2, c), exact=True)
    x = v2_input(2 * c, hw, layout, dtype, n=1)
    assert_same(emu.channel_shuffle(x, 2), cpu.channel_shuffle(x, 2), exact=True)


@pytest.mark.parametrize("dtype", (F16, BF16), ids=dtype_id)
@pytest.mark.parametrize(("c", "width"), ((58, 4), (116, 8), (232, 16)))
def test_v2_half_channels_last_take_vector_path(c: int, width: int, dtype: torch.dtype) -> None:
    """fp16/bf16 channels_last at C = 58 / 116 / 232: the depthwise conv and
    concat_shuffle move 4 / 8 / 16 bytes per access, not one element."""
    torch.manual_seed(c)
    x = v2_input(c, (5, 7), "half_cl", dtype)
    w = tap_major(dw_weight(c, 3, dtype))
    simt.reset_launch_counts()
    y = emu.depthwise_conv2d(x, w, None, [1, 1], [1, 1], [1, 1], False)
    assert vector_bytes("dw_fwd_nhwc_kernel", dtype) == width
    simt.reset_launch_counts()
    emu.depthwise_conv2d(x, w, None, [2, 2], [1, 1], [1, 1], False)
    assert vector_bytes("dw_fwd_nhwc_kernel", dtype) == width
    simt.reset_launch_counts()
    emu.concat_shuffle(x, y, 2)
    assert vector_bytes("gather_pixels_kernel", dtype) == width


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("hw", (56, 28, 14, 7))
def test_v2_planes_vector_width(hw: int, dtype: torch.dtype) -> None:
    """NCHW concat_shuffle of a V2 unit at each stage's plane size: 16 bytes per
    access for 56x56 and 28x28, 8 (fp16/bf16) or 16 (fp32) for 14x14, one element
    for the odd 7x7 planes."""
    torch.manual_seed(hw)
    a = v2_input(58, (hw, hw), "half_nchw", dtype, n=1)
    b = v2_input(58, (hw, hw), "nchw", dtype, n=1)
    simt.reset_launch_counts()
    assert_same(emu.concat_shuffle(a, b, 2), cpu.concat_shuffle(a, b, 2), exact=True)
    assert vector_bytes("gather_planes_kernel", dtype) == expected_vector_bytes(hw * hw, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize(("c", "shift"), ((58, 1), (116, 2), (116, 1), (232, 4), (232, 2), (464, 6)))
def test_pointer_alignment_narrows_the_vector(c: int, shift: int, dtype: torch.dtype) -> None:
    """Data that starts `shift` elements into its storage: the width also follows the
    pointers' alignment (the emulator raises on a misaligned vector access)."""
    torch.manual_seed(c + shift)
    x = shifted_cl(c, (5, 6), dtype, shift)
    assert x.is_contiguous(memory_format=torch.channels_last)
    width = expected_vector_bytes(c, dtype, shift)
    w, b = dw_weight(c, 3, dtype), torch.randn(c, dtype=dtype)
    args = (x, w, b, [1, 1], [1, 1], [1, 1], True)
    simt.reset_launch_counts()
    assert_same(emu.depthwise_conv2d(*args), cpu.depthwise_conv2d(*args), exact=False)
    assert vector_bytes("dw_fwd_nhwc_kernel", dtype) == width
    other = v2_input(c, (5, 6), "cl", dtype)
    simt.reset_launch_counts()
    assert_same(emu.concat_shuffle(other, x, 2), cpu.concat_shuffle(other, x, 2), exact=True)
    assert vector_bytes("gather_pixels_kernel", dtype) == width


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize(
    "shape", ((1, 4, 64, 64), (1, 6, 30, 30), (2, 3, 56, 56), (1, 2, 33, 31)), ids=lambda s: "x".join(map(str, s))
)
def test_large_planes_split_over_blocks(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    """Few large NCHW planes: each plane is cut into chunks moved by several blocks
    (chunk ends inside a plane, odd planes on the scalar path), also with a grid
    too small for one pass."""
    torch.manual_seed(shape[1])
    x = torch.randn(shape, dtype=dtype)
    groups = 2 if shape[1] % 2 == 0 else 3
    ref = cpu.channel_shuffle(x, groups)
    assert_same(emu.channel_shuffle(x, groups), ref, exact=True)
    simt.set_grid_limits(2, 3)
    assert_same(emu.channel_shuffle(x, groups), ref, exact=True)
