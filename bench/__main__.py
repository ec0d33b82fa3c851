"""``python -m bench``: time the ops, units, models and guideline experiments; write the report.

Writes ``results.json`` (pytest-benchmark's JSON layout, so ``pytest-benchmark compare
a.json b.json`` works), ``report.md`` and PNG plots to ``--out``, and prints a summary.
Without a GPU the default is a quick CPU run (a few minutes on two cores). A square
GEMM and a large copy, timed at the end of the run (``bench.peak``), give the roofline
plots their ceilings. ``--models`` on the CPU adds the whole-model comparison with
torch.compile, ONNX Runtime and OpenVINO (``bench.models_cpu``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch._dynamo

from . import models_cpu
from .core import DTYPES, Case, RunContext, Skip, environment, results_document, run_case
from .guidelines import WIDTHS, guideline_cases
from .ops_cases import OPS, kernel_namespaces, op_cases
from .peak import measure_peaks
from .report import format_summary, write_report
from .timing import L2Flusher, TimingPlan
from .units import model_cases, unit_cases

FAMILIES: tuple[str, ...] = (*OPS, "units", "models", "guidelines")
LAYOUTS: tuple[str, ...] = ("nchw", "channels_last")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available, else cpu"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_true",
        default=None,
        help="few shapes, one batch, short timing (the default on the CPU)",
    )
    mode.add_argument(
        "--full",
        action="store_true",
        help="every ShuffleNet width and the 5x5/7x7 depthwise shapes; never quick",
    )
    p.add_argument(
        "--ops",
        nargs="+",
        choices=FAMILIES,
        default=None,
        metavar="OP",
        help=f"subset of {', '.join(FAMILIES)} (default: all)",
    )
    p.add_argument("--guidelines", action="store_true", help="only the G1-G4 guideline experiments")
    p.add_argument(
        "--models",
        action="store_true",
        help="only the whole models: the models family and, on the CPU, torchvision's ShuffleNetV2 "
        "x0.5/x1.0/x2.0 against torch.compile, ONNX Runtime and OpenVINO (bench.models_cpu; every row "
        "unless --quick is given, which runs its smoke mode)",
    )
    p.add_argument(
        "--dtypes",
        nargs="+",
        choices=tuple(DTYPES),
        default=None,
        help="default: all three on a GPU, float32 on the CPU",
    )
    p.add_argument(
        "--batch",
        nargs="+",
        type=int,
        default=None,
        help="batch sizes (default: 1 32 256 on a GPU; 8 on the CPU, 1 for models)",
    )
    p.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    p.add_argument("--directions", nargs="+", choices=("fwd", "bwd"), default=["fwd", "bwd"])
    p.add_argument(
        "--compile-limit",
        type=int,
        default=None,
        help="torch.compile providers per op and direction (-1: all; default: 1 in quick "
        "CPU runs, 2 in quick GPU runs, 12 in other GPU runs (compiling every case of the full "
        "sweep would take over an hour), all in other CPU runs)",
    )
    p.add_argument("--max-shapes", type=int, default=None, help="keep only the first N shapes per op")
    p.add_argument("--guideline-batch", type=int, default=None, help="default: 8 on a GPU, 1 on the CPU")
    p.add_argument("--reps", type=int, default=None, help="maximum repetitions per measurement")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on the CPU")
    p.add_argument("--out", type=Path, default=Path("bench/out"))
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-peak", action="store_true", help="skip the GEMM / copy ceilings of the roofline plots")
    p.add_argument("--no-check", action="store_true", help="skip comparing kernel outputs with eager")
    return p.parse_args(argv)


class _Progress:
    """tqdm when importable, else a one-line counter on stderr."""

    def __init__(self, total: int) -> None:
        try:
            from tqdm import tqdm

            self.bar: Any = tqdm(total=total, unit="case", dynamic_ncols=True, file=sys.stderr)
        except ImportError:
            self.bar = None
        self.total, self.done, self.t0 = total, 0, time.perf_counter()

    def update(self, desc: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_description_str(desc[:60])
            self.bar.update(1)
        else:
            elapsed = time.perf_counter() - self.t0
            print(
                f"\r[{self.done}/{self.total}] {elapsed:6.1f}s {desc[:60]:<60}",
                end="",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            print(file=sys.stderr)


def _settings(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    gpu = device.type == "cuda"
    quick = (not gpu) if args.quick is None and not args.full else bool(args.quick)
    families = list(args.ops) if args.ops else list(FAMILIES)
    if args.guidelines:
        families = ["guidelines"]
    if args.models:
        families = ["models"]
    dtypes = args.dtypes or (list(DTYPES) if gpu else ["float32"])
    if args.batch:
        batches, model_batches = list(args.batch), list(args.batch)
    elif gpu:
        batches, model_batches = ([32] if quick else [1, 32, 256]), ([8] if quick else [1, 32, 256])
    else:
        batches, model_batches = [8], [1]
    if args.compile_limit is not None:
        compile_limit = args.compile_limit
    else:
        compile_limit = (2 if gpu else 1) if quick else (12 if gpu else -1)
    if quick:
        plan = TimingPlan(warmup=2, min_reps=3, max_reps=args.reps or 30, budget_s=0.1)
    else:
        plan = TimingPlan(
            warmup=5 if gpu else 3, min_reps=10 if gpu else 5, max_reps=args.reps or 200, budget_s=0.2
        )
    return {
        "device": device.type,
        "quick": quick,
        "full": bool(args.full),
        "families": families,
        "dtypes": dtypes,
        "batches": batches,
        "model_batches": model_batches,
        "layouts": list(args.layouts),
        "directions": list(args.directions),
        "compile_limit": compile_limit,
        "max_shapes": args.max_shapes,
        "guideline_batch": args.guideline_batch or (8 if gpu else 1),
        "guideline_widths": [1] if quick else list(WIDTHS),
        # The whole-model baseline comparison: asked for with --models, or part of a --full CPU run.
        "models_cpu": not gpu and (bool(args.models) or bool(args.full)),
        "models_cpu_quick": bool(args.quick),
        "timing": {
            "warmup": plan.warmup,
            "min_reps": plan.min_reps,
            "max_reps": plan.max_reps,
            "budget_s": plan.budget_s,
        },
        "_plan": plan,
    }


def _factories(s: dict[str, Any], device: torch.device, notes: list[str]) -> list[tuple[str, Callable]]:
    dtypes = [DTYPES[d] for d in s["dtypes"]]
    out: list[tuple[str, Callable[[], list[Case]]]] = []
    for fam in s["families"]:
        if fam in OPS:
            out += [
                (fam, f)
                for f in op_cases(
                    fam,
                    device,
                    s["batches"],
                    dtypes,
                    s["layouts"],
                    quick=s["quick"],
                    full=s["full"],
                    compile_limit=s["compile_limit"],
                    directions=s["directions"],
                    max_shapes=s["max_shapes"],
                )
            ]
        elif fam == "units":
            out += [
                (fam, f)
                for f in unit_cases(
                    device,
                    s["batches"],
                    dtypes,
                    s["layouts"][:1] if s["quick"] else s["layouts"],
                    s["compile_limit"],
                    notes,
                )
            ]
        elif fam == "models":
            out += [
                (fam, f)
                for f in model_cases(
                    device,
                    s["model_batches"],
                    dtypes[:1] if s["quick"] else dtypes,
                    s["layouts"][:1] if s["quick"] else s["layouts"],
                    s["compile_limit"],
                    notes,
                )
            ]
        elif fam == "guidelines":
            g_dtype = torch.float32 if "float32" in s["dtypes"] else dtypes[0]
            out += [
                (fam, f)
                for f in guideline_cases(device, s["guideline_batch"], g_dtype, s["guideline_widths"])
            ]
    return out


def _models_cpu(args: argparse.Namespace, quick: bool) -> dict[str, Any]:
    """Runs ``bench.models_cpu`` (its smoke mode when ``quick``) with this run's thread count, if given."""
    opts = models_cpu.parse_args(["--quick"] if quick else [])
    if args.threads:
        opts.threads = [args.threads]
    doc = models_cpu.run(**models_cpu.settings_from(opts))
    doc["settings"]["quick"] = quick
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bench``; returns the process exit code."""
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available", file=sys.stderr)
        return 2
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # eager's best cuDNN algorithms, as in the paper's setup
    # Every case compiles its own shape-specialised graph: raise dynamo's recompile limits.
    for name in (
        "cache_size_limit",
        "recompile_limit",
        "accumulated_cache_size_limit",
        "accumulated_recompile_limit",
    ):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 4096)

    s = _settings(args, device)
    plan: TimingPlan = s.pop("_plan")
    env = environment(device)
    kernels = [name for name, _ in kernel_namespaces(device)]
    s["kernel_backends"] = kernels
    notes: list[str] = []
    if not kernels:
        notes.append(f"no kernels of shufflenet_kernels usable on {device.type}: timing the references only")
    if s["compile_limit"] >= 0:
        notes.append(
            f"torch.compile measured on the first {s['compile_limit']} case(s) per op and direction only "
            "(and per unit/model family): compilation time bounds the run; --compile-limit -1 compiles all"
        )
    factories = _factories(s, device, notes)
    if device.type == "cuda" and args.models:
        notes.append("models: the comparison with ONNX Runtime and OpenVINO runs on the CPU only (--device cpu)")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    ctx = RunContext(
        device=device,
        plan=plan,
        env=env,
        check=not args.no_check,
        flusher=L2Flusher(device) if device.type == "cuda" else None,
    )
    records: list[dict[str, Any]] = []
    progress = _Progress(len(factories))
    t0 = time.perf_counter()
    with torch.no_grad():
        for fam, factory in factories:
            try:
                cases = factory()
            except Exception as exc:  # one unbuildable case must not lose the rest of the run
                ctx.skips.append(Skip(fam, f"{type(exc).__name__}: {exc}".split("\n")[0]))
                progress.update(f"{fam} (skipped)")
                continue
            for case in cases:
                records += run_case(case, ctx)
            progress.update(cases[-1].group if cases else fam)
            del cases
    progress.close()
    extra: dict[str, Any] = {}
    if not args.no_peak:
        with torch.no_grad():
            extra["peaks"] = measure_peaks(device, quick=s["quick"])
    if s["models_cpu"]:
        extra["models_cpu"] = _models_cpu(args, s["models_cpu_quick"])
    s["wall_s"] = round(time.perf_counter() - t0, 1)
    s["notes"] = notes
    doc = results_document(records, env, ctx.skips, s)
    doc["shufflenet_bench"].update(extra)
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.json"
    results.write_text(json.dumps(doc, indent=1, default=str))
    written = write_report(doc, args.out, plots=not args.no_plots)
    if "models_cpu" in extra:
        written += models_cpu.write(extra["models_cpu"], args.out)
    print(format_summary(doc))
    if ctx.skips:
        print(f"{len(ctx.skips)} provider(s) skipped; reasons in report.md", file=sys.stderr)
    print(f"wrote {results}" + "".join(f", {p}" for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
