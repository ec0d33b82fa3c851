"""Build script for shufflenet-kernels.

Builds one extension, ``shufflenet_kernels._C``: the CPU kernels always, the CUDA
kernels too when torch is a CUDA build and a usable CUDA toolkit is found (see
``find_cuda_toolkit``). ``_C`` has no Python module functions: importing it runs the
static ``TORCH_LIBRARY`` registrations, so it is built against the limited API (abi3)
and one wheel serves every CPython >= 3.10.

Environment:
  SHUFFLENET_NO_CUDA=1   build the CPU kernels only
  SHUFFLENET_CUDA=1      the CUDA kernels are required: fail, with the reason, when they
                         cannot be built
  CUDA_HOME / CUDA_PATH  the toolkit's root (otherwise found from the nvcc on PATH)
  TORCH_CUDA_ARCH_LIST   GPU architectures (default "9.0a", Hopper)
  SHUFFLENET_SIMT=1      also build the test-only ``_C_simt``: the CUDA kernels compiled for
                         the CPU against the SIMT emulation (``only``: just that one)

Install with ``pip install --no-build-isolation .`` (or ``-e .``): torch must already be
installed, since the build imports it.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from setuptools import setup

try:
    import torch
except ImportError:  # pragma: no cover - build-time guidance
    sys.exit(
        "shufflenet-kernels needs torch installed before it is built; install torch, then run "
        "`pip install --no-build-isolation .`"
    )

ROOT = os.path.dirname(os.path.abspath(__file__))
# The last place a toolkit is looked for.
DEFAULT_CUDA_ROOT = "/usr/local/cuda"


@dataclass
class CudaToolkit:
    """Where the CUDA kernels can be built from, or why they cannot."""

    root: str | None
    reason: str  # why the toolkit is unusable; empty when usable
    cudart_dir: str | None = None  # folder holding a linkable libcudart.so

    @property
    def usable(self) -> bool:
        return not self.reason


def _nvcc_toolkit_root(nvcc: str) -> str | None:
    """The toolkit root of an nvcc, asked of nvcc itself.

    ``nvcc`` on PATH may be a wrapper script or a symlink in a general ``bin`` folder;
    its ``--dryrun`` output names the real toolkit (``TOP=<root>/bin/..``).
    """
    with tempfile.TemporaryDirectory() as tmp:
        probe = os.path.join(tmp, "probe.cu")
        open(probe, "w").close()
        try:
            out = subprocess.run(
                [nvcc, "-v", "--dryrun", "-c", probe, "-o", os.path.join(tmp, "probe.o")],
                capture_output=True, text=True, timeout=60, check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
    match = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, re.MULTILINE)
    return os.path.realpath(match.group(1).strip()) if match else None


def _pip_nvidia_dirs(sub: str) -> list[str]:
    """Folders ``nvidia/<package>/<sub>`` of the CUDA libraries torch's pip dependencies
    install (``nvidia/cu13``, or per library ``nvidia/cuda_runtime`` etc.)."""
    found = {d for site in sys.path for d in glob.glob(os.path.join(site, "nvidia", "*", sub))}
    return sorted(d for d in found if os.path.isdir(d))


def _torch_cudart_dirs() -> list[str]:
    """Folders of the CUDA runtime that torch's pip dependencies install."""
    return [d for d in _pip_nvidia_dirs("lib") if glob.glob(os.path.join(d, "libcudart.so*"))]


def _linkable_cudart(root: str) -> str | None:
    for sub in ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib"),
                os.path.join("targets", "sbsa-linux", "lib")):
        if os.path.exists(os.path.join(root, sub, "libcudart.so")):
            return os.path.join(root, sub)
    return None


def _cudart_link_dir(versioned: str) -> str:
    """A build folder with ``libcudart.so`` pointing at a versioned runtime library.

    pip's CUDA runtime ships only ``libcudart.so.<major>``; the linker's ``-lcudart``
    needs the unversioned name. The extension then records the same soname that torch
    loads, so both share one runtime.
    """
    link_dir = os.path.join(ROOT, "build", "cudart-link")
    os.makedirs(link_dir, exist_ok=True)
    link = os.path.join(link_dir, "libcudart.so")
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(versioned, link)
    return link_dir


