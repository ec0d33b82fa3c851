"""Test session setup.

Without a GPU the Triton kernels run under the Triton interpreter on CPU tensors;
the interpreter is chosen when Triton is imported, so the variable is set before
the package (and Triton) is imported.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# Also registers torch.ops.shufflenet_triton when Triton is importable.
import shufflenet_kernels  # noqa: E402,F401


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws the same random inputs whatever the order it runs in."""
    torch.manual_seed(0)
