"""Whole ShuffleNetV2 models on the CPU: these kernels against what a CPU user would pick.

``python -m bench.models_cpu`` (and ``python -m bench --models`` on the CPU) times
torchvision's ShuffleNetV2 x0.5 / x1.0 / x2.0 (random weights from a fixed seed, BN
running statistics randomised so folding matters), 224x224 float32, batch 1 and 8, at
2 and 1 threads, as

* eager NCHW and eager channels_last,
* ``torch.compile`` (default; with Inductor's ``freezing``; with ``mode="max-autotune"``),
* ``shufflenet_kernels.accelerate`` per-op, and fused (``fuse_units=True``) where the
  installed version has that keyword,
* ONNX Runtime (CPU execution provider) and OpenVINO (CPU, ``INFERENCE_PRECISION_HINT=f32``:
  its default runs bf16 on CPUs with AMX/avx512_bf16), when installed
  (``pip install .[baselines]``); skipped with a note otherwise.

Every contender runs in its own worker process (``bench.model_worker``: thread pools and
Inductor flags are per process) pinned to the same CPUs with the same thread count
(torch: ``set_num_threads`` and ``OMP_NUM_THREADS``; ONNX Runtime: intra-op T, inter-op
1; OpenVINO: ``INFERENCE_NUM_THREADS`` T, one stream). Each checks its output against
torchvision eager NCHW with the same weights and input (max abs error column).

Timing is round-robin and lock-step: in each of ``--rounds`` rounds every contender in
turn runs ``--calls`` timed calls (per-call ``perf_counter``) while the others wait on
their pipe; the order rotates each round and the driver pauses briefly between blocks
so that the previous contender's spinning pool threads go idle. Drift on a shared
machine therefore hits all contenders alike. The figure is the median over all calls
of all rounds; the spread of the per-round medians is recorded too.

The torch.compile contenders dominate the run time (each compiles every model and batch
afresh); ``--contenders`` without them, or ``--quick``, is much shorter.

Writes ``models_cpu.json`` and ``models_cpu.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .model_worker import CONTENDERS, DESCRIPTIONS, MODELS, availability
from .report import models_cpu_markdown

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS: tuple[str, ...] = ("x0.5", "x1.0", "x2.0")
DEFAULT_BATCHES: tuple[int, ...] = (1, 8)
DEFAULT_THREADS: tuple[int, ...] = (2, 1)
# Left out of the quick smoke run: each compiles for tens of seconds to minutes on 2 cores.
SLOW_CONTENDERS: tuple[str, ...] = ("compile", "compile_freezing", "compile_max_autotune")
SETTLE_S = 0.01  # pause between two contenders' blocks (idle pool threads stop spinning)


class WorkerProcess:
    """A ``bench.model_worker`` subprocess and its reply pipe."""

    def __init__(self, name: str, threads: int, cpus: Sequence[int]) -> None:
        self.name = name
        env = dict(os.environ)
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        cmd = [
            sys.executable,
            "-m",
            "bench.model_worker",
            "--contender",
            name,
            "--threads",
            str(threads),
            "--cpus",
            ",".join(map(str, cpus)),
        ]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(ROOT)
        )
        self.hello = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            return {"ok": False, "available": False, "reason": f"worker exited (code {self.proc.poll()})"}
        return json.loads(line)

    def ask(self, **msg: Any) -> dict[str, Any]:
        """Sends one command and waits for its reply."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return {"ok": False, "reason": f"worker exited (code {self.proc.poll()})"}
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def _stats(rounds: list[list[float]]) -> dict[str, Any]:
    every = [t for r in rounds for t in r]
    per_round = [statistics.median(r) for r in rounds]
    q = statistics.quantiles(every, n=4) if len(every) > 1 else [every[0]] * 3
    return {
        "median_s": statistics.median(every),
        "q1_s": q[0],
        "q3_s": q[2],
        "round_medians_s": per_round,
        "calls": len(every),
        "data": every,
    }


def _cpus(threads: int) -> list[int]:
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    return allowed[:threads]


