"""Resources of the compiled CUDA kernels (``cuobjdump`` on the built ``_C``; no GPU).

Every kernel of the CUDA build: registers and static shared memory within the
hardware's limits, no stack frame beyond a few bytes (a stack frame means register
spills to local memory) except the documented allowance for the 64-bit index
instantiations, and tensor-core instructions (HMMA) in the SASS of the
tensor-core pointwise kernels. The parsers run on canned cuobjdump output
everywhere.

Skipped when ``_C`` has no CUDA code (a CPU-only build) or no cuobjdump is found;
with ``SHUFFLENET_EXPECT_CUDA=1`` (set where the extension was built with nvcc)
those fail instead.
"""

from __future__ import annotations

import os

import pytest

import shufflenet_kernels
from bench import cuda_resources as cr

EXPECT_CUDA = os.environ.get("SHUFFLENET_EXPECT_CUDA") == "1"

# A kernel may keep this many bytes of stack (an ABI call frame); more is spilling.
STACK_LIMIT = 8
# The int64-index instantiations run only for tensors with more than 2^31 elements;
# their 64-bit offsets double the registers of the index math, and a small spill
# there costs nothing next to the memory traffic of such a tensor.
INT64_STACK_LIMIT = 256
MAX_REGISTERS = 255
MAX_STATIC_SHARED = 48 * 1024


def _unavailable() -> str | None:
    if not shufflenet_kernels.has_cuda_kernels():
        return "shufflenet_kernels._C was built without CUDA code (no nvcc at build time)"
    if cr.find_cuobjdump() is None:
        return "no cuobjdump (CUDA toolkit or Triton's copy) found"
    return None


@pytest.fixture(scope="module")
def records() -> list[cr.KernelResources]:
    why = _unavailable()
    if why is not None:
        if EXPECT_CUDA:
            pytest.fail(f"SHUFFLENET_EXPECT_CUDA=1 but {why}")
        pytest.skip(why)
    found = cr.kernel_resources()
    assert found, "cuobjdump found no kernels in the CUDA build of _C"
    return found


@pytest.fixture(scope="module")
def hmma(records) -> dict[str, int]:
    return cr.sass_opcode_counts("HMMA")


def is_int64(r: cr.KernelResources) -> bool:
    return "long" in r.kernel


def test_every_kernel_family_is_compiled(records) -> None:
    families = {r.kernel.split("<")[0] for r in records}
    for family in ("pw_mma_kernel", "pw_wgrad_mma_kernel", "pw_gemm_kernel", "pw_wgrad_partial_kernel",
                   "pw_wgrad_finish_kernel"):
        assert family in families, sorted(families)
    assert all(r.arch.startswith("sm_") for r in records)


def test_registers_and_shared_memory_within_limits(records) -> None:
    over = [r for r in records if r.registers > MAX_REGISTERS or r.shared > MAX_STATIC_SHARED]
    assert not over, over


def test_no_register_spills(records) -> None:
    spilling = [
        (r.kernel, r.arch, r.stack, r.local)
        for r in records
        if r.local > 0 or r.stack > (INT64_STACK_LIMIT if is_int64(r) else STACK_LIMIT)
    ]
    assert not spilling, f"kernels with a stack frame (spills): {spilling}"


def test_tensor_core_kernels_use_hmma(records, hmma) -> None:
    mma = sorted({r.kernel for r in records if r.kernel.startswith(("pw_mma_kernel<", "pw_wgrad_mma_kernel<"))})
    assert mma
    missing = [k for k in mma if hmma.get(k, 0) == 0]
    assert not missing, f"tensor-core kernels without HMMA in their SASS: {missing}"
    ffma_only = [k for k in {r.kernel for r in records} if k.startswith("pw_gemm_kernel<") and hmma.get(k, 0)]
    assert not ffma_only, ffma_only


# ---- the parsers, on canned output ---------------------------------------------------

RESOURCE_SAMPLE = """
Fatbin elf code:
================
arch = sm_90a
code version = [1,8]
host = linux
compile_size = 64bit

Resource usage:
 Common:
  GLOBAL:0
 Function _Z8kernel_ai:
  REG:40 STACK:0 SHARED:8448 LOCAL:0 CONSTANT[0]:568 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function _Z8kernel_bPf:
  REG:255 STACK:24 SHARED:0 LOCAL:0 CONSTANT[0]:552 TEXTURE:0 SURFACE:0 SAMPLER:0
"""

SASS_SAMPLE = """
\tcode for sm_90a
\t\tFunction : _Z8kernel_ai
\t.headerflags\t@"EF_CUDA_TEXMODE_UNIFIED EF_CUDA_64BIT_ADDRESS EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0c40*/                   HMMA.16816.F32 R8, R4, R16, R8 ;
        /*0c50*/               @P0 HMMA.1688.F32.TF32 R12, R4, R18, R12 ;
        /*0c60*/                   FFMA R0, R1, R2, R0 ;
\t\t..........
\t\tFunction : _Z8kernel_bPf
        /*0000*/                   FFMA R0, R1, R2, R0 ;
"""


def test_parse_resource_usage() -> None:
    rows = cr.parse_resource_usage(RESOURCE_SAMPLE)
    assert rows == [("sm_90a", "_Z8kernel_ai", 40, 8448, 0, 0), ("sm_90a", "_Z8kernel_bPf", 255, 0, 24, 0)]


def test_parse_sass_opcode_counts() -> None:
    assert cr.parse_sass_opcode_counts(SASS_SAMPLE, "HMMA") == {"_Z8kernel_ai": 2, "_Z8kernel_bPf": 0}
    assert cr.parse_sass_opcode_counts(SASS_SAMPLE, "FFMA") == {"_Z8kernel_ai": 1, "_Z8kernel_bPf": 1}


def test_report_lines() -> None:
    rec = cr.KernelResources("k<float>", "_Z1k", "sm_90a", 40, 8448, 0, 0)
    lines = cr.report_lines({"cuda_kernel_resources": [rec.__dict__]})
    assert "| `k<float>` | sm_90a | 40 | 8448 | 0 | 0 |" in lines
    assert cr.report_lines({}) == []
