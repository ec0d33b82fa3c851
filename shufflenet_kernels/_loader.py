"""Loads the compiled extension ``shufflenet_kernels._C``.

Importing ``_C`` runs its static ``TORCH_LIBRARY`` registrations: after that the
ops live in ``torch.ops.shufflenet``. When it cannot load (not built, or built
against another torch), a warning says why and ``NATIVE_AVAILABLE`` is False.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

NATIVE_AVAILABLE: bool = False
NATIVE_LOAD_ERROR: str | None = None

PACKAGE_DIR = Path(__file__).resolve().parent


def is_unbuilt_source_tree(package_dir: Path = PACKAGE_DIR) -> bool:
    """True when the package was imported from a source checkout that holds no build.

    That happens when Python runs from the repository's root after a non-editable
    install: the folder ``shufflenet_kernels/`` there shadows the installed package.
    """
    in_checkout = (package_dir.parent / "setup.py").is_file() and (package_dir.parent / "csrc").is_dir()
    return in_checkout and not any(package_dir.glob("_C.*"))


def _load_failure_message(exc: Exception) -> str:
    if is_unbuilt_source_tree():
        return (
            f"shufflenet_kernels was imported from the source tree at {PACKAGE_DIR.parent}, which has no "
            "compiled extension (an installed copy, if any, is shadowed because Python looks in the current "
            "folder first). Run from another folder, or build in place with "
            "`pip install --no-build-isolation -e .`; torch.ops.shufflenet is unavailable until then."
        )
    return (
        f"shufflenet_kernels: the compiled extension could not be loaded ({exc}). Build it with "
        f"`pip install --no-build-isolation .` against torch {torch.__version__}; torch.ops.shufflenet "
        "is unavailable until then."
    )


try:
    from . import _C  # noqa: F401

    NATIVE_AVAILABLE = True
except ImportError as exc:
    NATIVE_LOAD_ERROR = str(exc)
    warnings.warn(_load_failure_message(exc), RuntimeWarning, stacklevel=2)


def has_cuda_kernels() -> bool:
    """True when ``_C`` was built with the CUDA kernels."""
    if not NATIVE_AVAILABLE:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key("shufflenet::channel_shuffle", "CUDA")


if NATIVE_AVAILABLE and torch.cuda.is_available() and not has_cuda_kernels():
    warnings.warn(
        "shufflenet_kernels was built without its CUDA kernels (no usable CUDA toolkit at build time), "
        "so CUDA tensors fall back to the Triton kernels where Triton is installed. Rebuild with "
        "CUDA_HOME set to a CUDA toolkit matching torch's CUDA version, and SHUFFLENET_CUDA=1 to make a "
        "missing toolkit an error.",
        RuntimeWarning,
        stacklevel=2,
    )
