"""The CUDA kernels on the CPU: loads ``shufflenet_kernels._C_simt`` (test-only).

``_C_simt`` is built only with ``SHUFFLENET_SIMT=1``: the CUDA sources of
``csrc/cuda`` compiled by the host C++ compiler against a SIMT emulation of the
CUDA execution model (``csrc/simt``). Importing this module registers the CUDA host
functions for CPU tensors as ``torch.ops.shufflenet_simt.*`` (the schemas of
``torch.ops.shufflenet``); the emulator raises a RuntimeError on invalid launches,
misaligned vector accesses, barrier or warp divergence and, with its access checks,
out-of-bounds, uninitialised or racing shared-memory accesses.

Raises ImportError when ``_C_simt`` is not built.
"""

from __future__ import annotations

from . import _C_simt

__all__ = [
    "access_checks",
    "asan_build",
    "index32_limit",
    "launch_counts",
    "max_grid_stride",
    "reset_launch_counts",
    "set_grid_limits",
    "set_index32_limit",
]


def launch_counts() -> dict[str, int]:
    """Launches per kernel instantiation (e.g. ``gather_planes_kernel<float, int, 4>``) since the last reset."""
    return dict(_C_simt.launch_counts())


def reset_launch_counts() -> None:
    _C_simt.reset_launch_counts()


def set_index32_limit(limit: int) -> None:
    """Test hook: the kernels use 32-bit indices only for tensors whose offsets stay
    below ``limit - max_grid_stride()``. Default ``2**31 - 1``; 0 forces 64-bit."""
    _C_simt.set_index32_limit(int(limit))


def set_grid_limits(grid_x: int = 0, grid_yz: int = 65535) -> None:
    """Test hook: the most blocks along x the launchers choose (0: sized for the
    device, 132 SMs x 32) and the largest grid.y/z (65535). Small values make small
    tensors run every grid-stride loop, and every loop over grid.y, several times."""
    _C_simt.set_grid_limits(int(grid_x), int(grid_yz))


def index32_limit() -> int:
    return int(_C_simt.index32_limit())


def max_grid_stride() -> int:
    """The largest step of the kernels' grid-stride loops (largest grid x 1024 threads)."""
    return int(_C_simt.max_grid_stride())


def access_checks() -> bool:
    """Whether the shared-memory bounds, initialisation and race checks are compiled in."""
    return bool(_C_simt.access_checks())


def asan_build() -> bool:
    """Whether ``_C_simt`` was built with AddressSanitizer (``SHUFFLENET_SIMT_ASAN=1``)."""
    return bool(_C_simt.asan_build())
