"""Backend choice: which implementation of an op runs for a given tensor.

* ``"cuda"``   - the C++ kernels of ``torch.ops.shufflenet`` (CUDA on GPU tensors,
  the CPU kernels on CPU tensors);
* ``"triton"`` - the Triton kernels of ``torch.ops.shufflenet_triton`` (GPU tensors);
* ``"auto"``   - per op, the implementation listed in ``AUTO_CHOICE`` on GPU tensors,
  falling back to the other one when it is not available.

CPU tensors always run the C++ CPU kernels, whatever ``backend`` says (the Triton
kernels run on CPU only under the Triton interpreter, a testing tool).

The ``"auto"`` rule on GPU tensors (``AUTO_CHOICE``):

* ``channel_shuffle``, ``concat_shuffle`` -> C++ CUDA. Pure data movement; both
  implementations are one gather pass, and the C++ launch has less host overhead
  per call, which dominates at the small feature maps of the later stages.
* ``depthwise_conv2d`` -> C++ CUDA: the hand-written kernel stages input tiles
  and their halo in shared memory; the Triton kernel relies on L1/L2 for the halo.
* ``pointwise_conv`` -> Triton: its GEMM tiles run on tensor cores (``tl.dot``,
  autotuned per shape) while the C++ kernel is a CUDA-core (FFMA) GEMM, so the
  Triton kernel should win wherever the 1x1 conv is not purely memory-bound.

This table was set before any GPU measurement. The first ones (H200, float16, batch
256, two V1/V2 shapes per op in NCHW and channels_last, one run;
``bench/results/gpu-h200-2026-11-30b``) question it for ``pointwise_conv``: the C++
forward was faster in 3 of 4 cases (geomean 0.74x eager against Triton's 0.45x; the
V1 g=3 grouped conv in NCHW 108 against 362 us), Triton's only in V1 channels_last
(114 against 160 us), while Triton's backward was as fast or faster (up to 1.8x in
channels_last). The same run's ShuffleNet V1 model (its 1x1 convs grouped, batch 32)
ran 2.2x slower than eager PyTorch. The table stays as it is until whole models
are timed with each choice on a GPU.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from . import _loader

Backend = Literal["auto", "cuda", "triton"]
BACKENDS: tuple[str, ...] = ("auto", "cuda", "triton")

# Op -> backend "auto" picks on a GPU (rule and reasons in the module docstring).
# NOTE: educated guess pending GPU measurements.
AUTO_CHOICE: dict[str, str] = {
    "channel_shuffle": "cuda",
    "concat_shuffle": "cuda",
    "pointwise_conv": "triton",
    "depthwise_conv2d": "cuda",
}


def has_triton_ops() -> bool:
    """True when the Triton ops (``torch.ops.shufflenet_triton``) are registered.

    Importing the package registers them when Triton is importable.
    """
    _loader.load_triton_kernels()  # already done on import: a dict lookup
    return hasattr(torch.ops, "shufflenet_triton") and hasattr(torch.ops.shufflenet_triton, "channel_shuffle")


def check_backend(backend: str) -> None:
    """Raises ValueError unless ``backend`` is one of ``BACKENDS``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def resolve(op: str, backend: str, tensor: Tensor) -> str:
    """Namespace (``"shufflenet"`` or ``"shufflenet_triton"``) that runs ``op`` on ``tensor``.

    CPU (and any non-CUDA) tensors: always ``"shufflenet"``. CUDA tensors: the
    asked-for backend, or ``AUTO_CHOICE[op]`` for ``"auto"``; ``"auto"`` falls back to
    whichever implementation is available, an explicit choice that is not
    available raises RuntimeError.
    """
    check_backend(backend)
    if tensor.device.type != "cuda":
        return "shufflenet"
    choice = AUTO_CHOICE.get(op, "cuda") if backend == "auto" else backend
    if choice == "triton":
        if has_triton_ops():
            return "shufflenet_triton"
        if backend == "triton":
            raise RuntimeError(f"{op}: backend='triton' asked for, but the Triton kernels are not available")
        choice = "cuda"
    if not _loader.has_cuda_kernels():
        if backend == "auto" and has_triton_ops():
            return "shufflenet_triton"
        raise RuntimeError(
            f"{op}: the CUDA kernels were not built into shufflenet_kernels._C (rebuild with CUDA_HOME "
            "set to a CUDA toolkit matching torch's, and SHUFFLENET_NO_CUDA unset), and no Triton "
            "fallback is available"
        )
    return "shufflenet"


def op(name: str, backend: str, tensor: Tensor) -> torch._ops.OpOverload:
    """The op ``torch.ops.<namespace>.<name>.default`` chosen by ``resolve``."""
    # The usual CPU call ("auto", a CPU tensor) skips resolve's checks, whose answer
    # is known, and the overload packet's argument matching (one overload): together
    # they cost about as much as shuffling a small CPU tensor.
    if backend == "auto" and not tensor.is_cuda:
        return getattr(torch.ops.shufflenet, name).default
    return getattr(getattr(torch.ops, resolve(name, backend, tensor)), name).default
