"""shufflenet-kernels: fused kernels for ShuffleNet building blocks as PyTorch custom ops.

Importing the package loads the native ops (``torch.ops.shufflenet.*``), registers
their fake kernels and autograd, and, when Triton is importable, the Triton ops
(``torch.ops.shufflenet_triton.*``).

``models`` builds ShuffleNet V1/V2 on the fused ops; ``accelerate(model)`` converts an
existing one (torchvision's included), swapping its plain PyTorch blocks for fused ones.
"""

from __future__ import annotations

# Importing ops registers the fake kernels and autograd of the native ops.
from . import _loader, functional, fusion, models, nn, ops, reference  # noqa: F401
from ._loader import NATIVE_AVAILABLE, has_cuda_kernels, load_triton_kernels
from .accelerate import accelerate
from .backend import has_triton_ops
from .memory import cpu_output_cache_info, empty_cpu_cache

# Registers torch.ops.shufflenet_triton.* when Triton is importable (a no-op without
# it). Last, because the Triton package imports shufflenet_kernels.ops.
load_triton_kernels()

__version__ = "0.1.0"

__all__ = [
    "NATIVE_AVAILABLE",
    "accelerate",
    "cpu_output_cache_info",
    "empty_cpu_cache",
    "functional",
    "fusion",
    "has_cuda_kernels",
    "has_triton_ops",
    "models",
    "nn",
    "ops",
    "reference",
]
