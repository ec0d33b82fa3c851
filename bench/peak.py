"""The device's ceilings for the roofline plots, measured in the same run as the cases.

* compute: a square matmul (``torch.mm``) per dtype, in FLOP/s (2 n^3 per call);
  float32 on the CPU, float32 and float16 on a GPU (float32 with TF32 off, PyTorch's
  default);
* bandwidth: ``dst.copy_(src)`` of a buffer well beyond the last-level cache, in bytes
  read plus written per second (the op cases also record a copy of their own MAC bytes,
  which the roofline of each op family uses when present).

Sized to take well under a second in quick mode.
"""

from __future__ import annotations

from typing import Any

import torch

from .core import tensor
from .timing import TimingPlan, measure


def measure_peaks(device: torch.device, quick: bool = True) -> dict[str, Any]:
    """``{"gemm": [{"dtype", "n", "median_s", "gflops"}...], "copy": {"buffer_bytes", "bytes", "median_s", "gbps"}}``.

    ``bytes`` of the copy counts what is read and written (twice the buffer), like MAC.
    """
    gpu = device.type == "cuda"
    plan = TimingPlan(warmup=2, min_reps=3, max_reps=10 if quick else 30, budget_s=0.2 if quick else 0.5)
    if gpu:
        sizes = {torch.float32: 4096 if quick else 8192, torch.float16: 4096 if quick else 8192}
    else:
        sizes = {torch.float32: 512 if quick else 1024}
    gemm = []
    for dtype, n in sizes.items():
        a, b = tensor((n, n), dtype, device), tensor((n, n), dtype, device)
        c = torch.empty((n, n), dtype=dtype, device=device)
        stats = measure(lambda a=a, b=b, c=c: torch.mm(a, b, out=c), device, plan)
        t = stats["median"]
        gemm.append({"dtype": str(dtype).removeprefix("torch."), "n": n, "median_s": t, "gflops": 2 * n**3 / t / 1e9})
        del a, b, c
    nbytes = (1 << 30 if not quick else 256 << 20) if gpu else (64 << 20 if not quick else 32 << 20)
    src = torch.zeros(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    stats = measure(lambda: dst.copy_(src), device, plan)
    copy = {
        "buffer_bytes": nbytes,
        "bytes": 2 * nbytes,  # read + written
        "median_s": stats["median"],
        "gbps": 2 * nbytes / stats["median"] / 1e9,
    }
    return {"gemm": gemm, "copy": copy, "num_threads": torch.get_num_threads() if not gpu else None}
