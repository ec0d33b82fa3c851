"""Cases, providers and the pytest-benchmark-compatible records the suite writes.

A ``Case`` is one workload (op, direction, shape, batch, dtype, layout) with the bytes
it must move (MAC) and its multiply-adds. Its ``Provider``s are the implementations
timed on it in the same run: these kernels (one per backend present), eager PyTorch,
``torch.compile`` of the eager reference, and a device copy of the MAC bytes (the
bandwidth roofline). ``run_case`` times each provider and returns one record per
provider in the layout of pytest-benchmark's JSON ``benchmarks`` list, with the derived
figures (GB/s, % of copy, speedups) in ``extra_info``.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .timing import L2Flusher, TimingPlan, measure

# Roles a provider plays in the derived figures.
KERNEL, EAGER, COMPILE, COPY, OTHER = "kernel", "eager", "compile", "copy", "other"

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


@dataclass
class Provider:
    """One implementation of a case: ``build()`` returns the zero-argument callable to time.

    Building is lazy so that ``torch.compile`` runs only for the providers measured;
    a build that raises marks the provider skipped with the error as the reason. A
    callable with ``skip_check = True`` (e.g. a module whose weights could not be
    shared with the reference) is timed without comparing its output.
    """

    name: str
    role: str
    build: Callable[[], Callable[[], Any]]


@dataclass
class Case:
    """A workload and the providers timed on it (see the module docstring)."""

    family: str
    direction: str
    label: str
    params: dict[str, Any]
    mac_bytes: int | None
    flops: int | None
    providers: list[Provider]
    flush_l2: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def param_id(self) -> str:
        p = self.params
        parts = [self.label]
        for key in ("batch", "dtype", "layout"):
            if key in p:
                parts.append(f"N{p[key]}" if key == "batch" else str(p[key]))
        return "-".join(parts)

    @property
    def group(self) -> str:
        return f"{self.family}-{self.direction}[{self.param_id}]"


@dataclass
class Skip:
    """A provider or case that was not measured, and why."""

    what: str
    reason: str


def tensor(
    shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, layout: str = "nchw"
) -> torch.Tensor:
    """Random normal tensor of ``shape``; ``layout`` "channels_last" gives an NHWC-strided 4-D tensor."""
    t = torch.randn(shape, dtype=torch.float32, device=device).to(dtype)
    if layout == "channels_last" and t.dim() == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def copy_provider(mac_bytes: int, dtype: torch.dtype, device: torch.device) -> Provider:
    """``dst.copy_(src)`` moving ``mac_bytes`` in all (half read, half written)."""

    def build() -> Callable[[], Any]:
        elem = torch.empty((), dtype=dtype).element_size()
        n = max(1, math.ceil(mac_bytes / 2 / elem))
        src = torch.zeros(n, dtype=dtype, device=device)
        dst = torch.empty_like(src)
        return lambda: dst.copy_(src)

    return Provider("copy", COPY, build)


# ---- correctness of what is timed ---------------------------------------------------


def _tolerance(dtype: torch.dtype) -> float:
    return 2e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-5


def outputs_match(got: Any, want: Any) -> bool:
    """True when every tensor of ``got`` equals ``want``'s within the dtype's tolerance.

    The error is measured against the largest magnitude of the expected tensor
    (``max|got - want| <= tol * max(1, max|want|)``): gradients of weights are sums over
    the batch and the map, whose rounding depends on the summation order, so an
    element-wise relative test would reject correct results at entries near zero.
    Empty placeholders (``[0]`` tensors for gradients not asked for) are skipped.
    """
    g_leaves, _ = tree_flatten(got)
    w_leaves, _ = tree_flatten(want)
    g_leaves = [t for t in g_leaves if isinstance(t, torch.Tensor) and t.numel()]
    w_leaves = [t for t in w_leaves if isinstance(t, torch.Tensor) and t.numel()]
    if len(g_leaves) != len(w_leaves):
        return False
    for g, w in zip(g_leaves, w_leaves, strict=True):
        if g.shape != w.shape:
            return False
        g32, w32 = g.float(), w.float()
        scale = max(1.0, w32.abs().max().item())
        if not (g32 - w32).abs().max().item() <= _tolerance(w.dtype) * scale:
            return False
    return True


# ---- MAC and FLOPs of a whole module, by counting what eager PyTorch runs ---------------


class _TrafficCounter(TorchDispatchMode):
    """Sums the bytes every non-view aten op reads and writes (inputs + outputs, once each)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        if not getattr(func, "is_view", False):
            leaves, _ = tree_flatten((args, kwargs, out))
            self.bytes += sum(t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor))
        return out


