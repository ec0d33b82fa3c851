"""Backend choice: which implementation of an op runs for a given tensor.

* ``"cuda"``   - the C++ kernels of ``torch.ops.shufflenet`` (CUDA on GPU tensors,
  the CPU kernels on CPU tensors);
* ``"triton"`` - the Triton kernels of ``torch.ops.shufflenet_triton`` (GPU tensors);
* ``"auto"``   - per op, the faster of the two on GPU tensors (``AUTO_CHOICE``),
  falling back to whichever is available.

CPU tensors always run the C++ CPU kernels.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from . import _loader

Backend = Literal["auto", "cuda", "triton"]
BACKENDS: tuple[str, ...] = ("auto", "cuda", "triton")

# Op -> backend "auto" picks on a GPU. Defaults until GPU measurements say otherwise.
AUTO_CHOICE: dict[str, str] = {
    "channel_shuffle": "cuda",
    "concat_shuffle": "cuda",
    "pointwise_conv": "cuda",
    "depthwise_conv2d": "cuda",
}


def has_triton_ops() -> bool:
    """True when the Triton ops (``torch.ops.shufflenet_triton``) are registered."""
    try:
        from . import triton_kernels  # noqa: F401
    except ImportError:
        return False
    return hasattr(torch.ops, "shufflenet_triton") and hasattr(torch.ops.shufflenet_triton, "channel_shuffle")


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def resolve(op: str, backend: str, tensor: Tensor) -> str:
    """Namespace (``"shufflenet"`` or ``"shufflenet_triton"``) that runs ``op`` on ``tensor``."""
    check_backend(backend)
    if tensor.device.type != "cuda":
        return "shufflenet"
    choice = AUTO_CHOICE.get(op, "cuda") if backend == "auto" else backend
    if choice == "triton":
        if has_triton_ops():
            return "shufflenet_triton"
        if backend == "triton":
            raise RuntimeError(f"{op}: backend='triton' asked for, but the Triton kernels are not available")
        choice = "cuda"
    if not _loader.has_cuda_kernels():
        if backend == "auto" and has_triton_ops():
            return "shufflenet_triton"
        raise RuntimeError(
            f"{op}: the CUDA kernels were not built into shufflenet_kernels._C (rebuild with nvcc "
            "available and SHUFFLENET_NO_CUDA unset), and no Triton fallback is available"
        )
    return "shufflenet"


def op(name: str, backend: str, tensor: Tensor) -> torch._ops.OpOverloadPacket:
    """The op packet ``torch.ops.<namespace>.<name>`` chosen by ``resolve``."""
    return getattr(getattr(torch.ops, resolve(name, backend, tensor)), name)
