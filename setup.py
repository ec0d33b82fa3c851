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


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
