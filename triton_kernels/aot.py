"""Ahead-of-time compilation of every Triton kernel the ops can launch, for a GPU
target (sm_90a by default), without a GPU.

The specializations are recorded from the ops themselves: each op runs on CPU
tensors over a sweep of shapes, dtypes, layouts and flags with its kernel launches
replaced by a recorder, so the block sizes, warps and constexprs are the ones the
launchers pick (and every config of an autotuned kernel). Each launch is bound the
way ``JITFunction.run`` binds it (int arguments equal to 1 become constants, 16-byte
divisibility becomes an attribute), deduplicated, and compiled with
``triton.compile`` for the target. Reported per kernel: registers per thread,
spill bytes (from ptxas), shared memory, and whether it fits one SM.

Run as ``python -m shufflenet_kernels.triton_kernels.aot`` with ``TRITON_INTERPRET``
unset (the interpreter replaces ``triton.jit``). ``--cases MODULE`` names a module
with ``shuffle_cases()``, ``concat_cases()``, ``pointwise_cases()`` and
``depthwise_cases()`` (default ``tests.cases``, the shapes of the test suite); the
fused ``v2_unit`` kernel is recorded on ``_V2_UNIT_CASES``. ``--kernel NAME`` compiles
only that kernel's specializations.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import io
import itertools
import json
import multiprocessing
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import torch

# Hopper (sm_90a) limits: dynamic shared memory per block, registers per SM.
MAX_SHARED_BYTES = 232448
MAX_REGISTERS_PER_SM = 65536
# Stand-in for the device's SM count (H200: 132); it only changes runtime split sizes.
_NUM_SMS = 132

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclasses.dataclass
class Spec:
    """One kernel specialization: what ``triton.compile`` gets."""

    kernel: str
    config: str
    specialization: str
    fn: Any = dataclasses.field(repr=False)
    signature: dict = dataclasses.field(repr=False)
    constexprs: dict = dataclasses.field(repr=False)
    attrs: dict = dataclasses.field(repr=False)
    options: dict = dataclasses.field(repr=False)
    launches: int = 1
    # Specializations this one stands for (see ``representatives``).
    covers: int = 1
    real: dict = dataclasses.field(default_factory=dict, repr=False)


# ---- recording launches ---------------------------------------------------------


class _Recorder:
    """Stands in for ``launch(kernel)[grid](*args, **kwargs)``; records instead of running."""

    def __init__(self) -> None:
        self.launches: list[tuple[Any, tuple, dict]] = []

    def __call__(self, kernel: Any) -> Any:
        recorder = self

        class _Grid:
            def __getitem__(self, grid: Any) -> Any:
                def run(*args: Any, **kwargs: Any) -> None:
                    recorder.launches.append((kernel, args, kwargs))

                return run

        return _Grid()


@contextlib.contextmanager
def _recording() -> Iterator[_Recorder]:
    from . import _common, channel_shuffle, depthwise, pointwise, v2_unit

    modules = (_common, channel_shuffle, depthwise, pointwise, v2_unit)
    recorder = _Recorder()
    saved = [(m, m.launch, getattr(m, "num_sms", None)) for m in modules]
    try:
        _common.REQUIRE_CUDA = False
        for m in modules:
            m.launch = recorder
            if hasattr(m, "num_sms"):
                m.num_sms = lambda device: _NUM_SMS
        yield recorder
    finally:
        _common.REQUIRE_CUDA = True
        for m, launch, sms in saved:
            m.launch = launch
            if sms is not None:
                m.num_sms = sms


def _layouts(t: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    out = [("nchw", t.contiguous())]
    if t.dim() == 4:
        out.append(("nhwc", t.contiguous(memory_format=torch.channels_last)))
    elif t.dim() == 5:
        out.append(("nhwc", t.contiguous(memory_format=torch.channels_last_3d)))
    return out


def _to_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if layout == "nhwc" else t.contiguous()


def record_launches(cases: Any) -> list[tuple[Any, tuple, dict]]:
    """Every kernel launch the ops make over ``cases``' shapes x DTYPES x layouts x flags."""
    ops = torch.ops.shufflenet_triton
    with _recording() as rec:
        for dtype in DTYPES:
            for case in cases.shuffle_cases():
                for _, x in _layouts(torch.zeros(case.shape, dtype=dtype)):
                    ops.channel_shuffle(x, case.groups)
            for case in cases.concat_cases():
                a = torch.zeros(case.shape, dtype=dtype)
                sizes_b = list(case.shape)
                sizes_b[1] = case.channels_b
                b = torch.zeros(sizes_b, dtype=dtype)
                for (_, aa), (_, bb) in itertools.product(_layouts(a), _layouts(b)):
                    y = ops.concat_shuffle(aa, bb, case.groups)
                    ops.concat_shuffle_backward(y, case.groups, case.shape[1])
            for case in cases.pointwise_cases():
                _pointwise(ops, case, dtype)
            for case in cases.depthwise_cases():
                _depthwise(ops, case, dtype)
            for stride, c_in, branch, hw in _V2_UNIT_CASES:
                _v2_unit(ops, stride, c_in, branch, hw, dtype)
    return rec.launches


