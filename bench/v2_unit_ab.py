"""``python -m bench.v2_unit_ab BEFORE [AFTER]``: the CPU fused V2 unit of two builds.

Times ``torch.ops.shufflenet.v2_unit`` for every unit shape of ShuffleNet V2 (one
stride-2 and one stride-1 unit per stage, 224x224 input) with the package found in
directory BEFORE against the one in AFTER (default: this checkout), each in its own
process (both register the same op names), alternating BEFORE and AFTER for
``--rounds`` rounds; the table gives the median over rounds of each run's median.
float32, random folded weights. With one thread the time is the CPU time of the calling
thread (the op runs inline), steadier than wall time on a loaded machine; with more,
wall time. Either way other load on the machine shows in the numbers: compare ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGE_CHANNELS = {0.5: (48, 96, 192), 1.0: (116, 232, 464), 1.5: (176, 352, 704), 2.0: (244, 488, 976)}
STAGE_SIZES = (28, 14, 7)  # output side of stages 2, 3, 4
STEM_CHANNELS = 24
MIN_TIME_S = 0.25  # per case: calls until this long (and at least MIN_CALLS)
MIN_CALLS = 9


def unit_shapes(widths: list[float]) -> list[tuple[float, int, int, int, int]]:
    """(width, C_in, C_out, stride, input side) of every distinct unit of the models."""
    shapes = []
    for width in widths:
        prev = STEM_CHANNELS
        for c, side in zip(STAGE_CHANNELS[width], STAGE_SIZES, strict=True):
            shapes.append((width, prev, c, 2, 2 * side))
            shapes.append((width, c, c, 1, side))
            prev = c
    return shapes


def run_worker(package_dir: str, out: str, widths: list[float], batches: list[int], threads: list[int],
               layouts: list[str]) -> None:
    """Times every case with the package in ``package_dir``; writes {case: ms} as JSON."""
    sys.path.insert(0, package_dir)
    import torch

    import shufflenet_kernels

    assert Path(shufflenet_kernels.__file__).resolve().is_relative_to(Path(package_dir).resolve())
    op = torch.ops.shufflenet.v2_unit.default
    torch.manual_seed(0)
    results = {}
    for width, c_in, c_out, stride, side in unit_shapes(widths):
        half = c_out // 2
        branch = c_in if stride == 2 else c_in // 2

        def w(*shape: int) -> torch.Tensor:
            return torch.randn(*shape) * 0.1

        proj = [w(branch, 1, 3, 3), w(branch), w(half, branch, 1, 1), w(half)] if stride == 2 else [None] * 4
        args = proj + [w(half, branch, 1, 1), w(half), w(half, 1, 3, 3), w(half), w(half, half, 1, 1), w(half), stride]
        for layout in layouts:
            for n in batches:
                x = torch.randn(n, c_in, side, side)
                if layout == "channels_last":
                    x = x.contiguous(memory_format=torch.channels_last)
                for t in threads:
                    torch.set_num_threads(t)
                    clock = time.thread_time if t == 1 else time.perf_counter
                    times = []
                    with torch.inference_mode():
                        for _ in range(3):
                            op(x, *args)
                        end = time.perf_counter() + MIN_TIME_S
                        while len(times) < MIN_CALLS or time.perf_counter() < end:
                            t0 = clock()
                            op(x, *args)
                            times.append(clock() - t0)
                    name = f"x{width} {layout} s{stride} [{n},{c_in},{side},{side}] t{t}"
                    results[name] = statistics.median(times) * 1e3
    Path(out).write_text(json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="directory holding the shufflenet_kernels package to compare against")
    parser.add_argument("after", nargs="?", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--widths", default="0.5,1.0,2.0")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--layouts", default="channels_last", help="channels_last and/or nchw, comma separated")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    widths = [float(v) for v in args.widths.split(",")]
    batches = [int(v) for v in args.batches.split(",")]
    threads = [int(v) for v in args.threads.split(",")]
    layouts = args.layouts.split(",")
    if args.worker:
        run_worker(args.before, args.worker, widths, batches, threads, layouts)
        return
    passthrough = ["--widths", args.widths, "--batches", args.batches, "--threads", args.threads,
                   "--layouts", args.layouts]
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for label, directory in (("before", args.before), ("after", args.after)):
                out = str(Path(tmp) / f"{label}{r}.json")
                subprocess.run([sys.executable, "-m", "bench.v2_unit_ab", directory, "--worker", out, *passthrough],
                               check=True, cwd=Path(__file__).resolve().parent.parent)
                runs[label].append(json.loads(Path(out).read_text()))
    print("| unit | before ms | after ms | speedup |\n|---|---:|---:|---:|")
    for case in runs["before"][0]:
        before = statistics.median(run[case] for run in runs["before"])
        after = statistics.median(run[case] for run in runs["after"])
        print(f"| {case} | {before:.3f} | {after:.3f} | {before / after:.2f} |")


if __name__ == "__main__":
    main()