def count_cost(fn: Callable[[], Any]) -> tuple[int, int]:
    """``(mac_bytes, multiply_adds)`` of one call of ``fn`` as eager PyTorch runs it.

    MAC sums every aten op's tensor inputs and outputs (views excluded), i.e. the
    traffic of the unfused eager graph; FLOPs come from ``FlopCounterMode`` (which
    counts 2 per multiply-add) halved to multiply-adds.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = _TrafficCounter()
    flops = FlopCounterMode(display=False)
    with flops, counter:
        fn()
    return counter.bytes, flops.get_total_flops() // 2


# ---- running a case ---------------------------------------------------------------


@dataclass
class RunContext:
    """Where and how cases run; shared by every case of one invocation."""

    device: torch.device
    plan: TimingPlan
    env: dict[str, Any]
    flusher: L2Flusher | None = None
    skips: list[Skip] = field(default_factory=list)
    check: bool = True


def _record(case: Case, provider: Provider, stats: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    name = f"{case.family}_{case.direction}[{case.param_id}-{provider.name}]"
    params = dict(case.params, provider=provider.name, direction=case.direction, shape=case.label)
    extra: dict[str, Any] = {
        "family": case.family,
        "direction": case.direction,
        "label": case.label,
        "provider": provider.name,
        "role": provider.role,
        "mac_bytes": case.mac_bytes,
        "flops": case.flops,
        "flops_unit": "multiply-adds",
        "median_s": stats["median"],
        **case.extra,
        **ctx.env,
    }
    for key in ("dtype", "layout", "batch"):
        if key in case.params:
            extra[key] = case.params[key]
    return {
        "group": case.group,
        "name": name,
        "fullname": f"bench/{case.family}::{name}",
        "params": params,
        "param": f"{case.param_id}-{provider.name}",
        "extra_info": extra,
        "options": {
            "timer": "cuda_event" if ctx.device.type == "cuda" else "perf_counter",
            "warmup": ctx.plan.warmup,
            "min_rounds": ctx.plan.min_reps,
            "max_time": ctx.plan.budget_s,
            "l2_flush": bool(case.flush_l2 and ctx.flusher),
        },
        "stats": stats,
    }


def add_derived(records: list[dict[str, Any]]) -> None:
    """Adds GB/s, % of copy rate and speedups vs eager / compile to the records of one case."""
    by_role: dict[str, float] = {}
    for r in records:
        role = r["extra_info"]["role"]
        if role in (EAGER, COMPILE, COPY) and role not in by_role:
            by_role[role] = r["stats"]["median"]
    copy_gbps = None
    for r in records:
        e = r["extra_info"]
        t = r["stats"]["median"]
        mac_bytes = e.get("mac_bytes")
        if mac_bytes and t > 0:
            e["gbps"] = mac_bytes / t / 1e9
            if e["role"] == COPY:
                copy_gbps = e["gbps"]
        if e.get("fused_mac_bytes") and t > 0:
            e["fused_gbps"] = e["fused_mac_bytes"] / t / 1e9
        if t > 0:
            e["items_per_s"] = 1.0 / t
            if EAGER in by_role:
                e["speedup_vs_eager"] = by_role[EAGER] / t
            if COMPILE in by_role:
                e["speedup_vs_compile"] = by_role[COMPILE] / t
    if copy_gbps:
        for r in records:
            e = r["extra_info"]
            if "gbps" in e:
                e["copy_gbps"] = copy_gbps
                e["pct_of_copy"] = 100.0 * e["gbps"] / copy_gbps


def run_case(
    case: Case, ctx: RunContext, on_provider: Callable[[], None] | None = None
) -> list[dict[str, Any]]:
    """Times every provider of ``case``; returns their records (derived figures included)."""
    records = []
    reference_out: Any = None
    for provider in case.providers:
        try:
            fn = provider.build()
            out = fn()
            if ctx.device.type == "cuda":
                torch.cuda.synchronize()
        except Exception as exc:  # a backend missing or failing on this case is reported, not fatal
            ctx.skips.append(
                Skip(f"{case.group} {provider.name}", f"{type(exc).__name__}: {exc}".split("\n")[0])
            )
            if on_provider:
                on_provider()
            continue
        matches = None
        if provider.role == EAGER and reference_out is None:
            reference_out = out
        elif (
            provider.role in (KERNEL, OTHER)
            and ctx.check
            and reference_out is not None
            and not getattr(fn, "skip_check", False)
        ):
            matches = outputs_match(out, reference_out)
        del out
        flush = ctx.flusher if case.flush_l2 else None
        stats = measure(fn, ctx.device, ctx.plan, flush)
        rec = _record(case, provider, stats, ctx)
        if matches is not None:
            rec["extra_info"]["matches_reference"] = matches
        records.append(rec)
        del fn
        if on_provider:
            on_provider()
    add_derived(records)
    return records


# ---- environment --------------------------------------------------------------------


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=10, cwd=Path(__file__).resolve().parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def commit_info() -> dict[str, Any]:
    """pytest-benchmark's ``commit_info``: id, time, dirty flag, branch, project."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "id": commit or "unknown",
        "time": _git("show", "-s", "--pretty=format:%cI") if commit else None,
        "author_time": _git("show", "-s", "--pretty=format:%aI") if commit else None,
        "dirty": bool(status),
        "project": "shufflenet-kernels",
        "branch": _git("rev-parse", "--abbrev-ref", "HEAD") or "(unknown)",
    }


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    """Device, GPU name, versions, threads and date, recorded in every record and the header."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    import shufflenet_kernels as sk

    env = {
        "device": device.type,
        "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu_name": cpu_name(),
        "torch_version": torch.__version__,
        "triton_version": triton_version,
        "cuda_version": torch.version.cuda,
        "shufflenet_kernels_version": sk.__version__,
        "num_threads": torch.get_num_threads(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        env["cudnn_version"] = torch.backends.cudnn.version()
        env["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    if sk.has_cuda_kernels():
        from .cuda_resources import environment_record

        # Registers, shared memory and stack of every CUDA kernel (cuobjdump; no GPU needed).
        env["cuda_kernel_resources"] = environment_record()
    return env


def machine_info(env: dict[str, Any]) -> dict[str, Any]:
    """pytest-benchmark's ``machine_info`` plus the torch/GPU facts of ``environment``."""
    uname = platform.uname()
    return {
        "node": uname.node,
        "processor": uname.processor,
        "machine": uname.machine,
        "python_compiler": platform.python_compiler(),
        "python_implementation": platform.python_implementation(),
        "python_implementation_version": platform.python_version(),
        "python_version": platform.python_version(),
        "python_build": list(platform.python_build()),
        "release": uname.release,
        "system": uname.system,
        "cpu": {"brand_raw": env.get("cpu_name"), "count": os.cpu_count()},
        **{k: v for k, v in env.items() if k != "date"},
    }


def results_document(
    records: list[dict[str, Any]], env: dict[str, Any], skips: list[Skip], settings: dict[str, Any]
) -> dict[str, Any]:
    """The ``results.json`` document: pytest-benchmark's top level plus the run's settings and skips."""
    try:
        from pytest_benchmark import __version__ as pb_version
    except ImportError:
        pb_version = "5.1.0"
    return {
        "machine_info": machine_info(env),
        "commit_info": commit_info(),
        "benchmarks": records,
        "datetime": env["date"],
        "version": pb_version,
        "shufflenet_bench": {
            "settings": settings,
            "skipped": [{"what": s.what, "reason": s.reason} for s in skips],
            "python": sys.version.split()[0],
        },
    }