def run(
    models: Sequence[str] = DEFAULT_MODELS,
    batches: Sequence[int] = DEFAULT_BATCHES,
    threads: Sequence[int] = DEFAULT_THREADS,
    contenders: Sequence[str] = CONTENDERS,
    rounds: int = 9,
    calls: int = 20,
    warmup: int = 3,
    seed: int = 0,
    log: Any = sys.stderr,
) -> dict[str, Any]:
    """Runs the comparison; returns the JSON document (settings, notes, skips, one row per model/batch/threads)."""
    ncpu = len(_cpus(10**6))
    notes: list[str] = []
    skipped: dict[str, str] = {}
    wanted = []
    for name in contenders:
        ok, reason = availability(name)
        if ok:
            wanted.append(name)
        else:
            skipped[name] = reason
            notes.append(f"{name} skipped: {reason}")
    thread_counts = []
    for t in threads:
        if t > ncpu:
            notes.append(f"{t} threads skipped: only {ncpu} CPUs available to this process")
        elif t not in thread_counts:
            thread_counts.append(t)
    for note in notes:
        print(f"note: {note}", file=log)
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for t in thread_counts:
        cpus = _cpus(t)
        workers: list[WorkerProcess] = []
        try:
            for name in wanted:
                w = WorkerProcess(name, t, cpus)
                if w.hello.get("available"):
                    workers.append(w)
                else:
                    skipped[name] = w.hello.get("reason", "unavailable")
                    print(f"note: {name} skipped: {skipped[name]}", file=log)
                    w.close()
            for model in models:
                for batch in batches:
                    rows.append(_run_row(workers, model, batch, t, cpus, rounds, calls, warmup, seed, log))
        finally:
            for w in workers:
                w.close()
    import platform

    from .core import commit_info, cpu_name

    versions = {}
    for mod in ("torch", "torchvision", "onnxruntime", "openvino", "onnx"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    return {
        "kind": "models_cpu",
        "settings": {
            "models": list(models),
            "batches": list(batches),
            "threads": thread_counts,
            "contenders": list(contenders),
            "rounds": rounds,
            "calls": calls,
            "warmup": warmup,
            "seed": seed,
            "worker_env": {"OMP_NUM_THREADS": "threads", "MKL_NUM_THREADS": "threads"},
            "dtype": "float32",
            "input": "224x224",
            "wall_s": round(time.perf_counter() - t_start, 1),
        },
        "environment": {
            "cpu_name": cpu_name(),
            "cpu_count": os.cpu_count(),
            "cpus_available": ncpu,
            "python": platform.python_version(),
            "versions": versions,
            "commit": commit_info().get("id"),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "descriptions": {n: DESCRIPTIONS[n] for n in contenders if n in DESCRIPTIONS},
        "notes": notes,
        "skipped": skipped,
        "rows": rows,
    }


def _run_row(
    workers: list[WorkerProcess],
    model: str,
    batch: int,
    threads: int,
    cpus: list[int],
    rounds: int,
    calls: int,
    warmup: int,
    seed: int,
    log: Any,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "model": MODELS[model],
        "width": model,
        "batch": batch,
        "threads": threads,
        "cpus": cpus,
        "contenders": {},
        "skipped": {},
    }
    ready: list[WorkerProcess] = []
    for w in workers:
        print(f"[models_cpu] {model} N={batch} T={threads}: building {w.name}", file=log, flush=True)
        r = w.ask(cmd="setup", model=model, batch=batch, seed=seed, warmup=warmup)
        if r.get("ok"):
            ready.append(w)
            row["contenders"][w.name] = {
                "max_abs_err": r["max_abs_err"],
                "ref_max": r["ref_max"],
                "build_s": r["build_s"],
                "info": r.get("info", {}),
                # torch's thread count and the CPUs the worker is pinned to, as the worker saw them
                "process": w.hello.get("info", {}),
            }
        else:
            row["skipped"][w.name] = r.get("reason", "failed")
            print(f"note: {w.name} on {model} N={batch}: {row['skipped'][w.name]}", file=log)
    times: dict[str, list[list[float]]] = {w.name: [] for w in ready}
    for i in range(rounds):
        order = ready[i % len(ready) :] + ready[: i % len(ready)] if ready else []
        for w in order:
            r = w.ask(cmd="time", calls=calls)
            if r.get("ok"):
                times[w.name].append(r["times"])
            time.sleep(SETTLE_S)
    for w in ready:
        w.ask(cmd="release")
        if times[w.name]:
            row["contenders"][w.name].update(_stats(times[w.name]))
        else:
            row["skipped"][w.name] = "no timings"
            del row["contenders"][w.name]
    timed = {n: c["median_s"] for n, c in row["contenders"].items()}
    if timed:
        best = min(timed.values())
        row["best"] = min(timed, key=timed.__getitem__)
        for c in row["contenders"].values():
            c["vs_best"] = c["median_s"] / best
    return row


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.models_cpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smoke mode: x1.0, batch 1, one thread count, few calls")
    p.add_argument("--models", nargs="+", choices=tuple(MODELS), default=None)
    p.add_argument("--batch", nargs="+", type=int, default=None)
    p.add_argument("--threads", nargs="+", type=int, default=None)
    p.add_argument(
        "--contenders",
        nargs="+",
        choices=CONTENDERS,
        default=None,
        help="default: all (quick: all but the torch.compile ones)",
    )
    p.add_argument("--rounds", type=int, default=None, help="default 9 (quick: 3)")
    p.add_argument("--calls", type=int, default=None, help="timed calls per contender per round (default 20; quick 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench/out"))
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of ``run`` from parsed options (quick mode fills in the smoke defaults)."""
    ncpu = len(_cpus(10**6))
    quick = bool(args.quick)
    return {
        "models": args.models or (["x1.0"] if quick else list(DEFAULT_MODELS)),
        "batches": args.batch or ([1] if quick else list(DEFAULT_BATCHES)),
        "threads": args.threads or ([min(2, ncpu)] if quick else list(DEFAULT_THREADS)),
        "contenders": args.contenders or [c for c in CONTENDERS if not (quick and c in SLOW_CONTENDERS)],
        "rounds": args.rounds or (3 if quick else 9),
        "calls": args.calls or (3 if quick else 20),
        "warmup": 2 if quick else 3,
        "seed": args.seed,
    }


def write(doc: dict[str, Any], out: Path) -> list[Path]:
    """Writes ``models_cpu.json`` and ``models_cpu.md`` to ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "models_cpu.json", out / "models_cpu.md"
    js.write_text(json.dumps(doc, indent=1, default=str))
    md.write_text("\n".join(models_cpu_markdown(doc, title="# Whole ShuffleNetV2 models on the CPU")) + "\n")
    return [js, md]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bench.models_cpu``."""
    args = parse_args(argv)
    doc = run(**settings_from(args))
    doc["settings"]["quick"] = bool(args.quick)
    paths = write(doc, args.out)
    print("\n".join(models_cpu_markdown(doc, title="# Whole ShuffleNetV2 models on the CPU")))
    print("wrote " + ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
