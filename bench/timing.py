"""Timers and the statistics record of one measurement (pytest-benchmark's ``stats``).

GPU: one CUDA event pair per repetition on the current stream, after warm-up; for
memory-bound cases a buffer larger than the L2 cache is overwritten before each
repetition so every repetition starts from a cold cache (what ``triton.testing.do_bench``
does). CPU: ``time.perf_counter`` around each repetition after warm-up; an op faster
than ``MIN_CPU_ROUND_S`` is called several times per repetition (pytest-benchmark's
``iterations``) so timer resolution does not matter. The figure the suite reports is
the median.
"""

from __future__ import annotations

import statistics
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

# A CPU repetition shorter than this is repeated in a loop: perf_counter's resolution is
# far finer, but scheduling noise on a 2-core machine is tens of microseconds.
MIN_CPU_ROUND_S = 2e-4


@dataclass
class TimingPlan:
    """How long to measure one case: warm-up calls, repetition bounds and a time budget."""

    warmup: int = 3
    min_reps: int = 5
    max_reps: int = 100
    budget_s: float = 0.2


def _quartiles(data: list[float]) -> tuple[float, float]:
    """Q1 and Q3 by the same rule as pytest-benchmark's ``Stats``."""
    n = len(data)
    if n == 1:
        return data[0], data[0]
    if n % 2:
        k, r = n // 4, n % 4
        if r == 1:
            q1 = 0.25 * data[k - 1] + 0.75 * data[k]
            q3 = 0.75 * data[3 * k] + 0.25 * data[3 * k + 1]
        else:
            q1 = 0.75 * data[k] + 0.25 * data[k + 1]
            q3 = 0.25 * data[3 * k + 1] + 0.75 * data[3 * k + 2]
        return q1, q3
    return statistics.median(data[: n // 2]), statistics.median(data[n // 2 :])


def make_stats(data: list[float], iterations: int = 1) -> dict[str, Any]:
    """pytest-benchmark's ``stats`` dict (seconds per call) for repetition times ``data``."""
    if not data:
        raise ValueError("make_stats: no timings")
    s = sorted(data)
    n = len(s)
    mean = statistics.mean(s)
    stddev = statistics.stdev(s) if n > 1 else 0.0
    q1, q3 = _quartiles(s)
    iqr = q3 - q1
    low, high = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    ld15 = s[0] if n == 1 else s[bisect_left(s, low)]
    hd15 = s[0] if n == 1 else s[bisect_right(s, high) - 1]
    std_out = sum(1 for v in s if v < mean - stddev or v > mean + stddev)
    iqr_out = sum(1 for v in s if v < low or v > high)
    total = sum(s)
    return {
        "min": s[0],
        "max": s[-1],
        "mean": mean,
        "stddev": stddev,
        "rounds": n,
        "median": statistics.median(s),
        "iqr": iqr,
        "q1": q1,
        "q3": q3,
        "iqr_outliers": iqr_out,
        "stddev_outliers": std_out,
        "outliers": f"{std_out};{iqr_out}",
        "ld15iqr": ld15,
        "hd15iqr": hd15,
        "ops": n / total if total else 0.0,
        "total": total,
        "data": list(data),
        "iterations": iterations,
    }


def _reps_for(one_call_s: float, plan: TimingPlan) -> int:
    if one_call_s <= 0:
        return plan.max_reps
    return max(plan.min_reps, min(plan.max_reps, int(plan.budget_s / one_call_s)))


def time_cpu(fn: Callable[[], Any], plan: TimingPlan) -> dict[str, Any]:
    """Median-ready timings of ``fn`` on the CPU; returns ``make_stats`` of seconds per call."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    for _ in range(max(plan.warmup - 1, 0)):
        fn()
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    one = min(one, first)
    iterations = max(1, int(MIN_CPU_ROUND_S / one)) if one > 0 else 1
    reps = _reps_for(one * iterations, plan)
    data = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(iterations):
            fn()
        data.append((time.perf_counter() - t0) / iterations)
    return make_stats(data, iterations)


class L2Flusher:
    """Overwrites a buffer larger than the GPU's L2 cache (4x its size, at least 64 MiB)."""

    def __init__(self, device: torch.device) -> None:
        props = torch.cuda.get_device_properties(device)
        l2 = int(getattr(props, "L2_cache_size", 0) or 50 * 2**20)
        self.buffer = torch.empty(max(4 * l2, 64 * 2**20), dtype=torch.int8, device=device)

    def __call__(self) -> None:
        self.buffer.zero_()


def time_cuda(fn: Callable[[], Any], plan: TimingPlan, flush: L2Flusher | None = None) -> dict[str, Any]:
    """CUDA-event timings of ``fn`` (current stream), the L2 flushed before each rep if ``flush``."""
    for _ in range(max(plan.warmup, 1)):
        fn()
    torch.cuda.synchronize()
    # Estimate one call from a short burst to size the repetition count.
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(3):
        fn()
    end.record()
    torch.cuda.synchronize()
    reps = _reps_for(start.elapsed_time(end) / 3e3, plan)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        if flush is not None:
            flush()
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return make_stats([s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends, strict=True)])


def measure(
    fn: Callable[[], Any], device: torch.device, plan: TimingPlan, flush: L2Flusher | None = None
) -> dict[str, Any]:
    """Times ``fn`` on ``device`` (CUDA events on a GPU, perf_counter on the CPU)."""
    if device.type == "cuda":
        return time_cuda(fn, plan, flush)
    return time_cpu(fn, plan)
