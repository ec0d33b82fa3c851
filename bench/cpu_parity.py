"""``python -m bench.cpu_parity``: every CPU op and backward op against its PyTorch equivalent.

One run times, round-robin (``bench.pointwise_cpu.interleaved_samples``: each round
times ours and PyTorch once, medians over the rounds), on the ShuffleNet V1 and V2
layer shapes of ``bench/shapes.py``, batch 1 and 8, 1 and 2 threads, float32, NCHW and
channels_last:

======================  =============================================================
ours                    PyTorch
======================  =============================================================
channel_shuffle         ``F.channel_shuffle`` (PyTorch's native CPU kernel)
pointwise_conv          ``F.relu(F.conv2d(...))`` (oneDNN); with a fused shuffle
                        (V1), the grouped conv then ``F.channel_shuffle``
depthwise_conv2d 3x3    ``F.conv2d(..., groups=C)`` (oneDNN), stride 1 and 2
concat_shuffle          ``F.channel_shuffle(torch.cat([a, b], 1), 2)``, ``a`` a channel
                        slice as in the V2 stride-1 unit
pointwise backward      what autograd runs for the PyTorch forward: ReLU mask,
                        un-shuffle, ``aten.convolution_backward``
depthwise backward      ``aten.convolution_backward`` (all three gradients)
======================  =============================================================

Ours receives the weights in the layout the nn units cache: a channels_last depthwise
conv gets its weight tap-major (``fusion.tap_major``). Each case is checked against
PyTorch before it is timed. Prints a markdown table (``torch / ours`` per case, > 1
means ours is faster) with geometric means, and writes it to ``--out``. The full run
takes a few minutes on 2 cores (the expected duration is printed first); ``--quick``
is a smoke run of a few shapes at batch 1 and 1 thread.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from shufflenet_kernels import fusion

from .core import cpu_name, outputs_match, tensor
from .ops_cases import ref_depthwise_conv2d_backward
from .pointwise_cpu import Case as PointwiseCase
from .pointwise_cpu import backward_contenders, commit, interleaved_samples
from .pointwise_cpu import make_inputs as pointwise_inputs
from .shapes import shapes_for

OPS: tuple[str, ...] = ("channel_shuffle", "concat_shuffle", "pointwise_conv", "depthwise_conv2d")
HEADER = "| op | dir | case | shape | layout | N | thr | ours ms | torch ms | torch / ours | check |"
# Rough cost of one case in one configuration, for the duration estimate: two
# contenders, each calibrated then sampled `rounds` times (bench.pointwise_cpu.MIN_SAMPLE_S
# per sample at least; the slowest cases take longer per call).
_EST_SAMPLE_S = 6e-3


@dataclass(frozen=True)
class ParityCase:
    """One op (and direction) on one layer shape; ``build`` makes ``(ours, torch)`` callables."""

    op: str
    direction: str
    label: str
    shape: str
    build: Callable[[int, str], tuple[Callable[[], Any], Callable[[], Any]]]


def _x(shape: tuple[int, ...], layout: str) -> torch.Tensor:
    return tensor(shape, torch.float32, torch.device("cpu"), layout)


def _shuffle_cases(quick: bool) -> Iterator[ParityCase]:
    op = torch.ops.shufflenet.channel_shuffle.default
    for s in shapes_for("channel_shuffle", quick, full=False):

        def build(n: int, layout: str, s=s):
            x = _x((n, s.channels, s.hw, s.hw), layout)
            return (lambda: op(x, s.groups)), (lambda: F.channel_shuffle(x, s.groups))

        yield ParityCase("channel_shuffle", "fwd", s.label, f"{s.channels}x{s.hw}² g{s.groups}", build)


def _concat_cases(quick: bool) -> Iterator[ParityCase]:
    op = torch.ops.shufflenet.concat_shuffle.default
    for s in shapes_for("concat_shuffle", quick, full=False):

        def build(n: int, layout: str, s=s):
            # a: the first half of the unit input (a channel slice), b: the branch output.
            a = _x((n, 2 * s.channels_a, s.hw, s.hw), layout)[:, : s.channels_a]
            b = _x((n, s.channels_b, s.hw, s.hw), layout)
            return (lambda: op(a, b, s.groups)), (lambda: F.channel_shuffle(torch.cat([a, b], 1), s.groups))

        yield ParityCase("concat_shuffle", "fwd", s.label, f"{s.channels_a}+{s.channels_b}x{s.hw}²", build)


def _pointwise_cases(quick: bool) -> Iterator[ParityCase]:
    fwd_op = torch.ops.shufflenet.pointwise_conv.default
    for s in shapes_for("pointwise_conv", quick, full=False):
        case = PointwiseCase(**asdict(s))
        shape = f"{s.c_in}->{s.c_out} g{s.groups}/s{s.shuffle_groups}{' relu' if s.relu else ''} {s.hw}²"

        def fwd(n: int, layout: str, case=case):
            x, w, b = pointwise_inputs(case, n, layout == "channels_last")

            def torch_fwd():
                y = F.conv2d(x, w, b, groups=case.groups)
                if case.relu:
                    y = F.relu(y)
                return F.channel_shuffle(y, case.shuffle_groups) if case.shuffle_groups > 1 else y

            return (lambda: fwd_op(x, w, b, case.groups, case.shuffle_groups, case.relu)), torch_fwd

        def bwd(n: int, layout: str, case=case):
            x, w, b = pointwise_inputs(case, n, layout == "channels_last")
            fns = backward_contenders(case, x, w, b, [True, True, True])
            return fns["ours"], fns["torch"]

        yield ParityCase("pointwise_conv", "fwd", s.label, shape, fwd)
        yield ParityCase("pointwise_conv", "bwd", s.label, shape, bwd)


def _depthwise_inputs(s, n: int, layout: str):
    x = _x((n, s.channels, s.hw, s.hw), layout)
    w = torch.randn(s.channels, 1, s.kernel, s.kernel) / s.kernel
    b = torch.randn(s.channels)
    # The layout the nn units cache for a channels_last model.
    w_ours = fusion.tap_major(w) if layout == "channels_last" else w
    return x, w, w_ours, b


def _depthwise_cases(quick: bool) -> Iterator[ParityCase]:
    fwd_op = torch.ops.shufflenet.depthwise_conv2d.default
    bwd_op = torch.ops.shufflenet.depthwise_conv2d_backward.default
    for s in shapes_for("depthwise_conv2d", quick, full=False):
        if s.kernel != 3:
            continue
        pad = s.kernel // 2
        conv = ([s.stride] * 2, [pad] * 2, [1, 1])
        shape = f"{s.channels}x{s.hw}² s{s.stride}"

        def fwd(n: int, layout: str, s=s, conv=conv, pad=pad):
            x, w, w_ours, b = _depthwise_inputs(s, n, layout)
            return (lambda: fwd_op(x, w_ours, b, *conv, False)), (
                lambda: F.conv2d(x, w, b, s.stride, pad, 1, s.channels)
            )

        def bwd(n: int, layout: str, s=s, conv=conv, pad=pad):
            x, w, w_ours, b = _depthwise_inputs(s, n, layout)
            go = torch.randn_like(F.conv2d(x, w, b, s.stride, pad, 1, s.channels))
            mask = [True, True, True]
            return (lambda: bwd_op(go, x, w_ours, None, *conv, mask)), (
                lambda: ref_depthwise_conv2d_backward(go, x, w, None, conv[0], conv[1], True)
            )

        yield ParityCase("depthwise_conv2d", "fwd", s.label, shape, fwd)
        yield ParityCase("depthwise_conv2d", "bwd", s.label, shape, bwd)


_CASES = {
    "channel_shuffle": _shuffle_cases,
    "concat_shuffle": _concat_cases,
    "pointwise_conv": _pointwise_cases,
    "depthwise_conv2d": _depthwise_cases,
}


def parity_cases(ops: tuple[str, ...] = OPS, quick: bool = False, label_filter: str = "") -> list[ParityCase]:
    """The cases of ``ops`` (quick: ``shapes.QUICK_LABELS``) whose label contains ``label_filter``."""
    return [c for op in ops for c in _CASES[op](quick) if label_filter in c.label]


def row(case: ParityCase, layout: str, batch: int, threads: int, samples: dict[str, list[float]],
        ok: bool) -> tuple[str, float]:
    """The markdown row of one measured case, and its ``torch / ours`` ratio."""
    ours, ref = statistics.median(samples["ours"]), statistics.median(samples["torch"])
    # Median over rounds of the per-round ratio: noise hits both contenders of a round alike.
    ratio = statistics.median(t / o for t, o in zip(samples["torch"], samples["ours"], strict=True))
    cells = [case.op, case.direction, case.label, case.shape, layout, str(batch), str(threads),
             f"{ours * 1e3:.4f}", f"{ref * 1e3:.4f}", f"{ratio:.2f}", "ok" if ok else "MISMATCH"]
    return "| " + " | ".join(cells) + " |", ratio


def summary(ratios: dict[tuple[str, str], list[float]]) -> list[str]:
    """Geometric means of ``torch / ours`` per op and direction, and over every case."""
    out = ["", "## Geometric means of `torch / ours` (> 1: ours faster)", "",
           "| op | dir | cases | torch / ours |", "|---|---|---|---|"]
    every: list[float] = []
    for (op, direction), values in ratios.items():
        every += values
        out.append(f"| {op} | {direction} | {len(values)} | {statistics.geometric_mean(values):.2f} |")
    if every:
        out.append(f"| **all** | | {len(every)} | **{statistics.geometric_mean(every):.2f}** |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: quick shapes, batch 1, 1 thread, 3 rounds")
    ap.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    ap.add_argument("--directions", nargs="+", default=["fwd", "bwd"], choices=["fwd", "bwd"])
    ap.add_argument("--threads", type=int, nargs="+")
    ap.add_argument("--batches", type=int, nargs="+")
    ap.add_argument("--layouts", nargs="+", default=["nchw", "channels_last"], choices=["nchw", "channels_last"])
    ap.add_argument("--rounds", type=int, help="round-robin rounds per case (default 11, quick 3)")
    ap.add_argument("--filter", default="", help="only shapes whose label contains this")
    ap.add_argument("--out", type=Path, default=Path("bench/results/cpu_parity.md"))
    args = ap.parse_args(argv)
    threads = args.threads or ([1] if args.quick else [1, 2])
    batches = args.batches or ([1] if args.quick else [1, 8])
    rounds = args.rounds or (3 if args.quick else 11)
    cases = [c for c in parity_cases(tuple(args.ops), args.quick, args.filter) if c.direction in args.directions]
    runs = len(cases) * len(threads) * len(batches) * len(args.layouts)
    estimate = runs * 2 * (rounds + 2) * _EST_SAMPLE_S

    lines = [
        "# CPU ops vs PyTorch (interleaved)",
        "",
        f"- CPU: {cpu_name()} ({os.cpu_count()} CPUs); torch {torch.__version__}; "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}",
        f"- date {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}; commit {commit()}",
        f"- float32; {rounds} round-robin rounds per case (each times ours and torch once, a loop of calls "
        "of at least 2 ms); times are medians over the rounds; `torch / ours` is the median of the "
        "per-round ratios (> 1: ours faster)",
        "- torch: `F.channel_shuffle`; `F.relu(F.conv2d(...))` (+ `F.channel_shuffle` where ours fuses it); "
        "`F.conv2d(groups=C)`; `F.channel_shuffle(torch.cat(...))`; backward: `threshold_backward` "
        "(+ un-shuffle) + `aten.convolution_backward`. Ours: `torch.ops.shufflenet.*` called as a user "
        "calls them (through the dispatcher and the autograd registration), channels_last depthwise "
        "weights tap-major (as the nn units cache them)",
        "",
        HEADER,
        "|" + "---|" * (HEADER.count("|") - 1),
    ]
    print(f"{runs} measurements, expected duration about {estimate / 60:.1f} min", flush=True)
    print("\n".join(lines), flush=True)
    ratios: dict[tuple[str, str], list[float]] = {}
    mismatches = 0
    start = time.perf_counter()
    saved_threads = torch.get_num_threads()
    try:
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            for case in cases:
                for layout in args.layouts:
                    for batch in batches:
                        ours, ref = case.build(batch, layout)
                        ok = outputs_match(ours(), ref())
                        mismatches += not ok
                        samples = interleaved_samples({"ours": ours, "torch": ref}, rounds)
                        line, ratio = row(case, layout, batch, n_threads, samples, ok)
                        ratios.setdefault((case.op, case.direction), []).append(ratio)
                        lines.append(line)
                        print(line, flush=True)
    finally:
        torch.set_num_threads(saved_threads)
    if mismatches:
        lines.append(f"\n**{mismatches} case(s) did not match PyTorch.**")
    tail = [*summary(ratios), f"\nMeasured in {time.perf_counter() - start:.0f} s."]
    lines += tail
    print("\n".join(tail), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
