"""The CPU kernels' output cache (csrc/cpu/output_cache.cpp, ``shufflenet_kernels.memory``):
freed outputs of 256 KiB and more are kept by size and handed to the next output of
that size; small ones are not; live outputs never share memory; the limit and its
environment variable; clearing; cached memory behaves as any tensor's (resize, copy,
pickling, values)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import shufflenet_kernels as sk

pytestmark = pytest.mark.skipif(not sk.NATIVE_AVAILABLE, reason="the native ops are not built")

ROOT = Path(__file__).resolve().parent.parent


def dw(x: torch.Tensor) -> torch.Tensor:
    """A CPU kernel whose output has x's size (depthwise 3x3, stride 1)."""
    c = x.size(1)
    w = torch.ones(c, 1, 3, 3, dtype=x.dtype)
    return torch.ops.shufflenet.depthwise_conv2d(x, w, None, [1, 1], [1, 1], [1, 1], False)


def big_input(batch: int = 2) -> torch.Tensor:
    """[batch, 116, 28, 28] float32 channels_last: 0.36 MiB per image."""
    return torch.randn(batch, 116, 28, 28).contiguous(memory_format=torch.channels_last)


@pytest.fixture(autouse=True)
def empty_cache():
    sk.empty_cpu_cache()
    yield
    sk.empty_cpu_cache()


def test_freed_output_is_reused() -> None:
    x = big_input()
    y = dw(x)
    ptr, nbytes = y.data_ptr(), y.numel() * y.element_size()
    assert ptr % 64 == 0
    del y
    held, limit = sk.cpu_output_cache_info()
    assert limit == 64 << 20
    assert nbytes <= held < nbytes + 4096  # one block, rounded up to whole pages
    y = dw(x)
    assert y.data_ptr() == ptr
    assert sk.cpu_output_cache_info()[0] == 0
    torch.testing.assert_close(y, torch.nn.functional.conv2d(x, torch.ones(116, 1, 3, 3), padding=1, groups=116))


def test_live_outputs_never_share_memory() -> None:
    x = big_input()
    outs = [dw(x) for _ in range(4)]
    assert len({o.data_ptr() for o in outs}) == 4
    ptrs = {o.data_ptr() for o in outs}
    del outs
    again = [dw(x) for _ in range(4)]
    assert {o.data_ptr() for o in again} == ptrs  # all four blocks came back


def test_small_outputs_are_not_kept() -> None:
    y = dw(torch.randn(1, 16, 8, 8))  # 4 KiB
    del y
    assert sk.cpu_output_cache_info()[0] == 0


def test_a_block_of_another_size_is_not_handed_out() -> None:
    y = dw(big_input())
    ptr = y.data_ptr()
    del y
    z = dw(torch.randn(2, 116, 30, 30).contiguous(memory_format=torch.channels_last))
    assert z.data_ptr() != ptr
    assert sk.cpu_output_cache_info()[0] > 0  # the first block is still kept


def test_clear() -> None:
    y = dw(big_input())
    del y
    assert sk.cpu_output_cache_info()[0] > 0
    sk.empty_cpu_cache()
    assert sk.cpu_output_cache_info()[0] == 0


