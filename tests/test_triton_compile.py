"""Every Triton kernel the ops can launch compiles for sm_90a (no GPU needed), without
register spills, within the SM's registers and shared memory.

The compilation runs in a subprocess without ``TRITON_INTERPRET`` (this process may
have the interpreter on, which replaces ``triton.jit``): ``python -m
shufflenet_kernels.triton_kernels.aot`` records the launches of the ops over the
shapes of ``tests/cases.py``, all dtypes and both layouts, and compiles one
specialization per kernel tile, warps, stages and dtype (see ``aot.representatives``).
``SHUFFLENET_TRITON_REPORT=path`` also writes the resource table there.
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


def test_every_triton_kernel_compiles_for_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # The child imports the same shufflenet_kernels as this process.
    package_root = str(Path(shufflenet_kernels.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, str(ROOT), env.get("PYTHONPATH")) if p)
    report = tmp_path / "aot.json"
    table = os.environ.get("SHUFFLENET_TRITON_REPORT") or str(tmp_path / "aot.txt")
    cmd = [sys.executable, "-m", "shufflenet_kernels.triton_kernels.aot", "--cases", "tests.cases",
           "--jobs", str(min(4, os.cpu_count() or 1)), "--json", str(report), "--table", table]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    print(proc.stdout)
    assert report.exists(), f"the compile run failed (exit {proc.returncode}):\n{proc.stderr[-8000:]}"
    data = json.loads(report.read_text())
    rows = data["rows"]
    assert rows, "no kernel launch was recorded"
    kernels = {r["kernel"] for r in rows}
    expected = {"_gather_channels_kernel", "_pw_forward_kernel", "_pw_backward_input_kernel",
                "_pw_backward_weight_kernel", "_dw_forward_kernel", "_dw_backward_input_kernel",
                "_dw_backward_weight_kernel", "_sum_partials_kernel"}
    assert expected <= kernels, f"kernels never launched by the sweep: {sorted(expected - kernels)}"
    errors = [f"{r['kernel']} [{r['config']}] {r['specialization']}:\n{r['error']}" for r in rows if "error" in r]
    assert not errors, f"{len(errors)} kernels fail to compile for sm_90a:\n" + "\n\n".join(errors[:10])
    problems = [f"{r['kernel']} [{r['config']}] {r['specialization']}: {r['problem']}" for r in rows if "problem" in r]
    assert not problems, f"{len(problems)} kernels do not fit an SM:\n" + "\n".join(problems)
    assert proc.returncode == 0, proc.stderr[-8000:]
