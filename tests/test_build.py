"""The build: the native extension loads, is an abi3 build, and registers a kernel for
every op on the dispatch keys it must cover.

CPU and fake (Meta) kernels are checked everywhere. The CUDA kernels are checked when
``SHUFFLENET_EXPECT_CUDA=1`` (set where the extension was built with nvcc), the Triton
ops when ``SHUFFLENET_EXPECT_TRITON=1``: a build that silently dropped them then fails
instead of passing with the GPU tests skipped.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

import shufflenet_kernels
from shufflenet_kernels import _loader

OPS = (
    "channel_shuffle",
    "concat_shuffle",
    "concat_shuffle_backward",
    "pointwise_conv",
    "pointwise_conv_backward",
    "depthwise_conv2d",
    "depthwise_conv2d_backward",
)
FORWARD_OPS = ("channel_shuffle", "concat_shuffle", "pointwise_conv", "depthwise_conv2d")

EXPECT_CUDA = os.environ.get("SHUFFLENET_EXPECT_CUDA") == "1"
EXPECT_TRITON = os.environ.get("SHUFFLENET_EXPECT_TRITON") == "1"

needs_native = pytest.mark.skipif(
    not shufflenet_kernels.NATIVE_AVAILABLE, reason="checked by test_native_extension_is_loaded"
)


def _has_kernel(op: str, key: str, namespace: str = "shufflenet") -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"{namespace}::{op}", key)


def _ops_in(namespace: str) -> set[str]:
    """Names of the ops registered in `namespace`."""
    prefix = f"{namespace}::"
    return {n[len(prefix):] for n in torch._C._dispatch_get_all_op_names() if n.startswith(prefix)}


def test_native_extension_is_loaded() -> None:
    assert shufflenet_kernels.NATIVE_AVAILABLE, (
        f"shufflenet_kernels._C did not load: {_loader.NATIVE_LOAD_ERROR}"
    )


@needs_native
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abi3 file names checked on Linux")
def test_extension_is_abi3() -> None:
    """Built against the limited API: one binary serves every CPython >= 3.10."""
    from shufflenet_kernels import _C

    name = Path(_C.__file__).name
    assert name.endswith(".abi3.so"), f"{name} is not an abi3 build (expected _C.abi3.so)"


@needs_native
def test_namespace_has_exactly_the_ops() -> None:
    assert _ops_in("shufflenet") == set(OPS)


@needs_native
@pytest.mark.parametrize("op", OPS)
def test_cpu_kernel_registered(op: str) -> None:
    assert _has_kernel(op, "CPU"), f"shufflenet::{op} has no CPU kernel"


@needs_native
@pytest.mark.parametrize("op", OPS)
def test_fake_kernel_registered(op: str) -> None:
    assert _has_kernel(op, "Meta"), f"shufflenet::{op} has no fake (Meta) kernel"


@needs_native
@pytest.mark.parametrize("op", FORWARD_OPS)
def test_autograd_registered(op: str) -> None:
    assert _has_kernel(op, "Autograd"), f"shufflenet::{op} has no autograd formula"


@needs_native
@pytest.mark.skipif(not EXPECT_CUDA, reason="set SHUFFLENET_EXPECT_CUDA=1 where _C was built with nvcc")
def test_cuda_kernels_registered() -> None:
    assert shufflenet_kernels.has_cuda_kernels(), "shufflenet_kernels._C was built without the CUDA kernels"
    missing = [op for op in OPS if not _has_kernel(op, "CUDA")]
    assert not missing, f"ops without a CUDA kernel: {missing}"


@needs_native
@pytest.mark.skipif(not EXPECT_TRITON, reason="set SHUFFLENET_EXPECT_TRITON=1 where Triton is installed")
def test_triton_ops_registered() -> None:
    """The 7 ops exist in ``shufflenet_triton`` with fake kernels, autograd on the forward
    ops, and the arguments of the ``shufflenet`` schemas in the same order."""
    assert shufflenet_kernels.has_triton_ops(), "torch.ops.shufflenet_triton is not registered"
    assert _ops_in("shufflenet_triton") == set(OPS)
    ns = "shufflenet_triton"
    assert not [op for op in OPS if not _has_kernel(op, "Meta", ns)], "ops without a fake kernel"
    assert not [op for op in FORWARD_OPS if not _has_kernel(op, "Autograd", ns)], "ops without autograd"
    for op in OPS:
        native = getattr(torch.ops.shufflenet, op).default._schema
        triton = getattr(torch.ops.shufflenet_triton, op).default._schema
        assert [a.name for a in triton.arguments] == [a.name for a in native.arguments], op
        assert len(triton.returns) == len(native.returns), op
