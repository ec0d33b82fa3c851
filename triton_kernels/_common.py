"""Helpers shared by the Triton op families: tensor views, output allocation, checks.

Everything here is host-side and traceable by ``make_fx`` (only shape/stride
arithmetic and PyTorch ops), because a ``triton_op`` body doubles as its fake kernel.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensor

from shufflenet_kernels.ops import output_memory_format

# Under the interpreter every program runs as numpy on the CPU: fewer, larger
# programs are faster there, and autotuning would only multiply the run time.
INTERPRET: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _fix_interpreter_index() -> None:
    """Lets the interpreter use runtime scalars as ``range`` bounds with NumPy >= 2.4.

    The interpreter holds a scalar as a 1-element array and converts it with
    ``int(array)``, which NumPy 2.4 turned into a TypeError for arrays with
    ``ndim > 0``; every ``for i in range(0, n, BLOCK)`` with a runtime ``n`` then
    fails. The replacement reads the single element explicitly (same value).
    Applies only under ``TRITON_INTERPRET=1``; compiled kernels are untouched.
    """
    from triton.runtime import interpreter

    patch_tensor = getattr(interpreter, "_patch_lang_tensor", None)
    if patch_tensor is None or getattr(patch_tensor, "_shufflenet_index_fix", False):
        return

    def patched(tensor: Any, scope: Any) -> None:
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._shufflenet_index_fix = True  # type: ignore[attr-defined]
    interpreter._patch_lang_tensor = patched


if INTERPRET:
    _fix_interpreter_index()


def triton_op(name: str) -> Callable[[Callable[..., Any]], Any]:
    """Registers the decorated host function as op ``name`` (schema from its annotations).

    Compiled Triton: ``torch.library.triton_op``, so ``torch.compile`` sees (and can
    optimise) the kernels; the same body serves as fake kernel. Under the interpreter
    (``TRITON_INTERPRET=1``) ``triton.jit`` gives ``InterpretedFunction`` objects,
    which ``wrap_triton`` and Inductor's kernel tracing do not accept. There the op
    is a plain ``torch.library.custom_op`` (opaque to the compiler) with the same body
    as fake kernel, and :func:`launch` skips the kernel for fake/meta tensors: the
    op still runs eagerly, under opcheck and under ``torch.compile``.

    Compiled kernels read CUDA memory only: a tensor argument on another device is
    refused by name before any launch (Triton's own error names no argument).
    """

    def register(fn: Callable[..., Any]) -> Any:
        if not INTERPRET:
            return torch.library.triton_op(name, _on_cuda_only(name, fn), mutates_args={})
        op = torch.library.custom_op(name, fn, mutates_args=())
        op.register_fake(fn)
        return op

    return register


# False only while aot.py records the launches of ops called on CPU tensors (its
# ``launch`` stand-in launches nothing).
REQUIRE_CUDA = True


def _on_cuda_only(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with a check that every tensor argument is a CUDA (or meta) tensor (same
    signature, so the op's schema is still inferred from ``fn``'s annotations)."""

    names = fn.__code__.co_varnames[: fn.__code__.co_argcount]

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if not REQUIRE_CUDA:
            return fn(*args, **kwargs)
        for arg_name, value in zip(names, args, strict=False):
            _check_cuda(name, arg_name, value)
        for arg_name, value in kwargs.items():
            _check_cuda(name, arg_name, value)
        return fn(*args, **kwargs)

    return checked


def _check_cuda(op: str, arg_name: str, value: Any) -> None:
    # Meta tensors hold no memory: the op then only propagates shapes, as it did before.
    values = value if isinstance(value, (list, tuple)) else (value,)
    for t in values:
        if isinstance(t, Tensor) and t.device.type not in ("cuda", "meta"):
            raise RuntimeError(
                f"{op}: {arg_name} is on {t.device}, but the compiled Triton kernels run on CUDA "
                "tensors only (torch.ops.shufflenet runs on the CPU; TRITON_INTERPRET=1 interprets "
                "the Triton kernels on CPU tensors)"
            )


class _InterpretedLaunch:
    """``kernel[grid](*args)`` that does nothing when any tensor argument is fake or meta."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel

    def __getitem__(self, grid: Any) -> Callable[..., None]:
        def run(*args: Any, **kwargs: Any) -> None:
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
            if any(isinstance(t, FakeTensor) or t.device.type == "meta" for t in tensors):
                return
            self.kernel[grid](*args, **kwargs)

        return run


def launch(kernel: Any) -> Any:
    """The launchable form of ``kernel``: ``torch.library.wrap_triton(kernel)`` when compiled
    (traceable by ``make_fx`` and Inductor); under the interpreter, see :func:`triton_op`."""
    if INTERPRET:
        return _InterpretedLaunch(kernel)
    return torch.library.wrap_triton(kernel)


def is_channels_last(t: Tensor) -> bool:
    """True when ``t``'s outputs are laid out channels-last (``channels_last`` or
    ``channels_last_3d``, its suggested memory format)."""
    return output_memory_format(t) in (torch.channels_last, torch.channels_last_3d)


def empty_output(
    sizes: Sequence[Any], like: Tensor, memory_format: torch.memory_format | None = None
) -> Tensor:
    """A new tensor of ``sizes`` with ``like``'s dtype/device, in ``like``'s suggested format."""
    fmt = output_memory_format(like) if memory_format is None else memory_format
    return torch.empty(sizes, dtype=like.dtype, device=like.device, memory_format=fmt)


def not_requested(like: Tensor) -> Tensor:
    """The ``[0]`` placeholder returned for a gradient that ``output_mask`` did not ask for."""
    return like.new_empty((0,))


def channel_view(t: Tensor) -> tuple[Tensor, tuple[Any, Any, Any, Any, Any, Any]]:
    """``t`` seen as ``[N, C, S]`` (all spatial dims collapsed into one strided dim).

    Returns ``(tensor, (n, c, s, stride_n, stride_c, stride_s))``. ``tensor`` is
    ``t`` itself for NCHW, channels_last and channel slices of either (no copy);
    other strides are copied into ``t``'s suggested format first. Mirrors
    ``as_channel_view`` in ``csrc/common/checks.cpp``.
    """
    s = 1
    stride_s = 1
    seen = False
    collapsible = True
    # Walk the spatial dims from the inner-most out; size-1 dims carry no constraint.
    for d in range(t.dim() - 1, 1, -1):
        size = t.shape[d]
        if size == 1:
            continue
        if not seen:
            stride_s = t.stride(d)
            seen = True
        elif t.stride(d) != stride_s * s:
            collapsible = False
        s = s * size
    if not seen:
        s = 1
        for d in range(2, t.dim()):
            s = s * t.shape[d]
    if not collapsible:
        return channel_view(t.contiguous(memory_format=output_memory_format(t)))
    return t, (t.shape[0], t.shape[1], s, t.stride(0), t.stride(1), stride_s)


def plain_4d(t: Tensor, channels_last: bool) -> Tensor:
    """``t`` if its ``(N, C, H, W)`` strides are those of a dense NCHW (or NHWC when
    ``channels_last``) tensor or a channel slice of one; else a copy in that format.

    The layout's inner dim then has stride 1: Triton specialises an integer argument
    equal to 1 as a constant, so the kernels see which dim is contiguous and
    vectorise along it. Mirrors ``with_plain_strides`` in ``csrc/common/checks.cpp``.
    """
    if channels_last:
        ok = t.stride(1) == 1 and (t.shape[2] == 1 or t.stride(2) == t.shape[3] * t.stride(3))
        return t if ok or t.numel() == 0 else t.contiguous(memory_format=torch.channels_last)
    ok = t.stride(3) == 1 and (t.shape[2] == 1 or t.stride(2) == t.shape[3])
    return t if ok or t.numel() == 0 else t.contiguous()


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; a fixed stand-in elsewhere (interpreter)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def pow2_clamp(x: Any, lo: int, hi: int) -> int:
    """``next_power_of_2(x)`` clamped to ``[lo, hi]`` (block sizes are powers of two)."""
    return max(lo, min(hi, triton.next_power_of_2(max(int(x), 1))))


# ---- device code shared by the families ---------------------------------------


@triton.jit
def _sum_partials_kernel(
    part_ptr,
    out_ptr,
    num_splits,
    M,
    stride_part,
    BLOCK: tl.constexpr,
):
    """out[m] = sum over s of part[s, m], s in increasing order (deterministic)."""
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = offs < M
    acc = tl.load(part_ptr + offs, mask=mask, other=0.0)
    for s in range(1, num_splits):
        acc += tl.load(part_ptr + s * stride_part + offs, mask=mask, other=0.0)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


def sum_partials(partials: Tensor, out: Tensor) -> None:
    """Writes ``partials.sum(0)`` (``[splits, M]``, contiguous) into ``out`` (``M`` elements,
    contiguous) in a fixed order, cast to ``out``'s dtype."""
    splits, m = partials.shape
    block = 256 if not INTERPRET else pow2_clamp(m, 16, 4096)
    launch(_sum_partials_kernel)[(triton.cdiv(m, block),)](
        partials,
        out,
        splits,
        m,
        partials.stride(0),
        BLOCK=block,
    )


def acc_is_fp64(t: Tensor) -> bool:
    """Accumulate in float64 for float64 tensors (CPU gradcheck), in float32 otherwise."""
    return t.dtype == torch.float64
