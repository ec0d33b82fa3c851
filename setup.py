"""Build script for shufflenet-kernels.

Builds one extension, ``shufflenet_kernels._C``: the CPU kernels always, the CUDA
kernels too when nvcc and a CUDA build of torch are present (set
``SHUFFLENET_NO_CUDA=1`` to force them off). ``_C`` has no Python module
functions: importing it runs the static ``TORCH_LIBRARY`` registrations, so it is
built against the limited API (abi3) and one wheel serves every Python >= 3.10.

Install with ``pip install --no-build-isolation -e .`` (torch must already be
installed: the build imports it).
"""

from __future__ import annotations

import glob
import os
import sys

from setuptools import setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:  # pragma: no cover - build-time guidance
    sys.exit(
        "shufflenet-kernels needs torch installed before it is built; install torch, then run "
        "`pip install --no-build-isolation -e .`"
    )

ROOT = os.path.dirname(os.path.abspath(__file__))
# torch.utils.cpp_extension defines Py_LIMITED_API=0x030A0000 itself for py_limited_api
# extensions: the abi3 wheel serves CPython >= 3.10.


def _want_cuda() -> bool:
    if os.environ.get("SHUFFLENET_NO_CUDA", "0") == "1":
        return False
    if torch.version.cuda is None:
        return False
    return CUDA_HOME is not None and os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc"))


def _cuda_include_dirs() -> list[str]:
    """Header folders of the CUDA libraries that torch's CUDA headers include.

    A PyPI torch installs cusparse.h, cublas_v2.h etc. under ``nvidia/cu13/include``
    (or per-library ``nvidia/<lib>/include``), not under CUDA_HOME.
    """
    dirs: list[str] = []
    for site in sys.path:
        dirs += glob.glob(os.path.join(site, "nvidia", "cu*", "include"))
        dirs += glob.glob(os.path.join(site, "nvidia", "*", "include"))
    return sorted(set(d for d in dirs if os.path.isdir(d)))


def _extension():
    with_cuda = _want_cuda()
    sources = ["csrc/ops.cpp"] + sorted(glob.glob("csrc/common/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp"))
    # -Wno-psabi: vector types in always-inlined helpers of multiversioned code.
    cxx_flags = ["-O3", "-std=c++17", "-Wno-psabi"]
    if sys.platform != "win32":
        cxx_flags += ["-fopenmp"]
    extra_link = ["-fopenmp"] if sys.platform != "win32" else []
    include_dirs = [os.path.join(ROOT, "csrc")]
    if with_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
        # Hopper (sm_90a) by default; override with TORCH_CUDA_ARCH_LIST, e.g. "8.0;9.0a".
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0a")
        nvcc_flags = [
            "-O3",
            "-std=c++17",
            "--expt-relaxed-constexpr",
            "-lineinfo",
        ]
        return CUDAExtension(
            "shufflenet_kernels._C",
            sources,
            include_dirs=include_dirs + _cuda_include_dirs(),
            extra_compile_args={"cxx": cxx_flags + ["-DSHUFFLENET_WITH_CUDA"], "nvcc": nvcc_flags},
            extra_link_args=extra_link,
            py_limited_api=True,
        )
    return CppExtension(
        "shufflenet_kernels._C",
        sources,
        include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=extra_link,
        py_limited_api=True,
    )


def _simt_extension():
    """``shufflenet_kernels._C_simt``, built only with ``SHUFFLENET_SIMT=1`` (test-only).

    The CUDA sources of csrc/cuda compiled by the host C++ compiler against the
    SIMT emulation (csrc/simt/simt.h: the CUDA execution model on the CPU), so the
    CUDA kernels run, and are tested, without a GPU or nvcc. Its ops are
    ``torch.ops.shufflenet_simt.*`` on CPU tensors.

    gcc's address-sanitizer instrumentation in its out-of-line form turns every
    load and store into a call that csrc/simt/runtime.cpp implements (shared-memory
    bounds, initialisation and race checks; no sanitizer runtime is linked).
    ``SHUFFLENET_SIMT_CHECKS=0`` builds without it. ``SHUFFLENET_SIMT_ASAN=1``
    builds with the real AddressSanitizer instead (global out-of-bounds accesses;
    run Python with the ASan runtime preloaded, see the README).
    """
    sources = sorted(glob.glob("csrc/simt/*.cpp"))
    cxx_flags = [
        "-O1",
        "-std=c++17",
        "-DSHUFFLENET_SIMT",
        "-fvisibility=hidden",
        "-fvisibility-inlines-hidden",
        "-Wno-unknown-pragmas",
        "-Wno-psabi",
        "-fno-strict-aliasing",
        "-fopenmp",
    ]
    link_flags = ["-fopenmp"]
    if os.environ.get("SHUFFLENET_SIMT_ASAN", "0") == "1":
        cxx_flags += ["-DSHUFFLENET_SIMT_ASAN", "-fsanitize=address", "-fno-omit-frame-pointer", "-g"]
        link_flags += ["-fsanitize=address"]
    elif os.environ.get("SHUFFLENET_SIMT_CHECKS", "1") != "0":
        cxx_flags += [
            "-fsanitize=address",
            "-fno-sanitize-address-use-after-scope",
            "--param=asan-instrumentation-with-call-threshold=0",
            "--param=asan-stack=0",
            "--param=asan-globals=0",
            "--param=asan-use-after-return=0",
            "--param=asan-memintrin=0",
            # whole-vector accesses only where the source has them
            "-fno-tree-vectorize",
            "-fno-tree-slp-vectorize",
        ]
    return CppExtension(
        "shufflenet_kernels._C_simt",
        sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=link_flags,
        py_limited_api=True,
    )


# SHUFFLENET_SIMT=1: _C and _C_simt; SHUFFLENET_SIMT=only: just _C_simt.
_SIMT = os.environ.get("SHUFFLENET_SIMT", "0")
ext_modules = [] if _SIMT == "only" else [_extension()]
if _SIMT in ("1", "only"):
    ext_modules.append(_simt_extension())

setup(
    ext_modules=ext_modules,
    cmdclass={"build_ext": BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
