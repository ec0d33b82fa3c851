"""One contender of the whole-model CPU comparison, in a process of its own.

``bench.models_cpu`` starts one of these per contender and thread count
(``python -m bench.model_worker --contender NAME --threads T --cpus 0,1``) with
``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` set to T, and drives it over a line protocol:
one JSON object per line on stdin, one reply per line on the process's original stdout
(everything printed by libraries goes to stderr instead, so it cannot corrupt a reply).

Why a process per contender: torch's intra-op pool size, Inductor's ``freezing`` flag,
ONNX Runtime's and OpenVINO's thread pools are per process; in one shared process the
settings of one contender would leak into the next (or, for the OpenMP pool, could not
be changed at all once started). Each worker also pins itself to the same T CPUs, so
every contender has the same cores and the same thread count.

Commands and replies:

* start-up reply: ``{"ready": true, "available": bool, "reason": str, "info": {...}}``;
* ``{"cmd": "setup", "model": "x1.0", "batch": 1, "seed": 0, "warmup": 3}`` builds the
  torchvision model (fixed seed, randomised BN), the contender's callable and checks
  its output against torchvision eager NCHW -> ``{"ok": true, "max_abs_err", "ref_max",
  "build_s", "info"}`` or ``{"ok": false, "reason"}``;
* ``{"cmd": "time", "calls": 20}`` -> ``{"times": [seconds per call, ...]}``;
* ``{"cmd": "release"}`` drops the model; ``{"cmd": "quit"}`` exits.
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import inspect
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Contenders, in the order the tables list them.
CONTENDERS: tuple[str, ...] = (
    "eager",
    "eager_cl",
    "compile",
    "compile_freezing",
    "compile_max_autotune",
    "accelerate",
    "accelerate_fused",
    "accelerate_zero_copy",
    "onnxruntime",
    "openvino",
)
DESCRIPTIONS: dict[str, str] = {
    "eager": "torchvision model, eager, NCHW input (the reference every output is checked against)",
    "eager_cl": "eager, model and input in channels_last (the input converted outside the timed call)",
    "compile": "torch.compile(model) (default mode), NCHW input",
    "compile_freezing": "torch.compile with torch._inductor.config.freezing=True (weights folded as constants)",
    "compile_max_autotune": 'torch.compile(mode="max-autotune")',
    "accelerate": (
        "shufflenet_kernels.accelerate(model, fuse_units=False): per-op kernels, BN folded, channels_last on entry"
    ),
    "accelerate_fused": "shufflenet_kernels.accelerate(model, fuse_units=True): fused units",
    "accelerate_zero_copy": (
        "shufflenet_kernels.accelerate(model, zero_copy=True): fused units, each stage's stride-1 units in place"
    ),
    "onnxruntime": "ONNX Runtime, CPU execution provider, intra_op_num_threads=T, inter_op_num_threads=1",
    "openvino": "OpenVINO CPU plugin from the ONNX file, INFERENCE_NUM_THREADS=T, NUM_STREAMS=1, "
    "PERFORMANCE_HINT=LATENCY, INFERENCE_PRECISION_HINT=f32",
}
MODELS: dict[str, str] = {
    "x0.5": "shufflenet_v2_x0_5",
    "x1.0": "shufflenet_v2_x1_0",
    "x1.5": "shufflenet_v2_x1_5",
    "x2.0": "shufflenet_v2_x2_0",
}


def availability(name: str) -> tuple[bool, str]:
    """Whether contender ``name`` can run here, and why not (the note printed when skipped)."""
    if importlib.util.find_spec("torchvision") is None:
        return False, "torchvision is not installed (pip install torchvision)"
    if name.startswith("accelerate"):
        import shufflenet_kernels as sk

        if not hasattr(sk, "accelerate"):
            return False, "shufflenet_kernels.accelerate is not available"
        params = inspect.signature(sk.accelerate).parameters
        if name == "accelerate_fused" and "fuse_units" not in params:
            return False, "shufflenet_kernels.accelerate has no fuse_units keyword in this version"
        if name == "accelerate_zero_copy" and "zero_copy" not in params:
            return False, "shufflenet_kernels.accelerate has no zero_copy keyword in this version"
    if name == "onnxruntime":
        for mod in ("onnxruntime", "onnx"):
            if importlib.util.find_spec(mod) is None:
                return False, f"{mod} is not installed (pip install .[baselines])"
    if name == "openvino":
        for mod in ("openvino", "onnx"):
            if importlib.util.find_spec(mod) is None:
                return False, f"{mod} is not installed (pip install .[baselines])"
    if name not in CONTENDERS:
        return False, f"unknown contender {name!r}"
    return True, ""


def build_reference(model: str, batch: int, seed: int) -> tuple[Any, Any]:
    """``(eval-mode torchvision model, NCHW float32 input)``, the same in every worker for one seed."""
    import torch
    import torchvision

    from .units import randomise_bn

    torch.manual_seed(seed)
    m = getattr(torchvision.models, MODELS[model])(weights=None)
    randomise_bn(m, seed)
    m.eval()
    x = torch.randn((batch, 3, 224, 224), generator=torch.Generator().manual_seed(seed + 1))
    return m, x


def _export_onnx(m: Any, x: Any, path: Path) -> str:
    """Writes ``m`` to ``path``: the TorchScript exporter, else the dynamo one; returns which ran."""
    import torch

    try:
        torch.onnx.export(m, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"])
        return "torch.onnx.export(dynamo=False)"
    except Exception as exc:  # the TorchScript exporter may be missing or refuse; dynamo is the fallback
        first = f"{type(exc).__name__}: {exc}".split("\n")[0]
    torch.onnx.export(m, (x,), str(path), dynamo=True, input_names=["x"], output_names=["y"])
    return f"torch.onnx.export(dynamo=True) (TorchScript exporter failed: {first[:120]})"


def build_contender(name: str, m: Any, x: Any, threads: int, tmp: Path) -> tuple[Callable[[], Any], dict]:
    """The zero-argument callable of contender ``name`` on model ``m`` and input ``x``, and facts to record.

    The callable returns something ``to_numpy`` turns into the logits.
    """
    import torch

    info: dict[str, Any] = {}
    if name == "eager":
        return (lambda: m(x)), info
    if name == "eager_cl":
        mc = copy.deepcopy(m).to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)
        return (lambda: mc(xc)), info
    if name.startswith("compile"):
        import torch._inductor.config as inductor_config

        kwargs: dict[str, Any] = {}
        if name == "compile_freezing":
            inductor_config.freezing = True  # this process only; one contender per process
        if name == "compile_max_autotune":
            kwargs["mode"] = "max-autotune"
        info["inductor_freezing"] = bool(inductor_config.freezing)
        mc = torch.compile(copy.deepcopy(m), **kwargs)
        return (lambda: mc(x)), info
    if name.startswith("accelerate"):
        import shufflenet_kernels as sk

        kwargs = {}
        if "fuse_units" in inspect.signature(sk.accelerate).parameters:  # the per-op path, explicitly
            kwargs["fuse_units"] = name != "accelerate"
        if name == "accelerate_zero_copy":
            kwargs["zero_copy"] = True
        ma = sk.accelerate(m, **kwargs)  # converts a deep copy
        return (lambda: ma(x)), info
    if name in ("onnxruntime", "openvino"):
        path = tmp / "model.onnx"
        info["export"] = _export_onnx(m, x, path)
        xn = x.numpy()
        if name == "onnxruntime":
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            info.update(
                onnxruntime_version=ort.__version__,
                providers=sess.get_providers(),
                intra_op_num_threads=threads,
                inter_op_num_threads=1,
            )
            feed = {sess.get_inputs()[0].name: xn}
            return (lambda: sess.run(None, feed)[0]), info
        import openvino as ov

        core = ov.Core()
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            # The CPU plugin's default runs bf16 on CPUs with AMX/avx512_bf16: ask for f32.
            "INFERENCE_PRECISION_HINT": "f32",
        }
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        info["openvino_version"] = ov.__version__
        for key in ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS", "ENABLE_CPU_PINNING"):
            try:
                value = compiled.get_property(key)
            except Exception:  # a property this OpenVINO version does not report
                value = None
            # An element type (the precision hint) prints as "<Type: 'float32'>": record its name, "f32".
            info[key] = value.get_type_name() if hasattr(value, "get_type_name") else value
        info["cpu_capabilities"] = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        request = compiled.create_infer_request()

        def run() -> Any:
            request.infer({0: xn}, share_inputs=True)
            return request.get_output_tensor(0).data

        return run, info
    raise ValueError(f"unknown contender {name!r}")


def to_numpy(out: Any) -> Any:
    """The logits of a contender's call as a float32 numpy array."""
    import numpy as np

    if hasattr(out, "detach"):
        return out.detach().float().contiguous().numpy()
    return np.asarray(out, dtype=np.float32)


