"""Whole-unit and whole-model cases (inference, eval mode).

Units: ``shufflenet_kernels.reference.ShuffleV1Unit`` / ``ShuffleV2Unit`` eager and
compiled, against the fused units ``shufflenet_kernels.nn.ShuffleV1Unit`` /
``ShuffleV2Unit`` and ``shufflenet_kernels.accelerate(unit)`` when the package has
them. Models: ``shufflenet_kernels.models.shufflenet_v2`` / ``shufflenet_v1`` eager,
compiled, and accelerated, when present. What is missing is skipped with a note.
MAC and FLOPs are those of the eager reference (``core.count_cost``); V2 unit cases also
carry ``fused_mac_bytes``, the bytes the one-pass fused unit must move
(``shufflenet_kernels.mac.v2_unit_cost``), and the report gives each provider's GB/s
against it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

import shufflenet_kernels as sk
from shufflenet_kernels import mac, reference

from .core import COMPILE, EAGER, KERNEL, Case, Provider, count_cost, tensor

# (label, kind, in, out, stride, hw of the input, groups): the units of V2 x1.0 (each
# stage's stride-2 first unit and its stride-1 units) and stage 3 of V1 g=3.
UNIT_SHAPES: tuple[tuple[str, str, int, int, int, int, int], ...] = (
    ("v2x1.0-s2-stride2", "v2", 24, 116, 2, 56, 0),
    ("v2x1.0-s2-stride1", "v2", 116, 116, 1, 28, 0),
    ("v2x1.0-s3-stride2", "v2", 116, 232, 2, 28, 0),
    ("v2x1.0-s3-stride1", "v2", 232, 232, 1, 14, 0),
    ("v2x1.0-s4-stride2", "v2", 232, 464, 2, 14, 0),
    ("v2x1.0-s4-stride1", "v2", 464, 464, 1, 7, 0),
    ("v1g3-s3-stride1", "v1", 480, 480, 1, 14, 3),
    ("v1g3-s3-stride2", "v1", 240, 480, 2, 28, 3),
)
MODEL_CONFIGS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("shufflenet_v2_x1.0", "shufflenet_v2", {"width": 1.0}),
    ("shufflenet_v1_g3_x1.0", "shufflenet_v1", {"groups": 3, "width": 1.0}),
)


def _models_module() -> Any:
    try:
        from shufflenet_kernels import models
    except ImportError:
        return None
    return models


def availability() -> dict[str, bool]:
    """Which optional pieces (fused units, models, accelerate) the installed package has."""
    models = _models_module()
    return {
        "fused_v1_unit": hasattr(sk.nn, "ShuffleV1Unit"),
        "fused_v2_unit": hasattr(sk.nn, "ShuffleV2Unit"),
        "accelerate": hasattr(sk, "accelerate"),
        "models_v1": models is not None and hasattr(models, "shufflenet_v1"),
        "models_v2": models is not None and hasattr(models, "shufflenet_v2"),
    }


def _share_weights(module: nn.Module, ref: nn.Module) -> bool:
    """Loads ``ref``'s weights into ``module``; False when the parameter layouts differ."""
    try:
        module.load_state_dict(ref.state_dict())
    except (RuntimeError, KeyError):
        return False
    return True


def _prepare(module: nn.Module, dtype: torch.dtype, device: torch.device, layout: str) -> nn.Module:
    module = module.to(device=device, dtype=dtype).eval()
    if layout == "channels_last":
        module = module.to(memory_format=torch.channels_last)
    return module


