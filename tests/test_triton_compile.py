"""Every Triton kernel the ops can launch compiles for sm_90a (no GPU needed), without
register spills, within the SM's registers and shared memory.

The compilation runs in a subprocess without ``TRITON_INTERPRET`` (this process may
have the interpreter on, which replaces ``triton.jit``): ``python -m
shufflenet_kernels.triton_kernels.aot`` records the launches of the ops over the
shapes of ``tests/cases.py``, all dtypes and both layouts, and compiles one
specialization per kernel tile, warps, stages, dtype and layout (see
``aot.representatives``).
``SHUFFLENET_TRITON_REPORT=path`` also writes the resource table there.

About 3 to 4 minutes on 2 cores (Triton 3.6: 372 specializations standing for ~9900
distinct launch bindings; recording the launches takes 20-30 s of that), before the
fused v2_unit kernel added 12 more (204 s in one process on a busy machine).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import shufflenet_kernels

pytestmark = [
    pytest.mark.triton,
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed"),
]

ROOT = Path(__file__).resolve().parent.parent


# Specializations that ptxas is known to make spill for sm_90a: (kernel, text in the
# specialization or "" for all); none at present. The pointwise GEMMs spilled in the
# general case (groups > 1, shuffle, every dtype; worst fp32 3xTF32, up to 3.6 KB)
# with int64 offsets per tile element, and the 7x7 stride-2 depthwise forward 16 B
# with int64 tap arithmetic: both use int32 unless a tensor needs more (numbers in
# triton_kernels/pointwise.py and depthwise.py).
KNOWN_SPILLS: set[tuple[str, str]] = set()


def _known_spill(r: dict) -> bool:
    return any(r["kernel"] == k and text in r["specialization"] for k, text in KNOWN_SPILLS)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    """Compiles every specialization once (a subprocess without the interpreter)."""
    tmp = tmp_path_factory.mktemp("triton-aot")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # The child imports the same shufflenet_kernels as this process.
    package_root = str(Path(shufflenet_kernels.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, str(ROOT), env.get("PYTHONPATH")) if p)
    report = tmp / "aot.json"
    table = os.environ.get("SHUFFLENET_TRITON_REPORT") or str(tmp / "aot.txt")
    cmd = [sys.executable, "-m", "shufflenet_kernels.triton_kernels.aot", "--cases", "tests.cases", "--per-layout",
           "--jobs", str(min(4, os.cpu_count() or 1)), "--json", str(report), "--table", table]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    print(proc.stdout)
    assert report.exists(), f"the compile run failed (exit {proc.returncode}):\n{proc.stderr[-8000:]}"
    return json.loads(report.read_text())


def _name(r: dict) -> str:
    return f"{r['kernel']} [{r['config']}] {r['specialization']}"


def test_every_triton_kernel_compiles_for_sm90(compiled):
    rows = compiled["rows"]
    kernels = {r["kernel"] for r in rows}
    expected = {"_gather_channels_kernel", "_pw_forward_kernel", "_pw_backward_input_kernel",
                "_pw_backward_weight_kernel", "_dw_forward_kernel", "_dw_backward_input_kernel",
                "_dw_backward_weight_kernel", "_sum_partials_kernel", "_v2_unit_kernel"}
    assert expected <= kernels, f"kernels never launched by the sweep: {sorted(expected - kernels)}"
    errors = [f"{_name(r)}:\n{r['error']}" for r in rows if "error" in r]
    assert not errors, f"{len(errors)} kernels fail to compile for sm_90a:\n" + "\n\n".join(errors[:10])


def test_every_triton_kernel_fits_an_sm(compiled):
    """Shared memory <= 227 KB and registers x threads <= 64K: the kernel can launch."""
    rows = [r for r in compiled["rows"] if "error" not in r]
    missing = [_name(r) for r in rows if r["registers"] is None]
    assert not missing, "no ptxas resource report for:\n" + "\n".join(missing)
    too_big = [f"{_name(r)}: {r['problem']}" for r in rows
               if "problem" in r and ("shared" in r["problem"] or "threads" in r["problem"])]
    assert not too_big, f"{len(too_big)} kernels cannot launch on an sm_90a SM:\n" + "\n".join(too_big)


def test_no_triton_kernel_spills(compiled):
    rows = [r for r in compiled["rows"] if "error" not in r and r["spill_bytes"]]
    new = [f"{_name(r)}: {r['registers']} registers, {r['spill_bytes']} B spilled"
           for r in rows if not _known_spill(r)]
    assert not new, f"{len(new)} kernels spill registers:\n" + "\n".join(new)
    known = [f"{_name(r)}: {r['spill_bytes']} B" for r in rows]
    if known:
        pytest.xfail(f"{len(known)} known specializations spill:\n" + "\n".join(known))