class Worker:
    """Holds the current model's callable and answers the driver's commands."""

    def __init__(self, name: str, threads: int) -> None:
        self.name, self.threads = name, threads
        self.fn: Callable[[], Any] | None = None
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))

    def setup(self, model: str, batch: int, seed: int, warmup: int) -> dict[str, Any]:
        import numpy as np
        import torch

        self.release()
        t0 = time.perf_counter()
        with torch.no_grad():
            m, x = build_reference(model, batch, seed)
            ref = to_numpy(m(x))
            fn, info = build_contender(self.name, m, x, self.threads, self.tmp)
            out = to_numpy(fn())
            for _ in range(max(warmup - 1, 0)):
                fn()
        build_s = time.perf_counter() - t0
        if out.shape != ref.shape:
            return {"ok": False, "reason": f"output shape {out.shape} != reference {ref.shape}"}
        self.fn = fn
        return {
            "ok": True,
            "max_abs_err": float(np.abs(out - ref).max()),
            "ref_max": float(np.abs(ref).max()),
            "build_s": build_s,
            "info": info,
        }

    def time(self, calls: int) -> dict[str, Any]:
        import torch

        if self.fn is None:
            return {"ok": False, "reason": "no model set up"}
        fn, times = self.fn, []
        with torch.no_grad():
            for _ in range(calls):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        return {"ok": True, "times": times}

    def release(self) -> dict[str, Any]:
        self.fn = None
        gc.collect()
        return {"ok": True}