def randomise_bn(module: nn.Module, seed: int = 0) -> None:
    """Random running statistics and affine parameters for every ``BatchNorm2d`` of ``module``.

    Fresh BN layers are the identity; random statistics make a wrong fused BN visible
    (and make BN folding do real work). Deterministic for a given ``seed``.
    """
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def _module_providers(
    ref: nn.Module, x: torch.Tensor, fused: list[tuple[str, Callable[[], nn.Module]]], with_compile: bool
) -> list[Provider]:
    def call(m: nn.Module) -> Callable[[], Any]:
        def fn() -> Any:
            return m(x)

        # A module that could not take the reference's weights computes something else.
        fn.skip_check = not getattr(m, "_bench_same_weights", True)  # type: ignore[attr-defined]
        return fn

    providers = [Provider("eager", EAGER, lambda: call(ref))]
    if with_compile:
        providers.append(Provider("compile", COMPILE, lambda: call(torch.compile(ref, dynamic=False))))
    providers += [Provider(name, KERNEL, (lambda b=build: call(b()))) for name, build in fused]
    return providers


def _fused_unit(
    kind: str,
    cin: int,
    cout: int,
    stride: int,
    groups: int,
    ref: nn.Module,
    dtype: torch.dtype,
    device: torch.device,
    layout: str,
) -> nn.Module:
    if kind == "v2":
        unit = sk.nn.ShuffleV2Unit(cin, cout, stride)
    else:
        unit = sk.nn.ShuffleV1Unit(cin, cout, groups, stride, True)
    # Same weights as the reference when the layouts agree, so the outputs can be compared.
    unit = _prepare(unit, dtype, device, layout)
    unit._bench_same_weights = _share_weights(unit, ref)
    return unit


def unit_cases(
    device: torch.device,
    batches: Sequence[int],
    dtypes: Sequence[torch.dtype],
    layouts: Sequence[str],
    compile_limit: int = -1,
    notes: list[str] | None = None,
) -> list[Callable[[], list[Case]]]:
    """Factories of the V1/V2 unit cases (eager, compile, fused, accelerate)."""
    have = availability()
    if notes is not None:
        if not (have["fused_v1_unit"] and have["fused_v2_unit"]):
            notes.append(
                "units: shufflenet_kernels.nn.ShuffleV1Unit/ShuffleV2Unit not available; "
                "timing the reference units only"
            )
        if not have["accelerate"]:
            notes.append("units/models: shufflenet_kernels.accelerate not available; skipped")
    budget = [compile_limit]
    out: list[Callable[[], list[Case]]] = []
    for label, kind, cin, cout, stride, hw, groups in UNIT_SHAPES:
        for n in batches:
            for dtype in dtypes:
                for layout in layouts:
                    with_compile = budget[0] != 0
                    if budget[0] > 0:
                        budget[0] -= 1

                    def build(
                        label=label,
                        kind=kind,
                        cin=cin,
                        cout=cout,
                        stride=stride,
                        hw=hw,
                        groups=groups,
                        n=n,
                        dtype=dtype,
                        layout=layout,
                        with_compile=with_compile,
                    ) -> list[Case]:
                        if kind == "v2":
                            ref = reference.ShuffleV2Unit(cin, cout, stride)
                        else:
                            ref = reference.ShuffleV1Unit(cin, cout, groups, stride, True)
                        randomise_bn(ref)
                        ref = _prepare(ref, dtype, device, layout)
                        x = tensor((n, cin, hw, hw), dtype, device, layout)
                        fused: list[tuple[str, Callable[[], nn.Module]]] = []
                        if have[f"fused_{kind}_unit"]:
                            fused.append(
                                (
                                    "fused_unit",
                                    lambda: _fused_unit(
                                        kind, cin, cout, stride, groups, ref, dtype, device, layout
                                    ),
                                )
                            )
                        if have["accelerate"]:
                            fused.append(("accelerate", lambda: sk.accelerate(ref)))  # converts a deep copy
                        with torch.no_grad():
                            mac_bytes, flops = count_cost(lambda: ref(x))
                        extra: dict[str, Any] = {"mac_basis": "eager reference, sum over aten ops"}
                        if kind == "v2":
                            # What the one-pass fused unit must move: its achieved GB/s is
                            # reported against this too (mac.v2_unit_cost).
                            elem = torch.empty((), dtype=dtype).element_size()
                            fused_cost = mac.v2_unit_cost((n, cin, hw, hw), cout, stride, elem)
                            extra["fused_mac_bytes"] = fused_cost.mac_bytes
                        params = {
                            "batch": n,
                            "dtype": str(dtype).removeprefix("torch."),
                            "layout": layout,
                            "shape": [n, cin, hw, hw],
                            "out_channels": cout,
                            "stride": stride,
                            "groups": groups,
                        }
                        return [
                            Case(
                                "units",
                                "fwd",
                                label,
                                params,
                                mac_bytes,
                                flops,
                                _module_providers(ref, x, fused, with_compile),
                                flush_l2=False,
                                extra=extra,
                            )
                        ]

                    out.append(build)
    return out


