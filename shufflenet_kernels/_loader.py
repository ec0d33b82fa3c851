"""Loads the compiled extension ``shufflenet_kernels._C``, and the Triton ops.

Importing ``_C`` runs its static ``TORCH_LIBRARY`` registrations: after that the
ops live in ``torch.ops.shufflenet``. When it cannot load (not built, or built
against another torch), a warning says why and ``NATIVE_AVAILABLE`` is False.

``load_triton_kernels()`` (run by the package's ``__init__``) imports
``shufflenet_kernels.triton_kernels`` when Triton is importable, which registers
``torch.ops.shufflenet_triton``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from pathlib import Path
from types import ModuleType

import torch

NATIVE_AVAILABLE: bool = False
NATIVE_LOAD_ERROR: str | None = None

PACKAGE_DIR = Path(__file__).resolve().parent


def _in_source_checkout(package_dir: Path = PACKAGE_DIR) -> bool:
    """True when ``package_dir`` is the package folder of this project's source checkout
    (``setup.py`` and ``csrc/ops.cpp`` beside it), not an installed copy."""
    root = package_dir.parent
    return (root / "setup.py").is_file() and (root / "csrc" / "ops.cpp").is_file()


def is_unbuilt_source_tree(package_dir: Path = PACKAGE_DIR) -> bool:
    """True when the package was imported from a source checkout that holds no build.

    That happens when Python runs from the repository's root after a non-editable
    install: the folder ``shufflenet_kernels/`` there shadows the installed package.
    """
    return _in_source_checkout(package_dir) and not any(package_dir.glob("_C.*"))


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


_TRITON_PACKAGE = __name__.rpartition(".")[0] + ".triton_kernels"
_triton_load_tried = False


def _source_checkout_triton_kernels() -> ModuleType | None:
    """``triton_kernels/`` of a source checkout built in place (``setup.py build_ext --inplace``).

    Installed (also editable), the folder is the subpackage ``shufflenet_kernels.triton_kernels``
    (``package_dir`` in pyproject.toml). Run from the checkout itself it is a sibling of the
    package; it is loaded under the same name then. Only our own checkout's folder is
    taken (``_in_source_checkout``), never another top-level ``triton_kernels``.
    """
    init = PACKAGE_DIR.parent / "triton_kernels" / "__init__.py"
    if not (init.is_file() and _in_source_checkout()):
        return None
    spec = importlib.util.spec_from_file_location(
        _TRITON_PACKAGE, init, submodule_search_locations=[str(init.parent)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_TRITON_PACKAGE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_TRITON_PACKAGE]
        raise
    sys.modules[__name__.rpartition(".")[0]].triton_kernels = module  # as the import system does
    return module


def load_triton_kernels() -> ModuleType | None:
    """Imports ``shufflenet_kernels.triton_kernels``, registering ``torch.ops.shufflenet_triton``.

    Called when the package is imported. Returns None, registering nothing, when Triton
    is not installed; a Triton install that fails to import gives a warning, not an
    error, so the native ops stay usable.
    """
    global _triton_load_tried
    if _TRITON_PACKAGE in sys.modules:
        return sys.modules[_TRITON_PACKAGE]
    if _triton_load_tried:  # failed before: do not retry (and warn) on every call
        return None
    _triton_load_tried = True
    if importlib.util.find_spec("triton") is None:
        return None
    try:
        try:
            return importlib.import_module(_TRITON_PACKAGE)
        except ModuleNotFoundError as exc:
            if exc.name != _TRITON_PACKAGE:
                raise
            return _source_checkout_triton_kernels()
    except Exception as exc:  # a broken Triton install must not break the native ops
        warnings.warn(
            f"shufflenet_kernels: Triton is installed but the Triton ops could not be registered ({exc!r}); "
            "torch.ops.shufflenet_triton is unavailable.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


if NATIVE_AVAILABLE and torch.cuda.is_available() and not has_cuda_kernels():
    warnings.warn(
        "shufflenet_kernels was built without its CUDA kernels (no usable CUDA toolkit at build time), "
        "so CUDA tensors fall back to the Triton kernels where Triton is installed. Rebuild with "
        "CUDA_HOME set to a CUDA toolkit matching torch's CUDA version, and SHUFFLENET_CUDA=1 to make a "
        "missing toolkit an error.",
        RuntimeWarning,
        stacklevel=2,
    )
