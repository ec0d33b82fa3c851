"""Per-kernel resources of the built CUDA extension, read with ``cuobjdump``.

``kernel_resources()`` runs ``cuobjdump --dump-resource-usage`` on the CUDA build of
``shufflenet_kernels._C`` and returns one record per kernel and architecture:
registers per thread, static shared memory, stack frame (spills land there) and
local memory, in bytes. ``sass_opcode_counts()`` counts instructions of one opcode
(e.g. ``HMMA``, the tensor-core matrix multiply) per kernel in
``cuobjdump -sass``. ``report_lines()`` is the table of the bench report.

cuobjdump comes from the CUDA toolkit (``$CUDA_HOME/bin``, ``/usr/local/cuda/bin``,
``PATH``) or, failing those, from the copy Triton ships
(``triton/backends/nvidia/bin``). No GPU is needed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "shufflenet_kernels"


@dataclass(frozen=True)
class KernelResources:
    """One kernel (one template instantiation) compiled for `arch`."""

    kernel: str  # demangled name without the namespace, e.g. "pw_mma_kernel<c10::Half, int, false, 16, 128, 1>"
    mangled: str
    arch: str  # e.g. "sm_90a"
    registers: int  # per thread
    shared: int  # static shared memory, bytes
    stack: int  # stack frame per thread, bytes (register spills and local arrays)
    local: int  # local memory per thread, bytes


def find_cuobjdump() -> str | None:
    """Path of a cuobjdump: the toolkit's, else the one shipped with Triton; None if neither."""
    roots = [os.environ[v] for v in ("CUDA_HOME", "CUDA_PATH") if v in os.environ]
    candidates = [os.path.join(root, "bin", "cuobjdump") for root in roots]
    candidates.append("/usr/local/cuda/bin/cuobjdump")
    on_path = shutil.which("cuobjdump")
    if on_path:
        candidates.append(on_path)
    try:
        import triton

        candidates.append(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump"))
    except ImportError:
        pass
    return next((c for c in candidates if os.path.isfile(c) and os.access(c, os.X_OK)), None)


def extension_path() -> Path | None:
    """The built ``shufflenet_kernels._C`` shared object, or None."""
    found = sorted(PACKAGE_DIR.glob("_C.*so")) + sorted(PACKAGE_DIR.glob("_C.*.pyd"))
    return found[0] if found else None


def _run(cuobjdump: str, *args: str) -> str:
    res = subprocess.run([cuobjdump, *args], capture_output=True, text=True, timeout=600)
    # A host object without device code: cuobjdump says so (and may exit non-zero).
    if res.returncode != 0 and "does not contain device code" not in res.stdout + res.stderr:
        raise RuntimeError(f"{cuobjdump} {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


def demangle(names: list[str]) -> dict[str, str]:
    """Mangled -> readable name without namespaces (``c++filt``; unchanged without it)."""
    cxxfilt = shutil.which("c++filt")
    if not names or cxxfilt is None:
        return {n: n for n in names}
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True, timeout=60).stdout
    readable = out.splitlines()
    if len(readable) != len(names):
        return {n: n for n in names}
    return {m: _strip_namespaces(r) for m, r in zip(names, readable, strict=True)}


def _strip_namespaces(name: str) -> str:
    # "void shufflenet::cuda::(anonymous namespace)::k<float, int>(Params, int)" -> "k<float, int>"
    name = re.sub(r"^void ", "", name)
    depth, cut = 0, len(name)
    for i, ch in enumerate(name):  # drop the parameter list: the first '(' at template depth 0
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and not name.startswith("(anonymous", i):
            cut = i
            break
    name = name[:cut]
    head, lt, tail = name.partition("<")
    return head.rsplit("::", 1)[-1] + lt + tail


_FUNCTION = re.compile(r"^\s*Function\s+(\S+?):?\s*$")
_USAGE = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")
_ARCH = re.compile(r"^\s*arch\s*=\s*(\S+)")


def parse_resource_usage(text: str) -> list[tuple[str, str, int, int, int, int]]:
    """(arch, mangled, registers, shared, stack, local) per function of ``--dump-resource-usage`` output."""
    rows = []
    arch, function = "", None
    for line in text.splitlines():
        if m := _ARCH.match(line):
            arch = m.group(1)
        elif m := _FUNCTION.match(line):
            function = m.group(1)
        elif function is not None and (m := _USAGE.search(line)):
            reg, stack, shared, local = (int(g) for g in m.groups())
            rows.append((arch, function, reg, shared, stack, local))
            function = None
    return rows


def kernel_resources(so: str | Path | None = None, cuobjdump: str | None = None) -> list[KernelResources]:
    """Resources of every kernel in `so` (default: the built ``_C``); empty without device code."""
    so = so or extension_path()
    cuobjdump = cuobjdump or find_cuobjdump()
    if so is None or cuobjdump is None:
        return []
    rows = parse_resource_usage(_run(cuobjdump, "--dump-resource-usage", str(so)))
    names = demangle(sorted({r[1] for r in rows}))
    return [
        KernelResources(names[mangled], mangled, arch, reg, shared, stack, local)
        for arch, mangled, reg, shared, stack, local in rows
    ]


_SASS_FUNCTION = re.compile(r"^\s*Function\s*:\s*(\S+)")


def parse_sass_opcode_counts(text: str, opcode: str) -> dict[str, int]:
    """Mangled function -> instructions whose opcode is `opcode` (any suffix, e.g. HMMA.16816.F32)."""
    counts: dict[str, int] = {}
    pattern = re.compile(r"^\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?" + re.escape(opcode) + r"\b")
    function = None
    for line in text.splitlines():
        if m := _SASS_FUNCTION.match(line):
            function = m.group(1)
            counts.setdefault(function, 0)
        elif function is not None and pattern.match(line):
            counts[function] += 1
    return counts


def sass_opcode_counts(opcode: str, so: str | Path | None = None, cuobjdump: str | None = None) -> dict[str, int]:
    """Readable kernel name -> count of `opcode` in its SASS (summed over architectures)."""
    so = so or extension_path()
    cuobjdump = cuobjdump or find_cuobjdump()
    if so is None or cuobjdump is None:
        return {}
    counts = parse_sass_opcode_counts(_run(cuobjdump, "-sass", str(so)), opcode)
    names = demangle(sorted(counts))
    out: dict[str, int] = {}
    for mangled, n in counts.items():
        out[names[mangled]] = out.get(names[mangled], 0) + n
    return out


def environment_record() -> list[dict[str, Any]] | None:
    """The records as dicts for the bench environment; None without a CUDA build or cuobjdump."""
    try:
        records = kernel_resources()
    except (OSError, RuntimeError, subprocess.SubprocessError):
        return None
    return [asdict(r) for r in records] or None


def report_lines(machine_info: dict[str, Any]) -> list[str]:
    """Markdown table of the ``cuda_kernel_resources`` environment entry (nothing when absent)."""
    records = machine_info.get("cuda_kernel_resources")
    if not records:
        return []
    lines = [
        "## CUDA kernel resources",
        "",
        "Per thread: registers, stack frame (spills) and local memory; per block: static shared memory "
        "(from `cuobjdump --dump-resource-usage`).",
        "",
        "| kernel | arch | registers | shared (B) | stack (B) | local (B) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in sorted(records, key=lambda r: (r["kernel"], r["arch"])):
        lines.append(
            f"| `{r['kernel']}` | {r['arch']} | {r['registers']} | {r['shared']} | {r['stack']} | {r['local']} |"
        )
    return lines + [""]
