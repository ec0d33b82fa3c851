"""shufflenet-kernels: fused kernels for ShuffleNet building blocks as PyTorch custom ops.

Importing the package loads the native ops (``torch.ops.shufflenet.*``), registers
their fake kernels and autograd, and, when Triton is importable, the Triton ops
(``torch.ops.shufflenet_triton.*``).
"""

from __future__ import annotations

from . import _loader, ops  # noqa: F401  (registers fake kernels and autograd)
from . import functional, nn, reference  # noqa: F401
from ._loader import NATIVE_AVAILABLE, has_cuda_kernels
from .backend import has_triton_ops

__version__ = "0.1.0"

__all__ = [
    "NATIVE_AVAILABLE",
    "functional",
    "has_cuda_kernels",
    "has_triton_ops",
    "nn",
    "ops",
    "reference",
]
