"""The CPU kernels' output cache.

The CPU kernels (``v2_unit``, ``conv3x3_relu_maxpool``, ``pointwise_conv``,
``depthwise_conv2d``, ``concat_shuffle``) take the memory of their outputs of 256 KiB
and more from a cache: when such an output is freed its block is kept, by size, and
the next output of the same size gets it. Without it glibc often hands blocks of
megabytes back to the operating system, and every reuse then faults all their pages
in again (README, "CPU allocator settings"). The cache keeps at most
``SHUFFLENET_CPU_OUTPUT_CACHE_MB`` megabytes (read at the first such output; default
64, 0 turns it off), like PyTorch's CUDA caching allocator keeps GPU memory.
"""

from __future__ import annotations

import torch

from ._loader import NATIVE_AVAILABLE


def cpu_output_cache_info() -> tuple[int, int]:
    """``(held, limit)``: bytes of freed outputs the cache holds for reuse, and its limit
    (0: the cache is off). ``(0, 0)`` without the native extension."""
    if not NATIVE_AVAILABLE:
        return 0, 0
    held, limit = torch.ops.shufflenet._output_cache_info()
    return int(held), int(limit)


def empty_cpu_cache() -> None:
    """Returns every block the output cache holds to the system allocator (outputs
    still alive are not affected; their memory returns to the cache when freed)."""
    if NATIVE_AVAILABLE:
        torch.ops.shufflenet._output_cache_clear()