def find_cuda_toolkit() -> CudaToolkit:
    """The CUDA toolkit to build with, decided from what is on disk.

    The root comes from CUDA_HOME or CUDA_PATH, else from the nvcc on PATH (wrappers
    and symlinks resolved by asking nvcc), else /usr/local/cuda. It counts only if it has
    ``bin/nvcc`` and ``include/cuda_runtime.h``, its major version is torch's, and a
    ``libcudart`` can be linked: the toolkit's own, or the runtime torch's pip
    dependencies install.
    """
    if torch.version.cuda is None:
        return CudaToolkit(None, f"torch {torch.__version__} is a CPU-only build")
    root = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    source = "CUDA_HOME/CUDA_PATH"
    if not root:
        nvcc = shutil.which("nvcc")
        if nvcc:
            root, source = _nvcc_toolkit_root(nvcc), f"the nvcc on PATH ({nvcc})"
            if root is None:
                return CudaToolkit(None, f"could not find the toolkit of {nvcc} (`nvcc -v --dryrun` names none)")
        elif os.path.exists(os.path.join(DEFAULT_CUDA_ROOT, "bin", "nvcc")):
            root, source = DEFAULT_CUDA_ROOT, DEFAULT_CUDA_ROOT
        else:
            return CudaToolkit(None, f"no nvcc found (not on PATH, no CUDA_HOME, no {DEFAULT_CUDA_ROOT})")
    root = os.path.realpath(root)
    for need in (os.path.join("bin", "nvcc"), os.path.join("include", "cuda_runtime.h")):
        if not os.path.exists(os.path.join(root, need)):
            return CudaToolkit(root, f"the CUDA toolkit at {root} (from {source}) has no {need}")
    try:
        version = subprocess.run([os.path.join(root, "bin", "nvcc"), "--version"], capture_output=True,
                                 text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return CudaToolkit(root, f"{root}/bin/nvcc does not run: {exc}")
    match = re.search(r"release (\d+)\.(\d+)", version)
    torch_major = torch.version.cuda.split(".")[0]
    if match is None or match.group(1) != torch_major:
        found = f"{match.group(1)}.{match.group(2)}" if match else "an unknown version"
        return CudaToolkit(root, f"the CUDA toolkit at {root} is {found}, torch was built with CUDA "
                                 f"{torch.version.cuda} (the major versions must match)")
    cudart = _linkable_cudart(root)
    if cudart is None:
        for d in _torch_cudart_dirs():
            versioned = sorted(glob.glob(os.path.join(d, f"libcudart.so.{torch_major}*")))
            if versioned:
                cudart = _cudart_link_dir(versioned[0])
                break
    if cudart is None:
        return CudaToolkit(root, f"no linkable libcudart in the CUDA toolkit at {root} nor in torch's "
                                 "pip CUDA runtime")
    return CudaToolkit(root, "", cudart)


def _cuda_decision() -> CudaToolkit | None:
    """The toolkit when the CUDA kernels are built, else None (after saying why)."""
    if os.environ.get("SHUFFLENET_NO_CUDA", "0") == "1":
        print("shufflenet-kernels: building the CPU kernels only (SHUFFLENET_NO_CUDA=1)", file=sys.stderr)
        return None
    toolkit = find_cuda_toolkit()
    if toolkit.usable:
        print(f"shufflenet-kernels: building the CUDA kernels with the toolkit at {toolkit.root}", file=sys.stderr)
        return toolkit
    if os.environ.get("SHUFFLENET_CUDA", "0") == "1":
        sys.exit(f"shufflenet-kernels: SHUFFLENET_CUDA=1 but the CUDA kernels cannot be built: {toolkit.reason}")
    print(
        f"shufflenet-kernels: building the CPU kernels only: {toolkit.reason}. For the CUDA kernels install "
        "a CUDA toolkit whose major version matches torch's and set CUDA_HOME to its root "
        "(SHUFFLENET_CUDA=1 makes this an error).",
        file=sys.stderr,
    )
    return None


def _cuda_include_dirs() -> list[str]:
    """Header folders of the CUDA libraries that torch's CUDA headers include.

    A PyPI torch installs cusparse.h, cublas_v2.h etc. under ``nvidia/cu13/include``
    (or per-library ``nvidia/<lib>/include``), not under the toolkit.
    """
    return _pip_nvidia_dirs("include")


def _extension(toolkit: CudaToolkit | None):
    # Decided before torch.utils.cpp_extension is imported: it reads CUDA_HOME once.
    if toolkit is not None:
        os.environ["CUDA_HOME"] = toolkit.root
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    sources = (["csrc/ops.cpp", "csrc/autograd.cpp"] + sorted(glob.glob("csrc/common/*.cpp"))
               + sorted(glob.glob("csrc/cpu/*.cpp")))
    # -Wno-psabi: vector types in always-inlined helpers of multiversioned code.
    cxx_flags = ["-O3", "-std=c++17", "-Wno-psabi"]
    if sys.platform != "win32":
        cxx_flags += ["-fopenmp"]
    extra_link = ["-fopenmp"] if sys.platform != "win32" else []
    include_dirs = [os.path.join(ROOT, "csrc")]
    if toolkit is not None:
        sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
        # Hopper (sm_90a) by default; override with TORCH_CUDA_ARCH_LIST, e.g. "8.0;9.0a".
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0a")
        nvcc_flags = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-lineinfo"]
        return CUDAExtension(
            "shufflenet_kernels._C",
            sources,
            include_dirs=include_dirs + _cuda_include_dirs(),
            library_dirs=[toolkit.cudart_dir],
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
    from torch.utils.cpp_extension import CppExtension

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


if __name__ == "__main__":
    # SHUFFLENET_SIMT=1: _C and _C_simt; SHUFFLENET_SIMT=only: just _C_simt.
    simt = os.environ.get("SHUFFLENET_SIMT", "0")
    ext_modules = [] if simt == "only" else [_extension(_cuda_decision())]
    if simt in ("1", "only"):
        ext_modules.append(_simt_extension())
    from torch.utils.cpp_extension import BuildExtension

    setup(
        ext_modules=ext_modules,
        cmdclass={"build_ext": BuildExtension},
        options={"bdist_wheel": {"py_limited_api": "cp310"}},
    )
