"""The ShuffleNet V2 paper's guideline experiments (Tables 1 to 4), eager vs these kernels.

Every network is 10 stacked blocks on a 56x56 input; FLOPs are held (nearly) fixed per
width column; the columns x1/x2/x4 multiply the channel counts by 1, 2 and 4 (Table 3's
``c = 128/256/512`` states this). Each row is timed as eager PyTorch and, where the ops
apply, with the 1x1 convolutions (and their ReLU) run by ``pointwise_conv``. Results are
batches per second next to the paper's figure: its GTX 1080Ti column on a GPU, its
CPU/ARM column on a CPU (the channel counts follow the matching column of the paper).
The paper's figures are in ``bench.paper_tables``.

Structures, where the paper leaves a choice:
* G1: block = 1x1 conv c1 -> c2, then 1x1 conv c2 -> c1 (no BN, no ReLU).
* G2: block = one 1x1 conv c -> c in g groups (c rounded up to a multiple of g).
* G3: k-fragment-series = k 1x1 convs of width round(c / sqrt(k)) in series (FLOPs ~ c^2);
  k-fragment-parallel = k branches of 1x1 conv c -> c/k, concatenated (FLOPs = c^2).
* G4: ResNet bottleneck 4c -> c (1x1) -> c (3x3) -> 4c (1x1), ReLU after each conv
  and after the shortcut add; "ReLU off" drops every ReLU, "shortcut off" drops the add.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from shufflenet_kernels import functional as SK

from .core import EAGER, KERNEL, Case, Provider, count_cost, tensor
from .paper_tables import G1_ROWS, G2_ROWS, G3_C, G3_ROWS, G4_C, G4_ROWS

HW = 56
BLOCKS = 10
WIDTHS = (1, 2, 4)


@dataclass
class _Net:
    """Weights of one guideline network and its two forward functions."""

    eager: Callable[[torch.Tensor], torch.Tensor]
    kernels: Callable[[torch.Tensor], torch.Tensor] | None
    channels_in: int
    structure: str


def _w(
    c_out: int, c_in: int, k: int, dtype: torch.dtype, device: torch.device, groups: int = 1
) -> torch.Tensor:
    fan_in = c_in // groups * k * k
    return tensor((c_out, c_in // groups, k, k), dtype, device) * fan_in**-0.5


def _conv_chain(weights: Sequence[tuple[torch.Tensor, int]]) -> tuple[Callable, Callable]:
    """Eager and kernel forward of 1x1 convs ``(weight, groups)`` applied in order, 10 times over."""

    def eager(x: torch.Tensor) -> torch.Tensor:
        for w, g in weights:
            x = F.conv2d(x, w, groups=g)
        return x

    def kernels(x: torch.Tensor) -> torch.Tensor:
        for w, g in weights:
            x = SK.pointwise_conv(x, w, None, g)
        return x

    return eager, kernels


def _g1(c1: int, c2: int, dtype: torch.dtype, device: torch.device) -> _Net:
    weights = []
    for _ in range(BLOCKS):
        weights += [(_w(c2, c1, 1, dtype, device), 1), (_w(c1, c2, 1, dtype, device), 1)]
    eager, kernels = _conv_chain(weights)
    return _Net(eager, kernels, c1, f"1x1 {c1}->{c2}->{c1}")


def _g2(c: int, g: int, dtype: torch.dtype, device: torch.device) -> _Net:
    # The paper's CPU row g=8 has c=180, which 8 groups do not divide: round up to a multiple.
    c = -(-c // g) * g
    weights = [(_w(c, c, 1, dtype, device, g), g) for _ in range(BLOCKS)]
    eager, kernels = _conv_chain(weights)
    return _Net(eager, kernels, c, f"1x1 {c}->{c} g={g}")


def _g3(structure: str, c: int, dtype: torch.dtype, device: torch.device) -> _Net:
    k = int(structure[0])
    if structure == "1-fragment" or structure.endswith("series"):
        width = c if k == 1 else 2 * round(c / math.sqrt(k) / 2)
        weights = [(_w(width, width, 1, dtype, device), 1) for _ in range(BLOCKS * k)]
        eager, kernels = _conv_chain(weights)
        return _Net(eager, kernels, width, f"{k} x 1x1 {width}->{width} in series")
    branches = [[_w(c // k, c, 1, dtype, device) for _ in range(k)] for _ in range(BLOCKS)]

    def eager(x: torch.Tensor) -> torch.Tensor:
        for ws in branches:
            x = torch.cat([F.conv2d(x, w) for w in ws], 1)
        return x

    def kernels(x: torch.Tensor) -> torch.Tensor:
        for ws in branches:
            x = torch.cat([SK.pointwise_conv(x, w) for w in ws], 1)
        return x

    return _Net(eager, kernels, c, f"{k} x 1x1 {c}->{c // k} in parallel, concat")


def _g4(relu: bool, shortcut: bool, c: int, dtype: torch.dtype, device: torch.device) -> _Net:
    blocks = [
        (_w(c, 4 * c, 1, dtype, device), _w(c, c, 3, dtype, device), _w(4 * c, c, 1, dtype, device))
        for _ in range(BLOCKS)
    ]

    def eager(x: torch.Tensor) -> torch.Tensor:
        for w1, w2, w3 in blocks:
            y = F.conv2d(x, w1)
            y = F.relu(y) if relu else y
            y = F.conv2d(y, w2, padding=1)
            y = F.relu(y) if relu else y
            y = F.conv2d(y, w3)
            y = y + x if shortcut else y
            x = F.relu(y) if relu else y
        return x

    def kernels(x: torch.Tensor) -> torch.Tensor:
        for w1, w2, w3 in blocks:
            y = SK.pointwise_conv(x, w1, None, 1, 1, relu)
            y = F.conv2d(y, w2, padding=1)
            y = F.relu(y) if relu else y
            if shortcut:
                y = SK.pointwise_conv(y, w3) + x
                x = F.relu(y) if relu else y
            else:
                x = SK.pointwise_conv(y, w3, None, 1, 1, relu)
        return x

    return _Net(eager, kernels, 4 * c, f"bottleneck {4 * c}->{c}->{c}->{4 * c}")


def _case(
    table: str,
    row: str,
    width: int,
    net: _Net,
    batch: int,
    dtype: torch.dtype,
    device: torch.device,
    paper: float,
    paper_unit: str,
) -> Case:
    x = tensor((batch, net.channels_in, HW, HW), dtype, device)
    mac_bytes, flops = count_cost(lambda: net.eager(x))
    providers = [Provider("eager", EAGER, lambda: lambda: net.eager(x))]
    if net.kernels is not None:
        kernels = net.kernels
        providers.append(Provider("kernels", KERNEL, lambda: lambda: kernels(x)))
    label = f"{row}-x{width}"
    params = {
        "batch": batch,
        "dtype": str(dtype).removeprefix("torch."),
        "layout": "nchw",
        "table": table,
        "row": row,
        "width": width,
    }
    extra: dict[str, Any] = {
        "structure": net.structure,
        "paper": paper,
        "paper_unit": paper_unit,
        "hw": HW,
        "blocks": BLOCKS,
    }
    return Case(
        f"guideline_{table}", "fwd", label, params, mac_bytes, flops, providers, flush_l2=False, extra=extra
    )


def guideline_cases(
    device: torch.device, batch: int, dtype: torch.dtype, widths: Sequence[int] = WIDTHS
) -> list[Callable[[], list[Case]]]:
    """Factories of the G1-G4 cases for ``widths`` (each a channel multiplier in {1, 2, 4})."""
    gpu = device.type == "cuda"
    col = 1 if gpu else 3
    unit = "batches/s (GTX 1080Ti)" if gpu else "images/s (ARM/CPU, one thread)"
    out: list[Callable[[], list[Case]]] = []
    for width in widths:
        wi = WIDTHS.index(width)
        for ratio, row in G1_ROWS.items():
            c1, c2 = row[0] if gpu else row[2]
            out.append(
                lambda ratio=ratio, row=row, c1=c1, c2=c2, width=width, wi=wi: [
                    _case(
                        "G1",
                        ratio,
                        width,
                        _g1(c1 * width, c2 * width, dtype, device),
                        batch,
                        dtype,
                        device,
                        row[col][wi],
                        unit,
                    )
                ]
            )
        for g, row in G2_ROWS.items():
            c = row[0] if gpu else row[2]
            out.append(
                lambda g=g, row=row, c=c, width=width, wi=wi: [
                    _case(
                        "G2",
                        f"g{g}",
                        width,
                        _g2(c * width, g, dtype, device),
                        batch,
                        dtype,
                        device,
                        row[col][wi],
                        unit,
                    )
                ]
            )
        for structure, row in G3_ROWS.items():
            c = G3_C["gpu" if gpu else "cpu"] * width
            out.append(
                lambda structure=structure, row=row, c=c, width=width, wi=wi: [
                    _case(
                        "G3",
                        structure,
                        width,
                        _g3(structure, c, dtype, device),
                        batch,
                        dtype,
                        device,
                        row[0 if gpu else 1][wi],
                        unit,
                    )
                ]
            )
        for (relu, shortcut), row in G4_ROWS.items():
            name = f"relu-{'on' if relu else 'off'}-shortcut-{'on' if shortcut else 'off'}"
            out.append(
                lambda relu=relu, shortcut=shortcut, row=row, name=name, width=width, wi=wi: [
                    _case(
                        "G4",
                        name,
                        width,
                        _g4(relu, shortcut, G4_C * width, dtype, device),
                        batch,
                        dtype,
                        device,
                        row[0 if gpu else 1][wi],
                        unit,
                    )
                ]
            )
    return out
