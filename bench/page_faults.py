"""``python -m bench.page_faults``: page faults and time per CPU forward under allocator settings.

Each measurement is a fresh process that builds ``accelerate(shufflenet_v2_x1_0())`` in
eval mode, channels_last (``--path``: the fused units, accelerate's default; the per-op
kernels, ``fuse_units=False``; or the in-place stages, ``zero_copy=True``), runs a few
warm-up forwards at ``--batch``, then reads
``resource.getrusage(RUSAGE_SELF).ru_minflt`` and the time around ``--forwards``
forwards. Settings (environment of the child process): glibc's defaults, with and
without the CPU kernels' output cache (``SHUFFLENET_CPU_OUTPUT_CACHE_MB=0``), then
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` raised so freed activations
stay in the heap instead of going back to the kernel (each reuse of returned memory
faults its pages in again), and jemalloc / tcmalloc through ``LD_PRELOAD`` when the
operating system has them. The settings run interleaved, ``--repeats`` times; the
table gives medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

# glibc caps the mmap threshold at 32 MiB on 64-bit systems: larger blocks are always mmapped.
_BIG = str(32 * 2**20)
SETTINGS: dict[str, dict[str, str]] = {
    "glibc default": {},
    # the kernels' own output cache off (shufflenet_kernels.memory), glibc as it is
    "glibc default, output cache off": {"SHUFFLENET_CPU_OUTPUT_CACHE_MB": "0"},
    f"MALLOC_MMAP_THRESHOLD_={_BIG}": {"MALLOC_MMAP_THRESHOLD_": _BIG},
    f"MALLOC_TRIM_THRESHOLD_={_BIG}": {"MALLOC_TRIM_THRESHOLD_": _BIG},
    "both": {"MALLOC_MMAP_THRESHOLD_": _BIG, "MALLOC_TRIM_THRESHOLD_": _BIG},
}
# accelerate() keywords of each --path
PATHS: dict[str, dict[str, bool]] = {
    "fused": {},
    "per-op": {"fuse_units": False},
    "zero-copy": {"zero_copy": True},
}
_PRELOADS = {
    "jemalloc": ("libjemalloc.so.2", "libjemalloc.so"),
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc_minimal.so", "libtcmalloc.so"),
}
_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")

_CHILD = """
import json, resource, sys, time
import torch, torchvision
import shufflenet_kernels as sk
batch, forwards, threads = (int(a) for a in sys.argv[1:4])
options = json.loads(sys.argv[4])
torch.set_num_threads(threads)
torch.manual_seed(0)
model = sk.accelerate(torchvision.models.shufflenet_v2_x1_0().eval(), **options).to(memory_format=torch.channels_last)
x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
with torch.no_grad():
    for _ in range(3):
        model(x)
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    for _ in range(forwards):
        model(x)
    t1 = time.perf_counter()
    f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"faults": (f1 - f0) / forwards, "ms": (t1 - t0) / forwards * 1e3,
                  "stage": type(model.stage2).__name__, "fuse_units": model.stage2[0].fuse_units}))
"""


def available_settings() -> dict[str, dict[str, str]]:
    """``SETTINGS`` plus an ``LD_PRELOAD`` setting for each of jemalloc / tcmalloc that is installed."""
    out = dict(SETTINGS)
    for name, files in _PRELOADS.items():
        for d in _LIB_DIRS:
            found = [Path(d) / f for f in files if (Path(d) / f).exists()]
            if found:
                out[name] = {"LD_PRELOAD": str(found[0])}
                break
    return out


def measure(env: dict[str, str], batch: int, forwards: int, threads: int, path: str = "fused") -> dict[str, Any]:
    """Page faults and milliseconds per forward in a fresh process with ``env`` added,
    the model converted as ``PATHS[path]`` says (and, to show it was: the class of its
    first stage and whether its units run fused)."""
    root = Path(__file__).resolve().parent.parent
    full_env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-c", _CHILD, str(batch), str(forwards), str(threads), json.dumps(PATHS[path])]
    out = subprocess.run(argv, env=full_env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--forwards", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per setting, interleaved")
    ap.add_argument("--path", choices=sorted(PATHS), default="fused", help="how accelerate() converts the model")
    args = ap.parse_args(argv)
    settings = available_settings()
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in settings}
    for _ in range(args.repeats):
        for name, env in settings.items():
            results[name].append(measure(env, args.batch, args.forwards, args.threads, args.path))
    print(f"accelerated shufflenet_v2_x1_0 ({args.path}), eval, channels_last, batch {args.batch}, "
          f"{args.threads} thread(s), "
          f"{args.forwards} forwards per process, medians of {args.repeats} interleaved processes")
    print("| setting | minor page faults / forward | ms / forward |")
    print("|---|---|---|")
    for name, runs in results.items():
        faults = statistics.median(r["faults"] for r in runs)
        ms = statistics.median(r["ms"] for r in runs)
        print(f"| {name} | {faults:.0f} | {ms:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
