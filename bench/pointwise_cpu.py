"""``python -m bench.pointwise_cpu``: the CPU 1x1 conv against oneDNN, interleaved.

Times ``shufflenet.pointwise_conv`` on CPU (the route it picks by itself, and the
GEMM and oneDNN routes forced through ``SHUFFLENET_CPU_POINTWISE``) against what a
PyTorch user runs: ``F.relu(F.conv2d(...))`` (oneDNN's convolution), followed by
``F.channel_shuffle`` where the op fuses a shuffle. Shapes: the ShuffleNet V2 x1.0
branch convs (also reading a channel slice, as the stride-1 unit does) and the V1
g=3 and g=8 grouped convs (``bench/shapes.py``), batch 1 and 8, NCHW and
channels_last, float32, 1 and 2 threads.

Every case is measured round-robin: each round times every contender once (a loop
of calls long enough for the timer), over many rounds, and the table gives medians.
On a shared machine noise hits all contenders of a round alike, so the ratios are
steadier than the times. Prints a markdown table; ``--out`` also writes it to a file.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import shufflenet_kernels  # noqa: F401  (registers torch.ops.shufflenet)

from .core import cpu_name
from .shapes import PointwiseShape, pointwise_shapes

ROUTE_ENV = "SHUFFLENET_CPU_POINTWISE"
# A timed sample is a loop of calls lasting at least this long.
MIN_SAMPLE_S = 2e-3


@dataclass(frozen=True)
class Case(PointwiseShape):
    """A layer shape, taken as a channel slice of a tensor twice as wide when ``channel_slice``."""

    channel_slice: bool = False


def cases() -> list[Case]:
    out = []
    for s in pointwise_shapes(full=False):
        if s.label.startswith("v2x2.0"):
            continue
        out.append(Case(**asdict(s)))
        if s.label.startswith("v2"):
            out.append(Case(**{**asdict(s), "label": s.label + "-slice"}, channel_slice=True))
    return out


def _with_route(route: str | None, fn: Callable[[], object]) -> Callable[[], object]:
    def call() -> object:
        if route is None:
            os.environ.pop(ROUTE_ENV, None)
        else:
            os.environ[ROUTE_ENV] = route
        return fn()

    return call


def interleaved_samples(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each contender in each round, timed round-robin."""
    reps = {}
    for name, fn in fns.items():
        for _ in range(2):
            fn()
        t0 = time.perf_counter()
        fn()
        once = max(time.perf_counter() - t0, 1e-7)
        reps[name] = max(1, int(MIN_SAMPLE_S / once) + 1)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(reps[name]):
                fn()
            samples[name].append((time.perf_counter() - t0) / reps[name])
    os.environ.pop(ROUTE_ENV, None)
    return samples


