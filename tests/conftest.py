"""Test session setup.

``SHUFFLENET_GPU_SAMPLE=N`` runs every N-th parametrisation of each GPU test (see
``_gpu_sample``).

Without a GPU the Triton kernels run under the Triton interpreter on CPU tensors;
the interpreter is chosen when Triton is imported, so the variable is set before
the package (and Triton) is imported.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The references are plain PyTorch: cuDNN runs float32 convolutions in TF32 by
# default, about 1e-3 off, so the float32 references are asked for IEEE float32.
# (The older flag: torch.export reads it, and refuses a mix of the older and newer ones.)
torch.backends.cudnn.allow_tf32 = False

import pytest  # noqa: E402

# Also registers torch.ops.shufflenet_triton when Triton is importable.
import shufflenet_kernels  # noqa: E402,F401


def _gpu_sample(config: pytest.Config, items: list[pytest.Item], every: int) -> None:
    """Keeps every ``every``-th parametrisation of each GPU test function (its first one
    always), deselecting the rest: a GPU available for minutes runs a spread of all the
    GPU tests instead of the first part of the list."""
    seen: dict[tuple[str, str], int] = {}
    kept, dropped = [], []
    for item in items:
        if "gpu" not in item.keywords:
            kept.append(item)
            continue
        key = (str(item.path), getattr(item, "originalname", item.name))
        index = seen.get(key, 0)
        seen[key] = index + 1
        (kept if index % every == 0 else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    every = int(os.environ.get("SHUFFLENET_GPU_SAMPLE", "1"))
    if every > 1:
        _gpu_sample(config, items, every)
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """With ``SHUFFLENET_FAILURE_LOG=PATH``, appends each failing test's report to PATH
    as it fails (bench/gpu_check.sh): a run stopped by a time limit never prints its
    summary of failures. Under pytest-xdist the controller writes, not the workers."""
    path = os.environ.get("SHUFFLENET_FAILURE_LOG")
    if not path or not report.failed or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    with open(path, "a", encoding="utf-8") as log:
        log.write(f"==== {report.nodeid} ({report.when})\n{report.longreprtext}\n\n")


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws the same random inputs whatever the order it runs in."""
    torch.manual_seed(0)
