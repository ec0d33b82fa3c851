"""The build: the native extension loads, is an abi3 build, and registers a kernel for
every op on the dispatch keys it must cover.

CPU and fake (Meta) kernels are checked everywhere. The CUDA kernels are checked when
``SHUFFLENET_EXPECT_CUDA=1`` (set where the extension was built with nvcc), the Triton
ops when ``SHUFFLENET_EXPECT_TRITON=1``: a build that silently dropped them then fails
instead of passing with the GPU tests skipped.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
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
# Fused inference ops: a CPU and a fake kernel, and an Autograd kernel that refuses
# tensors requiring grad (no derivative).
FUSED_OPS = ("v2_unit", "v2_unit_", "conv3x3_relu_maxpool")
# Not part of the API: the nn modules mark their cached folded weights with the first;
# shufflenet_kernels.memory reads and clears the CPU output cache with the others.
INTERNAL_OPS = ("_pin_weights", "_output_cache_info", "_output_cache_clear")

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
    assert _ops_in("shufflenet") == set(OPS) | set(FUSED_OPS) | set(INTERNAL_OPS)


@needs_native
@pytest.mark.parametrize("op", OPS + FUSED_OPS)
def test_cpu_kernel_registered(op: str) -> None:
    assert _has_kernel(op, "CPU"), f"shufflenet::{op} has no CPU kernel"


@needs_native
@pytest.mark.parametrize("op", OPS + FUSED_OPS)
def test_fake_kernel_registered(op: str) -> None:
    assert _has_kernel(op, "Meta"), f"shufflenet::{op} has no fake (Meta) kernel"


@needs_native
@pytest.mark.parametrize("op", FORWARD_OPS + FUSED_OPS)
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
    """The 7 ops (and the fused ``v2_unit``) exist in ``shufflenet_triton`` with fake kernels,
    autograd on the forward ops, and the arguments of the ``shufflenet`` schemas in the same order."""
    assert shufflenet_kernels.has_triton_ops(), "torch.ops.shufflenet_triton is not registered"
    assert _ops_in("shufflenet_triton") == set(OPS) | {"v2_unit"}
    ns = "shufflenet_triton"
    assert not [op for op in OPS if not _has_kernel(op, "Meta", ns)], "ops without a fake kernel"
    assert not [op for op in FORWARD_OPS if not _has_kernel(op, "Autograd", ns)], "ops without autograd"
    for op in OPS:
        native = getattr(torch.ops.shufflenet, op).default._schema
        triton = getattr(torch.ops.shufflenet_triton, op).default._schema
        assert [a.name for a in triton.arguments] == [a.name for a in native.arguments], op
        assert len(triton.returns) == len(native.returns), op


# ---- what `import shufflenet_kernels` registers (fresh interpreters) ---------------

ROOT = Path(__file__).resolve().parent.parent
HAS_TRITON = importlib.util.find_spec("triton") is not None


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    """Runs ``code`` in a new interpreter from the repository root (this environment,
    the Triton interpreter chosen as in conftest when there is no GPU)."""
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault("TRITON_INTERPRET", "1")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )


@needs_native
@pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed")
def test_package_import_registers_triton_ops() -> None:
    """``import shufflenet_kernels`` alone registers ``torch.ops.shufflenet_triton``
    (README and package docstring), and the ops run."""
    proc = _fresh_python("""
        import sys
        import torch
        import shufflenet_kernels

        ops = torch.ops.shufflenet_triton
        assert hasattr(ops, "channel_shuffle") and hasattr(ops, "depthwise_conv2d_backward"), "not registered"
        assert shufflenet_kernels.has_triton_ops()
        import shufflenet_kernels.triton_kernels as tk  # the same module, not a second registration
        assert tk is sys.modules["shufflenet_kernels.triton_kernels"] and tk.HAS_TRITON
        # compiled kernels on the GPU; interpreted on CPU tensors without one
        x = torch.arange(2 * 6 * 3, dtype=torch.float32, device="cuda" if torch.cuda.is_available() else "cpu")
        x = x.reshape(2, 6, 3)
        assert torch.equal(ops.channel_shuffle(x, 3), torch.nn.functional.channel_shuffle(x, 3))
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr


@needs_native
@pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed")
def test_compiled_triton_ops_refuse_cpu_tensors_by_name() -> None:
    """Without the interpreter the Triton ops are compiled kernels: a CPU tensor is
    refused with the op's and the argument's name, before any launch (also on a
    machine without a GPU, where nothing is compiled); meta tensors still give shapes."""
    proc = _fresh_python("""
        import os
        os.environ["TRITON_INTERPRET"] = "0"
        import torch
        import shufflenet_kernels

        ops = torch.ops.shufflenet_triton
        checks = [
            (lambda: ops.channel_shuffle(torch.ones(1, 4, 2), 2), "channel_shuffle: input is on cpu"),
            (lambda: ops.concat_shuffle(torch.ones(1, 2, 2, 2), torch.ones(1, 2, 2, 2), 2),
             "concat_shuffle: a is on cpu"),
            (lambda: ops.pointwise_conv(torch.ones(1, 4, 2, 2), torch.ones(4, 4, 1, 1), None, 1, 1, False),
             "pointwise_conv: input is on cpu"),
        ]
        for call, message in checks:
            try:
                call()
            except RuntimeError as e:
                assert message in str(e) and "CUDA tensors only" in str(e), str(e)
            else:
                raise AssertionError(f"no error: {message}")
        # meta tensors hold no memory: shapes still propagate
        assert ops.channel_shuffle(torch.empty(2, 6, 3, device="meta"), 3).shape == (2, 6, 3)
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr


@needs_native
def test_package_imports_without_triton() -> None:
    """Without Triton the package still imports, with the native ops and no Triton ones."""
    proc = _fresh_python("""
        import sys
        sys.modules["triton"] = None  # as if Triton were not installed
        import torch
        import shufflenet_kernels
        from shufflenet_kernels import functional as F

        assert not shufflenet_kernels.has_triton_ops()
        assert not hasattr(torch.ops.shufflenet_triton, "channel_shuffle")
        x = torch.randn(2, 6, 3, 3)
        assert torch.equal(F.channel_shuffle(x, 3), torch.nn.functional.channel_shuffle(x, 3))
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr


@needs_native
@pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed")
def test_package_imports_with_broken_triton() -> None:
    """A Triton install that fails to import gives a warning, not an import error."""
    proc = _fresh_python("""
        import importlib.abc
        import importlib.machinery
        import sys
        import warnings

        class _Broken(importlib.abc.MetaPathFinder, importlib.abc.Loader):
            def find_spec(self, name, path=None, target=None):
                if name == "triton":
                    return importlib.machinery.ModuleSpec(name, self)
                return None

            def create_module(self, spec):
                return None

            def exec_module(self, module):
                raise ImportError("triton is broken here")

        sys.meta_path.insert(0, _Broken())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import torch
            import shufflenet_kernels
        assert any("Triton ops could not be registered" in str(w.message) for w in caught), caught
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # warned once, on import; not again on every query
            assert not shufflenet_kernels.has_triton_ops()
        x = torch.randn(2, 6, 3, 3)
        assert torch.equal(torch.ops.shufflenet.channel_shuffle(x, 3), torch.nn.functional.channel_shuffle(x, 3))
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr
