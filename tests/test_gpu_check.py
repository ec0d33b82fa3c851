"""bench/gpu_check.sh --dry-run: the one-call GPU check runs end to end without a GPU
(its GPU steps replaced by what can be checked here), and writes its summary and the
bench outputs, at most 8 files, into the folder it is given."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("timeout") is None, reason="needs coreutils' timeout")
def test_gpu_check_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # The budgets are sized for a GPU machine's 16 cores; the dry run's CPU stand-ins on
    # a loaded 2-core machine get more room.
    env = {**os.environ, "PYTHON": sys.executable, "BUDGET_SCALE": "4"}
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run(
        [str(REPO / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    log = (out / "steps.log").read_text() if (out / "steps.log").exists() else ""
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n{log[-3000:]}"
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted([
        "summary.md", "steps.log", "failures.log",
        "ops_results.json", "ops_report.md", "models_results.json", "models_report.md",
    ])
    summary = (out / "summary.md").read_text()
    assert "dry run" in summary and "torch: " in summary
    assert summary.count("| passed |") == 7, summary
    assert "FAILED" not in summary


def test_gpu_check_refuses_without_a_gpu(tmp_path: Path) -> None:
    """Without --dry-run on a machine with no GPU it stops at once and says why."""
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run([str(REPO / "bench" / "gpu_check.sh"), "--out", str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "no CUDA device" in proc.stderr
