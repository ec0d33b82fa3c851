"""Zero-copy stages against fused units: whole torchvision ShuffleNetV2 on the CPU.

``python -m bench.zero_copy_cpu [--model x1.0] [--batches 1 8] [--threads 2] [--rounds 30]``
times ``accelerate(model)`` (every unit one ``v2_unit`` call) and
``accelerate(model, zero_copy=True)`` (stride-1 units in place, ``v2_unit_``) in one
process, 224x224 float32 channels_last, eval, ``torch.inference_mode``. The two run
interleaved (each round times a block of calls of each, alternating which goes first),
so drift on a shared machine hits both alike; the figure is the median of all calls.
Prints one line per batch: both medians (ms) and the ratio zero_copy / fused.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import torch

import shufflenet_kernels as sk

MODELS = {"x0.5": "shufflenet_v2_x0_5", "x1.0": "shufflenet_v2_x1_0", "x2.0": "shufflenet_v2_x2_0"}


def _time_calls(fn: Callable[[], object], calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def run(model: str, batches: Sequence[int], threads: int, rounds: int, calls: int) -> list[dict]:
    import torchvision

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    base = getattr(torchvision.models, MODELS[model])().eval()
    contenders = {"fused": sk.accelerate(base), "zero_copy": sk.accelerate(base, zero_copy=True)}
    rows = []
    for batch in batches:
        x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
        times: dict[str, list[float]] = {name: [] for name in contenders}
        with torch.inference_mode():
            ref = base(x)
            for name, m in contenders.items():
                err = (m(x) - ref).abs().max().item()
                assert err < 1e-3, f"{name}: max abs error {err}"
                _time_calls(lambda m=m, x=x: m(x), 3)  # warm-up: packed weights, allocator
            names = list(contenders)
            for r in range(rounds):
                for name in names if r % 2 == 0 else names[::-1]:
                    m = contenders[name]
                    times[name] += _time_calls(lambda m=m, x=x: m(x), calls)
        med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        rows.append({"model": model, "batch": batch, "threads": threads, **med,
                     "ratio": med["zero_copy"] / med["fused"]})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="x1.0", choices=sorted(MODELS))
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--calls", type=int, default=5)
    a = p.parse_args(argv)
    for row in run(a.model, a.batches, a.threads, a.rounds, a.calls):
        print(f"{row['model']} batch {row['batch']} threads {row['threads']}: fused {row['fused']:.2f} ms, "
              f"zero_copy {row['zero_copy']:.2f} ms, zero_copy/fused {row['ratio']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
