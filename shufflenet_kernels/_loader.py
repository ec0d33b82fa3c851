"""Loads the compiled extension ``shufflenet_kernels._C``.

Importing ``_C`` runs its static ``TORCH_LIBRARY`` registrations: after that the
ops live in ``torch.ops.shufflenet``. When it cannot load (not built, or built
against another torch), a warning says why and ``NATIVE_AVAILABLE`` is False.
"""

from __future__ import annotations

import warnings

import torch

NATIVE_AVAILABLE: bool = False
NATIVE_LOAD_ERROR: str | None = None

try:
    from . import _C  # noqa: F401

    NATIVE_AVAILABLE = True
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    NATIVE_LOAD_ERROR = str(exc)
    warnings.warn(
        "shufflenet_kernels: the compiled extension could not be loaded "
        f"({exc}). Build it with `pip install --no-build-isolation -e .` against torch "
        f"{torch.__version__}; torch.ops.shufflenet is unavailable until then.",
        RuntimeWarning,
        stacklevel=2,
    )


def has_cuda_kernels() -> bool:
    """True when ``_C`` was built with the CUDA kernels."""
    if not NATIVE_AVAILABLE:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key("shufflenet::channel_shuffle", "CUDA")