def model_cases(
    device: torch.device,
    batches: Sequence[int],
    dtypes: Sequence[torch.dtype],
    layouts: Sequence[str],
    compile_limit: int = -1,
    notes: list[str] | None = None,
) -> list[Callable[[], list[Case]]]:
    """Factories of the whole-model cases (224x224 input), when ``shufflenet_kernels.models`` exists.

    Eager and compile run the plain-PyTorch model (``models.reference_<name>`` when the
    package has it); ``model_fused`` is ``models.<name>`` with the reference's weights,
    ``accelerate`` is ``shufflenet_kernels.accelerate`` of a copy of the reference.
    """
    have = availability()
    configs = [c for c in MODEL_CONFIGS if have["models_v2" if c[1] == "shufflenet_v2" else "models_v1"]]
    if not configs:
        if notes is not None:
            notes.append(
                "models: shufflenet_kernels.models (shufflenet_v1/shufflenet_v2) not available; skipped"
            )
        return []
    models = _models_module()
    budget = [compile_limit]
    out: list[Callable[[], list[Case]]] = []
    for label, factory, kwargs in configs:
        for n in batches:
            for dtype in dtypes:
                for layout in layouts:
                    with_compile = budget[0] != 0
                    if budget[0] > 0:
                        budget[0] -= 1

                    def build(
                        label=label,
                        factory=factory,
                        kwargs=kwargs,
                        n=n,
                        dtype=dtype,
                        layout=layout,
                        with_compile=with_compile,
                    ) -> list[Case]:
                        fused_factory = getattr(models, factory)
                        ref_factory = getattr(models, f"reference_{factory}", None)
                        ref = (ref_factory or fused_factory)(**kwargs)
                        randomise_bn(ref)
                        ref = _prepare(ref, dtype, device, layout)
                        x = tensor((n, 3, 224, 224), dtype, device, layout)
                        fused: list[tuple[str, Callable[[], nn.Module]]] = []
                        if ref_factory is not None:

                            def make_fused() -> nn.Module:
                                m = _prepare(fused_factory(**kwargs), dtype, device, layout)
                                m._bench_same_weights = _share_weights(m, ref)
                                return m

                            fused.append(("model_fused", make_fused))
                        if have["accelerate"]:
                            fused.append(("accelerate", lambda: sk.accelerate(ref)))  # converts a deep copy
                        with torch.no_grad():
                            mac_bytes, flops = count_cost(lambda: ref(x))
                        params = {
                            "batch": n,
                            "dtype": str(dtype).removeprefix("torch."),
                            "layout": layout,
                            "model": factory,
                            **kwargs,
                        }
                        basis = "reference" if ref_factory is not None else "fused"
                        return [
                            Case(
                                "models",
                                "fwd",
                                label,
                                params,
                                mac_bytes,
                                flops,
                                _module_providers(ref, x, fused, with_compile),
                                flush_l2=False,
                                extra={
                                    "mac_basis": f"eager {basis} model, sum over aten ops",
                                    "eager_model": basis,
                                },
                            )
                        ]

                    out.append(build)
    return out