def test_cached_memory_behaves_as_any_tensor() -> None:
    x = big_input()
    y = dw(x)
    expected = y.clone()
    buf = io.BytesIO()
    torch.save(y, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.load(buf), expected, rtol=0, atol=0)
    flat = y.permute(0, 2, 3, 1).reshape(-1)  # a view: channels_last is dense
    assert flat.data_ptr() == y.data_ptr()
    flat.resize_(flat.numel() * 2)  # a bigger block from the same allocator, contents kept
    torch.testing.assert_close(flat[: expected.numel()], expected.permute(0, 2, 3, 1).reshape(-1), rtol=0, atol=0)
    del flat, y
    torch.testing.assert_close(dw(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("op", ["v2_unit", "pointwise_conv", "concat_shuffle", "conv3x3_relu_maxpool"])
def test_every_cpu_kernel_output_uses_it(op: str) -> None:
    """The forward outputs of the other CPU kernels come from the cache too."""
    x = big_input()
    if op == "v2_unit":
        b = 58
        w = [torch.randn(b, b, 1, 1), None, torch.randn(b, 1, 3, 3), None, torch.randn(b, b, 1, 1), None]
        run = lambda: torch.ops.shufflenet.v2_unit(x, None, None, None, None, *w, 1)  # noqa: E731
    elif op == "pointwise_conv":  # grouped and shuffled: these kernels' own route (oneDNN allocates its own)
        w = torch.randn(116, 58, 1, 1)
        run = lambda: torch.ops.shufflenet.pointwise_conv(x, w, None, 2, 2, True)  # noqa: E731
    elif op == "concat_shuffle":
        run = lambda: torch.ops.shufflenet.concat_shuffle(x, x, 2)  # noqa: E731
    else:
        img = torch.randn(2, 3, 224, 224).contiguous(memory_format=torch.channels_last)
        w = torch.randn(24, 3, 3, 3)
        run = lambda: torch.ops.shufflenet.conv3x3_relu_maxpool(img, w, None)  # noqa: E731
    with torch.no_grad():
        y = run()
        ptr = y.data_ptr()
        del y
        assert sk.cpu_output_cache_info()[0] > 0
        assert run().data_ptr() == ptr


def run_child(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


# Frees one output of `batch` images (0.36 MiB each), makes another of the same size,
# prints (held, limit) and whether the second got the first's memory.
CHILD = """
    import sys, torch, shufflenet_kernels as sk
    from tests.test_output_cache import big_input, dw
    y = dw(big_input({batch}))
    ptr = y.data_ptr()
    del y
    z = dw(big_input({batch}))
    print(sk.cpu_output_cache_info(), z.data_ptr() == ptr)
"""


@pytest.mark.parametrize(("mb", "batch", "expected"), [("0", 2, "(0, 0) False"), ("1", 2, "(0, 1048576) True"),
                                                       ("1", 8, "(0, 1048576) False"), ("", 8, "(0, 67108864) True")])
def test_limit_from_the_environment(mb: str, batch: int, expected: str) -> None:
    """0 turns the cache off; a block that would exceed the limit is freed at once
    (1 MiB holds the 0.7 MiB output of 2 images, not the 2.9 MiB one of 8); unset or
    empty: 64 MiB."""
    done = run_child(CHILD.format(batch=batch), SHUFFLENET_CPU_OUTPUT_CACHE_MB=mb)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == expected


def test_bad_limit_is_refused_by_name() -> None:
    done = run_child(CHILD.format(batch=2), SHUFFLENET_CPU_OUTPUT_CACHE_MB="lots")
    assert done.returncode != 0
    assert "SHUFFLENET_CPU_OUTPUT_CACHE_MB must be a whole number of megabytes, got 'lots'" in done.stderr


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "slice"])
def test_cached_outputs_in_every_layout_and_dtype(layout: str, dtype: torch.dtype) -> None:
    """Outputs in each layout and dtype (256 KiB and more) come from the cache, take a
    freed block of their own size, and hold the reference's values."""
    big = torch.randn(2, 232, 28, 28, dtype=dtype)
    x = {"nchw": big[:, :116].contiguous(), "channels_last": big[:, :116].contiguous(memory_format=torch.channels_last),
         "slice": big.contiguous(memory_format=torch.channels_last)[:, 58:174]}[layout]
    y = dw(x)
    ptr = y.data_ptr()
    del y
    assert sk.cpu_output_cache_info()[0] > 0
    y = dw(x)
    assert y.data_ptr() == ptr
    expected = torch.nn.functional.conv2d(x.double(), torch.ones(116, 1, 3, 3, dtype=torch.float64), padding=1,
                                          groups=116)
    tol = {torch.float16: 1e-2, torch.bfloat16: 5e-2}.get(dtype, 1e-5)
    torch.testing.assert_close(y.double(), expected, rtol=tol, atol=tol * 10)