_EPILOGUES = ((False, False), (True, True), (True, False), (False, True))  # (bias, relu)
_MASKS = ([True, True, True], [True, True, False], [False, False, True])


def _pointwise(ops: Any, case: Any, dtype: torch.dtype) -> None:
    x0 = torch.zeros(case.n, case.c_in, case.hw, case.hw, dtype=dtype)
    w = torch.zeros(case.c_out, case.c_in // case.groups, 1, 1, dtype=dtype)
    for layout in ("nchw", "nhwc"):
        x = _to_layout(x0, layout)
        for bias, relu in _EPILOGUES:
            b = torch.zeros(case.c_out, dtype=dtype) if bias else None
            y = ops.pointwise_conv(x, w, b, case.groups, case.shuffle_groups, relu)
            for mask in _MASKS:
                ops.pointwise_conv_backward(y, x, w, y if relu else None, case.groups, case.shuffle_groups, mask)


def _depthwise(ops: Any, case: Any, dtype: torch.dtype) -> None:
    x0 = torch.zeros(case.n, case.c, case.hw, case.hw, dtype=dtype)
    w = torch.zeros(case.c, 1, case.kernel, case.kernel, dtype=dtype)
    conv = ([case.stride] * 2, [case.padding] * 2, [case.dilation] * 2)
    for layout in ("nchw", "nhwc"):
        x = _to_layout(x0, layout)
        for bias, relu in _EPILOGUES:
            b = torch.zeros(case.c, dtype=dtype) if bias else None
            y = ops.depthwise_conv2d(x, w, b, *conv, relu)
            for mask in _MASKS:
                ops.depthwise_conv2d_backward(y, x, w, y if relu else None, *conv, mask)


# The fused V2 unit's tile and blocks do not depend on the widths: one case per stride
# (V2 x1.0 stage 3: a stride-2 unit from 116 channels, then the stride-1 units).
_V2_UNIT_CASES = ((1, 232, 116, 14), (2, 116, 116, 28))  # (stride, C_in, B, H = W)


def _v2_unit(ops: Any, stride: int, c_in: int, branch: int, hw: int, dtype: torch.dtype) -> None:
    def z(*sizes: int) -> torch.Tensor:
        return torch.zeros(sizes, dtype=dtype)

    k1 = branch if stride == 1 else c_in
    proj = (z(c_in, 1, 3, 3), z(c_in), z(branch, c_in, 1, 1), z(branch)) if stride == 2 else (None,) * 4
    weights = (z(branch, k1, 1, 1), z(branch), z(branch, 1, 3, 3), z(branch), z(branch, branch, 1, 1), z(branch))
    for layout in ("nchw", "nhwc"):
        ops.v2_unit(_to_layout(z(2, c_in, hw, hw), layout), *proj, *weights, stride)


# ---- binding and deduplication ------------------------------------------------------


def _target(arch: int) -> Any:
    from triton.backends.compiler import GPUTarget

    return GPUTarget("cuda", arch, 32)


def _describe(value: Any) -> str:
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    return repr(value)


def specializations(launches: list[tuple[Any, tuple, dict]], arch: int = 90) -> list[Spec]:
    """The distinct (kernel, signature, constants, attributes, options) of ``launches``,
    one per autotune config of an autotuned kernel, bound as ``JITFunction.run`` does."""
    from triton.compiler import make_backend
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import create_function_from_signature

    backend = make_backend(_target(arch))
    binders: dict[int, Any] = {}
    specs: dict[str, Spec] = {}
    for kernel, args, kwargs in launches:
        if isinstance(kernel, Autotuner):
            fn, configs = kernel.fn, list(kernel.configs)
        else:
            fn, configs = kernel, [None]
        binder = binders.get(id(fn))
        if binder is None:
            binder = binders[id(fn)] = create_function_from_signature(fn.signature, fn.params, backend)
        for config in configs:
            kw = dict(kwargs)
            if config is not None:
                kw.update(config.all_kwargs())
            kw.setdefault("debug", False)
            bound, specialization, opts = binder(*args, **kw)
            options, signature, constexprs, attrs = fn._pack_args(backend, kw, bound, specialization, opts)
            key = repr((fn.__name__, sorted(signature.items()), sorted(constexprs.items(), key=repr),
                        sorted(attrs.items()), sorted(options.__dict__.items(), key=repr)))
            if key in specs:
                specs[key].launches += 1
                continue
            names = list(fn.signature.parameters)
            meta = {names[p[0]]: v for p, v in constexprs.items() if len(p) == 1}
            block = {k: v for k, v in meta.items() if k.startswith("BLOCK")}
            flags = {
                k: v for k, v in meta.items() if not k.startswith("BLOCK") and fn.params[names.index(k)].is_constexpr
            }
            ptr_dtypes = sorted({v.lstrip("*") for v in signature.values() if v.startswith("*")})
            config_s = " ".join(f"{k}={v}" for k, v in block.items())
            config_s += f" w={options.num_warps} s={options.num_stages}"
            spec_s = "/".join(ptr_dtypes) + " " + ",".join(f"{k}={int(v)}" for k, v in flags.items())
            ones = [k for k, v in meta.items() if not fn.params[names.index(k)].is_constexpr]
            if ones:
                spec_s += " ones=" + ",".join(ones)
            specs[key] = Spec(
                kernel=fn.__name__,
                config=config_s,
                specialization=spec_s,
                fn=fn,
                signature=signature,
                constexprs=constexprs,
                attrs=attrs,
                options=dict(options.__dict__),
                real={k: v for k, v in meta.items() if fn.params[names.index(k)].is_constexpr},
            )
    return list(specs.values())


_GEOMETRY = ("KH", "KW", "SH", "SW", "DH", "DW")


_STRIDE = re.compile(r"_s[a-z]$")
# Constexprs other than BLOCK_* that shape a kernel's tile (see ``representatives``).
_TILE_CONSTEXPRS = ("STRIDE",)


def _unit_strides(s: Spec) -> tuple[str, ...]:
    """The stride arguments specialized to 1: which dim is contiguous (the layout)."""
    names = list(s.fn.signature.parameters)
    return tuple(sorted(names[p[0]] for p in s.constexprs if _STRIDE.search(names[p[0]]) and len(p) == 1
                        and names[p[0]] not in s.real))


def representatives(specs: list[Spec], per_layout: bool = False) -> list[Spec]:
    """One specialization per (kernel, tile constexprs, warps, stages, pointer dtypes).

    What sets a kernel's registers and shared memory is its tile (``BLOCK_*``, and
    ``_TILE_CONSTEXPRS`` such as the fused unit's ``STRIDE``), warps,
    pipeline stages and element types; the other constexprs (epilogue flags, conv
    geometry) and the runtime-int specializations (== 1, 16-divisible) add or remove
    some work around the same tile. Of each group the one doing the most is kept:
    most flags set, largest kernel window, then the fewest int arguments specialized
    to 1 (a constant 1 stride or group count removes index arithmetic and registers:
    the general case is the one that spills first). The rest are
    counted in ``covers``; ``--every-constexpr`` compiles each distinct constexpr set.
    ``per_layout``: one per layout too (which strides are 1), about 1.7x as many.
    """
    groups: dict[tuple, list[Spec]] = {}
    for s in specs:
        tile = tuple((k, v) for k, v in s.real.items() if k.startswith("BLOCK") or k in _TILE_CONSTEXPRS)
        ptrs = tuple(sorted({t for t in s.signature.values() if t.startswith("*")}))
        layout = _unit_strides(s) if per_layout else ()
        groups.setdefault((s.kernel, tile, s.options["num_warps"], s.options["num_stages"], ptrs, layout), []).append(s)

    def work(s: Spec) -> tuple:
        flags = sum(int(v) for k, v in s.real.items() if isinstance(v, bool) and k not in ("FP64",))
        window = s.real.get("KH", 1) * s.real.get("KW", 1)
        ones = len(s.constexprs) - len(s.real)
        return (flags, window, -ones, len(s.attrs))

    out = []
    for members in groups.values():
        best = max(members, key=work)
        best.covers = len(members)
        best.launches = sum(m.launches for m in members)
        out.append(best)
    return out


def every_constexpr(specs: list[Spec]) -> list[Spec]:
    """One specialization per distinct set of kernel constexprs, warps, stages and pointer dtypes."""
    groups: dict[str, list[Spec]] = {}
    for s in specs:
        ptrs = sorted({t for t in s.signature.values() if t.startswith("*")})
        key = repr((s.kernel, sorted(s.real.items()), s.options["num_warps"], s.options["num_stages"], ptrs))
        groups.setdefault(key, []).append(s)
    out = []
    for members in groups.values():
        best = max(members, key=lambda s: len(s.attrs) + len(s.constexprs))
        best.covers = len(members)
        best.launches = sum(m.launches for m in members)
        out.append(best)
    return out


# ---- compilation ---------------------------------------------------------------------

_JOBS: list[Spec] = []
_ARCH = 90
_USED = re.compile(r"Used (\d+) registers")
_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def _compile_one(index: int) -> dict:
    import triton
    from triton import knobs
    from triton.compiler import ASTSource

    spec = _JOBS[index]
    row = {"kernel": spec.kernel, "config": spec.config, "specialization": spec.specialization,
           "launches": spec.launches, "covers": spec.covers}
    start = time.perf_counter()
    log = io.StringIO()
    try:
        # ptxas's -v report (registers, spills) is printed when this knob is set.
        knobs.nvidia.dump_ptxas_log = True
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(
                ASTSource(spec.fn, spec.signature, spec.constexprs, spec.attrs),
                target=_target(_ARCH),
                options=spec.options,
            )
    except Exception as e:  # noqa: BLE001  (any compiler error is a result)
        row["error"] = f"{type(e).__name__}: {e}"[-4000:]
        row["seconds"] = round(time.perf_counter() - start, 2)
        return row
    text = log.getvalue()
    regs = [int(m) for m in _USED.findall(text)]
    spills = [int(a) + int(b) for a, b in _SPILL.findall(text)]
    row["registers"] = max(regs) if regs else None
    row["spill_bytes"] = sum(spills) if spills else None
    row["shared"] = compiled.metadata.shared
    row["num_warps"] = compiled.metadata.num_warps
    row["seconds"] = round(time.perf_counter() - start, 2)
    problems = []
    if row["registers"] is None or row["spill_bytes"] is None:
        problems.append("no ptxas resource report")
    else:
        if row["spill_bytes"] > 0:
            problems.append(f"spills {row['spill_bytes']} bytes")
        if row["registers"] * row["num_warps"] * 32 > MAX_REGISTERS_PER_SM:
            problems.append(f"{row['registers']} registers x {row['num_warps'] * 32} threads > {MAX_REGISTERS_PER_SM}")
    if row["shared"] > MAX_SHARED_BYTES:
        problems.append(f"shared memory {row['shared']} > {MAX_SHARED_BYTES} bytes")
    if problems:
        row["problem"] = "; ".join(problems)
    return row


def compile_all(specs: list[Spec], jobs: int, arch: int = 90) -> list[dict]:
    """Compiles ``specs`` in ``jobs`` forked processes (each with its own empty Triton
    cache, so ptxas really runs and reports); rows in ``specs`` order."""
    global _JOBS, _ARCH
    _JOBS, _ARCH = specs, arch
    with tempfile.TemporaryDirectory(prefix="shufflenet-aot-") as cache:
        os.environ["TRITON_CACHE_DIR"] = cache
        if jobs <= 1:
            return [_compile_one(i) for i in range(len(specs))]
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            return pool.map(_compile_one, range(len(specs)), chunksize=1)


def format_table(rows: list[dict]) -> str:
    head = ("kernel", "config", "dtype/specialization", "regs", "spill B", "smem B", "")
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append((r["kernel"], r["config"], r["specialization"], "-", "-", "-", "COMPILE ERROR"))
            continue
        lines.append((r["kernel"], r["config"], r["specialization"], str(r["registers"]), str(r["spill_bytes"]),
                      str(r["shared"]), r.get("problem", "")))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="tests.cases", help="module with the *_cases() shape lists")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--arch", type=int, default=90, help="compute capability (90 -> sm_90a)")
    parser.add_argument("--json", help="write the rows as JSON here")
    parser.add_argument("--table", help="write the table here")
    parser.add_argument("--limit", type=int, help="compile only the first N specializations")
    parser.add_argument("--every-constexpr", action="store_true",
                        help="compile every distinct constexpr set, not one per tile (about 8x longer)")
    parser.add_argument("--per-layout", action="store_true", help="one specialization per tile and layout")
    parser.add_argument("--kernel", action="append", help="compile only this kernel (repeatable)")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("TRITON_INTERPRET=1: kernels are interpreted, nothing to compile", file=sys.stderr)
        return 2
    start = time.perf_counter()
    launches = record_launches(importlib.import_module(args.cases))
    bound = specializations(launches, args.arch)
    specs = every_constexpr(bound) if args.every_constexpr else representatives(bound, args.per_layout)
    if args.kernel:
        specs = [s for s in specs if s.kernel in args.kernel]
    if args.limit is not None:
        specs = specs[: args.limit]
    recorded = time.perf_counter() - start
    rows = compile_all(specs, args.jobs, args.arch)
    elapsed = time.perf_counter() - start
    table = format_table(rows)
    failed = [r for r in rows if "error" in r or "problem" in r]
    summary = (f"{len(rows)} specializations of {len({r['kernel'] for r in rows})} kernels "
               f"(standing for {len(bound)} distinct bindings of {len(launches)} recorded launches, "
               f"{recorded:.1f} s) compiled for sm_{args.arch}a "
               f"in {elapsed:.1f} s with {args.jobs} processes; {len(failed)} failing")
    print(table)
    print(summary)
    if args.table:
        with open(args.table, "w") as f:
            f.write(table + "\n" + summary + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"arch": args.arch, "seconds": elapsed, "rows": rows, "summary": summary}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
