"""pytest-benchmark microbenchmarks of every op (forward and backward) on the quick shapes.

Run: ``pytest bench/test_bench_ops.py --benchmark-enable`` (the project's pytest
options disable benchmarks by default, so plain ``pytest bench`` only runs each case
once and checks the kernels against eager PyTorch). The same cases, with
``torch.compile``, copy rooflines and the report, come from ``python -m bench``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from bench.core import COPY, EAGER, KERNEL, Case, outputs_match
from bench.ops_cases import OPS, kernel_namespaces, op_cases

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BATCH = 32 if DEVICE.type == "cuda" else 4


def _collect() -> list[tuple[Case, str]]:
    out = []
    for op in OPS:
        for factory in op_cases(
            op, DEVICE, [BATCH], [torch.float32], ["nchw", "channels_last"], quick=True, compile_limit=0
        ):
            for case in factory():
                out += [(case, p.name) for p in case.providers if p.role in (KERNEL, EAGER, COPY)]
    return out


PARAMS = _collect() if kernel_namespaces(DEVICE) else []


def _provider(case: Case, name: str) -> Any:
    return next(p for p in case.providers if p.name == name)


@pytest.mark.skipif(not PARAMS, reason="no kernels of shufflenet_kernels on this device")
@pytest.mark.parametrize(("case", "provider"), PARAMS, ids=[f"{c.group}-{p}" for c, p in PARAMS])
def test_bench(benchmark: Any, case: Case, provider: str) -> None:
    p = _provider(case, provider)
    fn = p.build()
    benchmark.group = case.group
    benchmark.extra_info.update(
        {
            "mac_bytes": case.mac_bytes,
            "flops": case.flops,
            "flops_unit": "multiply-adds",
            "provider": provider,
            "role": p.role,
            **case.params,
        }
    )
    with torch.no_grad():
        out = benchmark(fn)
        if p.role == KERNEL:
            want = _provider(case, "eager").build()()
            assert outputs_match(out, want), f"{case.group}: {provider} differs from eager PyTorch"