def _pin(cpus: list[int]) -> list[int] | None:
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
        return sorted(os.sched_getaffinity(0))
    return None


def serve(name: str, threads: int, cpus: list[int], reply: Any) -> int:
    """The worker's loop: reads commands from stdin and writes one JSON reply per line to ``reply``."""

    def send(obj: dict[str, Any]) -> None:
        reply.write(json.dumps(obj, default=str) + "\n")
        reply.flush()

    pinned = _pin(cpus)
    available, reason = availability(name)
    if not available:
        send({"ready": True, "available": False, "reason": reason})
        return 0
    import torch

    torch.set_num_threads(threads)
    info = {"torch_threads": torch.get_num_threads(), "cpus": pinned, "pid": os.getpid()}
    send({"ready": True, "available": True, "reason": "", "info": info})
    worker = Worker(name, threads)
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        cmd = msg.get("cmd")
        if cmd == "quit":
            break
        try:
            if cmd == "setup":
                send(worker.setup(msg["model"], int(msg["batch"]), int(msg["seed"]), int(msg.get("warmup", 3))))
            elif cmd == "time":
                send(worker.time(int(msg["calls"])))
            elif cmd == "release":
                send(worker.release())
            else:
                send({"ok": False, "reason": f"unknown command {cmd!r}"})
        except Exception as exc:  # a contender that fails on one model is reported, not fatal
            traceback.print_exc(file=sys.stderr)
            worker.release()
            send({"ok": False, "reason": f"{type(exc).__name__}: {exc}".split("\n")[0][:300]})
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.model_worker --contender NAME --threads T [--cpus 0,1]`` (started by bench.models_cpu)."""
    p = argparse.ArgumentParser(prog="python -m bench.model_worker")
    p.add_argument("--contender", required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--cpus", default="")
    args = p.parse_args(argv)
    # Replies go to the original stdout; anything else that prints (C or Python) goes to stderr.
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    cpus = [int(c) for c in args.cpus.split(",") if c.strip()]
    return serve(args.contender, args.threads, cpus, reply)


if __name__ == "__main__":
    sys.exit(main())