def make_inputs(case: Case, batch: int, channels_last: bool, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(0)
    c_x = 2 * case.c_in if case.channel_slice else case.c_in
    x = torch.randn(batch, c_x, case.hw, case.hw, generator=g, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if case.channel_slice:
        x = x.chunk(2, 1)[1]
    w = torch.randn(case.c_out, case.c_in // case.groups, 1, 1, generator=g, dtype=dtype) * case.c_in**-0.5
    b = torch.randn(case.c_out, generator=g, dtype=dtype)
    return x, w, b


def forward_contenders(case: Case, x, w, b) -> dict[str, Callable[[], object]]:
    op = torch.ops.shufflenet.pointwise_conv.default
    args = (x, w, b, case.groups, case.shuffle_groups, case.relu)

    def onednn_ref() -> torch.Tensor:
        y = F.conv2d(x, w, b, groups=case.groups)
        if case.relu:
            y = F.relu(y)
        return F.channel_shuffle(y, case.shuffle_groups) if case.shuffle_groups > 1 else y

    return {
        "ours": _with_route(None, lambda: op(*args)),
        "gemm": _with_route("gemm", lambda: op(*args)),
        "onednn_route": _with_route("onednn", lambda: op(*args)),
        "torch": _with_route(None, onednn_ref),
    }


def backward_contenders(case: Case, x, w, b, mask: list[bool]) -> dict[str, Callable[[], object]]:
    op = torch.ops.shufflenet.pointwise_conv_backward.default
    y = torch.ops.shufflenet.pointwise_conv(x, w, b, case.groups, case.shuffle_groups, case.relu)
    go = torch.randn_like(y)
    relu_out = y if case.relu else None
    args = (go, x, w, relu_out, case.groups, case.shuffle_groups, mask)
    y_conv = F.conv2d(x, w, b, groups=case.groups)
    if case.relu:
        y_conv = F.relu(y_conv)

    def onednn_ref():
        # What autograd runs for channel_shuffle(relu(conv2d(x))): un-shuffle,
        # ReLU mask, convolution_backward (oneDNN).
        g = go
        if case.shuffle_groups > 1:
            g = F.channel_shuffle(g, case.c_out // case.shuffle_groups)
        if case.relu:
            g = torch.ops.aten.threshold_backward(g, y_conv, 0)
        return torch.ops.aten.convolution_backward(
            g, x, w, [case.c_out], [1, 1], [0, 0], [1, 1], False, [0, 0], case.groups, mask
        )

    return {
        "ours": _with_route(None, lambda: op(*args)),
        "gemm": _with_route("gemm", lambda: op(*args)),
        "onednn_route": _with_route("onednn", lambda: op(*args)),
        "torch": _with_route(None, onednn_ref),
    }


def gflop(case: Case, batch: int, direction: str, mask: list[bool]) -> float:
    per_gemm = 2.0 * batch * case.hw * case.hw * case.c_in * case.c_out / case.groups / 1e9
    if direction == "fwd":
        return per_gemm
    return per_gemm * (int(mask[0]) + int(mask[1]))


def forward_matches(case: Case, x, w, b) -> bool:
    y = torch.ops.shufflenet.pointwise_conv(x, w, b, case.groups, case.shuffle_groups, case.relu)
    r = shufflenet_kernels.reference.pointwise_conv(
        x.double(), w.double(), b.double(), case.groups, case.shuffle_groups, case.relu
    )
    tol = 1e-4 if x.dtype == torch.float32 else 3e-2
    return torch.allclose(y.double(), r, rtol=tol, atol=tol)


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


CONTENDERS = ("ours", "gemm", "onednn_route")
HEADER = (
    "| dir | case | C_in->C_out g/shuffle | layout | N | thr | ours ms | GEMM route ms | oneDNN route ms "
    "| torch ms | ours x torch | GEMM x torch | oneDNN route x torch | ours GFLOP/s | torch GFLOP/s |"
)


def key(direction: str, label: str, layout: str, batch: int, threads: int) -> tuple[str, str, str, str, str]:
    return (direction, label, layout, str(batch), str(threads))


def row(direction: str, case: Case, layout: str, batch: int, threads: int, samples: dict[str, list[float]],
        gf: float, before: dict | None) -> str:
    t = {name: statistics.median(v) for name, v in samples.items()}

    def ms(name: str) -> str:
        return f"{t[name] * 1e3:.3f}" if name in t else "–"

    def speed(name: str) -> str:
        # Median over rounds of torch time / contender time in the same round.
        if name not in samples:
            return "–"
        return f"{statistics.median(a / b for a, b in zip(samples['torch'], samples[name], strict=True)):.2f}"

    cells = [
        direction, case.label,
        f"{case.c_in}->{case.c_out} g{case.groups}/s{case.shuffle_groups}{' relu' if case.relu else ''}",
        layout, str(batch), str(threads), ms("ours"), ms("gemm"), ms("onednn_route"), ms("torch"),
        speed("ours"), speed("gemm"), speed("onednn_route"), f"{gf / t['ours']:.0f}", f"{gf / t['torch']:.0f}",
    ]
    if before is not None:
        cells.insert(10, before.get(key(direction, case.label, layout, batch, threads), "–"))
    return "| " + " | ".join(cells) + " |"


def read_before(path: Path) -> dict:
    """`ours x torch` of each row of an earlier run's markdown (the build before a change)."""
    out = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 15 or cells[0] not in ("fwd", "bwd", "bwd gi"):
            continue
        out[key(cells[0], cells[1], cells[3], int(cells[4]), int(cells[5]))] = cells[10]
    return out


def summary(table_lines: list[str]) -> list[str]:
    """Geometric means of `ours x torch` (and of the before column, when there is
    one) per direction, layout, batch and thread count."""
    groups: dict[tuple[str, str, str, str], list[list[float]]] = {}
    has_before = False
    for line in table_lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 15 or cells[0] not in ("fwd", "bwd", "bwd gi"):
            continue
        before = len(cells) == 16
        has_before |= before
        g = groups.setdefault((cells[0], cells[3], cells[4], cells[5]), [[], []])
        g[0].append(float(cells[11 if before else 10]))
        if before and cells[10] not in ("–", ""):
            g[1].append(float(cells[10]))

    def geomean(v: list[float]) -> str:
        return f"{statistics.geometric_mean(v):.2f}" if v else "–"

    out = ["", "## Geometric means of `ours x torch`", ""]
    head = "| dir | layout | N | thr | cases | ours x torch |" + (" before |" if has_before else "")
    out += [head, "|" + "---|" * (head.count("|") - 1)]
    for (direction, layout, batch, threads), (after, before) in groups.items():
        row_ = f"| {direction} | {layout} | {batch} | {threads} | {len(after)} | {geomean(after)} |"
        out.append(row_ + (f" {geomean(before)} |" if has_before else ""))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--layouts", nargs="+", default=["nchw", "channels_last"], choices=["nchw", "channels_last"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--rounds", type=int, default=21, help="round-robin rounds per case (median over them)")
    ap.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS,
                    help="which of our variants to time next to torch (a build without routes: ours)")
    ap.add_argument("--no-backward", action="store_true", help="forward only")
    ap.add_argument("--filter", default="", help="only cases whose label contains this")
    ap.add_argument("--before", type=Path, help="an earlier run's markdown: adds its `ours x torch` column")
    ap.add_argument("--title", default="CPU pointwise_conv vs oneDNN (interleaved)")
    ap.add_argument("--out", type=Path, help="also write the markdown here")
    ap.add_argument("--summarize", type=Path, help="only print the geometric means of an earlier run's markdown")
    args = ap.parse_args(argv)
    if args.summarize:
        print("\n".join(summary(args.summarize.read_text().splitlines())))
        return 0
    dtype = getattr(torch, args.dtype)
    before = read_before(args.before) if args.before else None
    header = HEADER
    if before is not None:
        cols = header.split(" | ")
        cols.insert(10, "before: ours x torch")
        header = " | ".join(cols)

    lines = [
        f"# {args.title}",
        "",
        f"- CPU: {cpu_name()} ({os.cpu_count()} CPUs); torch {torch.__version__}; "
        f"oneDNN {torch.backends.mkldnn.is_available()}; CPU capability {torch.backends.cpu.get_cpu_capability()}",
        f"- date {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}; commit {commit()}",
        f"- {args.dtype}; {args.rounds} round-robin rounds per case, each round times every contender once "
        f"(a loop of >= {MIN_SAMPLE_S * 1e3:.0f} ms); times are medians over the rounds",
        "- ours = `shufflenet.pointwise_conv` (route picked per case); GEMM route / oneDNN route = the same op "
        f"with `{ROUTE_ENV}=gemm` / `=onednn`; torch = `F.relu(F.conv2d(...))` (+ `F.channel_shuffle`) "
        "forward, `threshold_backward` + `aten.convolution_backward` (+ un-shuffle) backward",
        "- `x torch` = median over rounds of (torch time / that time) in the same round; > 1 is faster than torch. "
        "GFLOP/s counts 2 FLOPs per multiply-add; backward counts the grad_input and grad_weight GEMMs.",
    ]
    if before is not None:
        lines.append(f"- before: `ours x torch` from `{args.before.name}`, the build before the change, "
                     "measured the same way in its own run")
    lines += ["", header, "|" + "---|" * (header.count("|") - 1)]
    print("\n".join(lines), flush=True)
    mismatches = 0
    for threads in args.threads:
        torch.set_num_threads(threads)
        for case in cases():
            if args.filter not in case.label:
                continue
            for layout in args.layouts:
                for batch in args.batches:
                    x, w, b = make_inputs(case, batch, layout == "channels_last", dtype)
                    if not forward_matches(case, x, w, b):
                        mismatches += 1
                        print(f"MISMATCH {case} {layout} {batch}", flush=True)
                    fns = forward_contenders(case, x, w, b)
                    fns = {k: v for k, v in fns.items() if k == "torch" or k in args.contenders}
                    samples = interleaved_samples(fns, args.rounds)
                    gf = gflop(case, batch, "fwd", [])
                    lines.append(row("fwd", case, layout, batch, threads, samples, gf, before))
                    print(lines[-1], flush=True)
                    if args.no_backward:
                        continue
                    masks = [[True, True, True]]
                    if case.groups == 1:
                        masks.append([True, False, False])
                    for mask in masks:
                        fns = backward_contenders(case, x, w, b, mask)
                        fns = {k: v for k, v in fns.items() if k == "torch" or k in args.contenders}
                        samples = interleaved_samples(fns, args.rounds)
                        name = "bwd" if all(mask) else "bwd gi"
                        gf = gflop(case, batch, "bwd", mask)
                        lines.append(row(name, case, layout, batch, threads, samples, gf, before))
                        print(lines[-1], flush=True)
    if mismatches:
        lines.append(f"\n**{mismatches} forward case(s) did not match the reference.**")
    lines += summary(lines)
    print("\n".join(summary(lines)), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
