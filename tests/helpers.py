"""Shared test helpers: which implementations to test, input layouts, tolerances."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor

import shufflenet_kernels
from shufflenet_kernels.backend import has_triton_ops

CUDA = torch.cuda.is_available()
TRITON_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@dataclasses.dataclass(frozen=True)
class Impl:
    """One implementation under test: an op namespace on a device."""

    namespace: str
    device: str

    @property
    def ops(self) -> torch._ops._OpNamespace:
        return getattr(torch.ops, self.namespace)

    @property
    def slow(self) -> bool:
        """Interpreted Triton: run it on small shapes only."""
        return self.namespace == "shufflenet_triton" and self.device == "cpu"

    def __str__(self) -> str:
        return f"{self.namespace}-{self.device}"


def _impl_params(include_slow: bool) -> list:
    """The implementations present here. CUDA ones exist only with a GPU (marked
    ``gpu``, so ``-m gpu`` selects them); without one they are not generated
    rather than reported as thousands of skips."""
    params = []
    if shufflenet_kernels.NATIVE_AVAILABLE:
        params.append(pytest.param(Impl("shufflenet", "cpu"), id="cpp-cpu"))
        if CUDA and shufflenet_kernels.has_cuda_kernels():
            params.append(pytest.param(Impl("shufflenet", "cuda"), id="cpp-cuda", marks=pytest.mark.gpu))
    if has_triton_ops():
        if CUDA:
            params.append(pytest.param(Impl("shufflenet_triton", "cuda"), id="triton-cuda",
                                       marks=[pytest.mark.gpu, pytest.mark.triton]))
        if include_slow and TRITON_INTERPRETED:
            params.append(pytest.param(Impl("shufflenet_triton", "cpu"), id="triton-interp",
                                       marks=pytest.mark.triton))
    return params


# Every implementation (small shapes) / every one fast enough for the shape sweeps.
ALL_IMPLS = _impl_params(include_slow=True)
FAST_IMPLS = _impl_params(include_slow=False)

LAYOUTS = ("nchw", "channels_last", "slice", "slice_cl", "strided")


def make_input(shape: Sequence[int], layout: str, dtype: torch.dtype = torch.float32, device: str = "cpu",
               *, extra_channels: int = 3, offset: int = 1) -> Tensor:
    """A tensor of `shape` laid out as `layout`.

    * ``nchw`` / ``channels_last``: dense;
    * ``slice`` / ``slice_cl``: channels [offset, offset + C) of a larger NCHW /
      channels_last tensor (the V2 channel split), read in place;
    * ``strided``: neither layout (spatial dims permuted in memory).
    """
    shape = list(shape)
    if layout in ("channels_last", "slice_cl") and len(shape) != 4:
        pytest.skip("channels_last is 4-D only")
    if layout in ("nchw", "channels_last"):
        x = torch.randn(shape, dtype=dtype, device=device)
        return x.to(memory_format=torch.channels_last) if layout == "channels_last" else x
    if layout in ("slice", "slice_cl"):
        big = list(shape)
        big[1] += extra_channels
        base = torch.randn(big, dtype=dtype, device=device)
        if layout == "slice_cl":
            base = base.to(memory_format=torch.channels_last)
        return base.narrow(1, offset, shape[1])
    if layout == "strided":
        if len(shape) < 4:
            return torch.randn(shape[0], shape[2], shape[1], dtype=dtype, device=device).transpose(1, 2)
        dims = list(range(len(shape)))
        perm = [0, 1] + dims[2:][::-1]
        return torch.randn([shape[p] for p in perm], dtype=dtype, device=device).permute(perm)
    raise ValueError(layout)


def dtypes_for(device: str) -> list[torch.dtype]:
    dts = [torch.float32, torch.float16, torch.bfloat16]
    return dts + [torch.float64] if device == "cpu" else dts


def tolerances(dtype: torch.dtype) -> dict[str, float]:
    """rtol/atol for computed (not copied) results vs a float32/float64 reference."""
    return {
        torch.float64: dict(rtol=1e-10, atol=1e-10),
        torch.float32: dict(rtol=1e-5, atol=1e-5),
        torch.float16: dict(rtol=1e-2, atol=1e-2),
        torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
    }[dtype]


def reference_dtype(dtype: torch.dtype) -> torch.dtype:
    """The reference is computed in float32 (float64 for float64) from the same values."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def expected_format(x: Tensor) -> torch.memory_format:
    return shufflenet_kernels.ops.output_memory_format(x)


def assert_layout_kept(out: Tensor, x: Tensor) -> None:
    fmt = expected_format(x)
    assert out.is_contiguous(memory_format=fmt), f"output strides {out.stride()} are not dense in {fmt}"


def impl_params(cases: list, *, numel, small: int = 20_000, layouts: Sequence[str] | None = None) -> list:
    """(impl, case[, layout]) tuples: every case on the fast implementations, and
    the cases with at most `small` elements on the interpreted Triton one. With
    `layouts`, each case is crossed with the layouts its rank supports."""
    out = []
    for p in ALL_IMPLS:
        impl = p.values[0]
        for case in cases:
            if impl.slow and numel(case) > small:
                continue
            if layouts is None:
                out.append(pytest.param(impl, case, id=f"{p.id}-{case.name}", marks=p.marks))
                continue
            for layout in layouts:
                if layout in layouts_for(case_rank(case)):
                    out.append(
                        pytest.param(impl, case, layout, id=f"{p.id}-{case.name}-{layout}", marks=p.marks)
                    )
    return out


def case_rank(case) -> int:
    return len(case.shape) if hasattr(case, "shape") else 4


def layouts_for(rank: int) -> tuple[str, ...]:
    """Layouts a tensor of this rank can take ("mixed": a channels_last slice with an NCHW partner)."""
    return LAYOUTS + ("mixed",) if rank == 4 else ("nchw", "slice", "strided")


def weight_like(shape: Sequence[int], dtype: torch.dtype, device: str, fan_in: int) -> Tensor:
    """Random weights scaled like a default init, so outputs stay O(1)."""
    return torch.randn(shape, dtype=dtype, device=device) / max(fan_in, 1) ** 0.5


def prod(xs: Sequence[int]) -> int:
    out = 1
    for x in xs:
        out *= x
    return out
