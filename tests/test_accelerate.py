"""accelerate(model): conversion of reference, duck-typed and torchvision ShuffleNets."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import Tensor, nn

import shufflenet_kernels as sk
import shufflenet_kernels.functional as SF
from shufflenet_kernels import models, reference
from shufflenet_kernels.accelerate import is_v1_unit, is_v2_unit
from shufflenet_kernels.nn import ConvBNReLU, ShuffleV1Unit, ShuffleV2Unit, StemMaxPool
from tests.test_models import F64_TOL
from tests.test_units import TOL, check_step, eval_close, randomize


def _fused_types(model: nn.Module) -> set[str]:
    fused = (ConvBNReLU, ShuffleV1Unit, ShuffleV2Unit)
    return {type(m).__name__ for m in model.modules() if isinstance(m, fused)}


def test_accelerate_reference_v2_copies_by_default() -> None:
    ref = randomize(models.reference_shufflenet_v2(0.5, 10))
    fast = sk.accelerate(ref)
    assert fast is not ref
    assert _fused_types(ref) == set()  # the original is left as it was
    assert _fused_types(fast) == {"ConvBNReLU", "ShuffleV2Unit"}
    assert list(fast.state_dict()) == list(ref.state_dict())
    eval_close(ref, fast, torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("channels_last", [True, False])
def test_accelerate_channels_last_entry(channels_last: bool) -> None:
    """channels_last=True converts an NCHW input on entry (seen by the first conv), except
    when the fused stem reads it in place (eval, grad off: conv3x3_relu_maxpool takes NCHW);
    the result is the reference's either way."""
    ref = randomize(models.reference_shufflenet_v2(0.5, 10))
    fast = sk.accelerate(ref, channels_last=channels_last)
    seen: list[bool] = []
    fast.conv1.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    x = torch.randn(2, 3, 32, 32)
    eval_close(ref, fast, x)  # no_grad: the fused stem
    assert seen and not any(seen)
    seen.clear()
    with torch.enable_grad():  # eval with grad on: the conv and the pool run apart
        torch.testing.assert_close(fast.eval()(x), ref.eval()(x), **TOL)
    assert seen and all(s == channels_last for s in seen)


def test_accelerate_inplace_and_idempotent() -> None:
    model = randomize(models.reference_shufflenet_v1(3, 0.5, 10))
    same = sk.accelerate(model, inplace=True)
    assert same is model
    assert _fused_types(model) == {"ConvBNReLU", "ShuffleV1Unit"}
    again = sk.accelerate(model, backend="cuda", inplace=True)
    assert again is model and model.stage3[1].backend == "cuda"
    with pytest.raises(ValueError, match="backend"):
        sk.accelerate(model, backend="fast")  # type: ignore[arg-type]


def test_accelerate_single_units() -> None:
    v2 = randomize(reference.ShuffleV2Unit(24, 48, 2))
    v1 = randomize(reference.ShuffleV1Unit(24, 24, 2, 1))
    fast2, fast1 = sk.accelerate(v2), sk.accelerate(v1)
    assert isinstance(fast2, ShuffleV2Unit) and isinstance(fast1, ShuffleV1Unit)
    eval_close(v2, fast2, torch.randn(2, 24, 8, 8))
    check_step(v1, fast1, torch.randn(2, 24, 8, 8), train=True)


class _DuckV2(nn.Module):
    """Not torchvision's class: a V2 unit recognised by its structure alone."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(),
            nn.Conv2d(half, half, 5, 1, 2, groups=half, bias=False), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return reference.channel_shuffle(torch.cat((x1, self.branch2(x2)), 1), 2)


def test_accelerate_duck_typed_unit_and_leaves_others() -> None:
    model = randomize(nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU()),  # converted
        _DuckV2(16),  # converted
        nn.Sequential(nn.Conv2d(16, 16, 1), nn.ReLU(), nn.BatchNorm2d(16)),  # ReLU before BN: left alone
        nn.Conv2d(16, 8, 1),  # lone conv: left alone
    ))
    fast = sk.accelerate(model)
    assert isinstance(fast[0], ConvBNReLU) and isinstance(fast[1], ShuffleV2Unit)
    assert type(fast[2]) is nn.Sequential and type(fast[3]) is nn.Conv2d
    x = torch.randn(2, 3, 10, 10)
    eval_close(model, fast, x)
    check_step(model, fast, x, train=True)


def test_unit_detection() -> None:
    assert is_v2_unit(reference.ShuffleV2Unit(16, 16, 1)) and is_v2_unit(reference.ShuffleV2Unit(16, 32, 2))
    assert is_v1_unit(reference.ShuffleV1Unit(16, 16, 2, 1))
    assert not is_v2_unit(reference.ShuffleV1Unit(16, 16, 2, 1))
    assert not is_v1_unit(reference.ShuffleV2Unit(16, 16, 1))
    odd = reference.ShuffleV2Unit(16, 16, 1)
    odd.extra = nn.ReLU()  # another child: the forward is no longer known
    assert not is_v2_unit(odd)


def _torchvision():
    """torchvision, or a skip when it is not installed."""
    return pytest.importorskip("torchvision")


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_accelerate_torchvision_shufflenet_v2(train) -> None:
    tv = _torchvision()
    torch.manual_seed(0)
    model = randomize(tv.models.shufflenet_v2_x0_5(num_classes=10))
    fast = sk.accelerate(model)
    assert _fused_types(fast) == {"ConvBNReLU", "ShuffleV2Unit"}
    assert type(fast) is type(model)  # torchvision's own forward keeps running
    assert list(fast.state_dict()) == list(model.state_dict())
    x = torch.randn(2, 3, 32, 32)  # 32x32 reaches stage 4 at 1x1: every unit still runs
    if train:  # float64: see test_models.F64_TOL
        check_step(model.double(), fast.double(), x.double(), train=True, tol=F64_TOL)
    else:
        eval_close(model, fast, x.to(memory_format=torch.channels_last))


def test_torchvision_state_dict_loads_into_ours() -> None:
    tv = _torchvision()
    for width, ctor in [(0.5, tv.models.shufflenet_v2_x0_5), (1.0, tv.models.shufflenet_v2_x1_0)]:
        theirs = randomize(ctor())
        ours = models.shufflenet_v2(width)
        ours.load_state_dict(theirs.state_dict())  # strict: every key and shape matches
        eval_close(theirs, ours, torch.randn(1, 3, 32, 32))


@pytest.mark.gpu
def test_accelerated_model_cuda_graph_replay() -> None:
    ref = randomize(models.reference_shufflenet_v2(0.5, 10)).cuda().eval()
    fast = sk.accelerate(ref).eval()
    x = torch.randn(8, 3, 64, 64, device="cuda")
    with torch.no_grad():
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm up (builds the folded weights) off the capture
            for _ in range(2):
                fast(x)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fast(x)
        x.copy_(torch.randn_like(x))
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(out, ref(x), **TOL)


@pytest.mark.gpu
def test_accelerated_model_compile_reduce_overhead_cuda() -> None:
    torch._dynamo.reset()
    ref = randomize(models.reference_shufflenet_v2(0.5, 10)).cuda().eval()
    fast = torch.compile(sk.accelerate(ref).eval(), mode="reduce-overhead", fullgraph=True)
    x = torch.randn(4, 3, 64, 64, device="cuda")
    with torch.no_grad():
        for _ in range(3):
            out = fast(x)
        torch.testing.assert_close(out, ref(x), **TOL)


# ---- torch.fx and torch.export -------------------------------------------------------


def _fx_models() -> list:
    def tv_v2():
        return _torchvision().models.shufflenet_v2_x0_5(num_classes=10)

    return [
        pytest.param(tv_v2, id="torchvision-v2"),
        pytest.param(lambda: models.reference_shufflenet_v2(0.5, 10), id="ours-v2"),
        pytest.param(lambda: models.reference_shufflenet_v1(3, 0.5, 10), id="ours-v1-g3"),
    ]


@pytest.mark.parametrize("make", _fx_models())
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_accelerated_model_fx_symbolic_trace(make, train: bool) -> None:
    """torch.fx.symbolic_trace traces an accelerated model; the GraphModule computes what
    the model does: same output and, in training, the same BN running statistics
    (the graph calls the BN fold and the shuffled-order batch norm on the live modules)."""
    torch.manual_seed(0)
    fast = sk.accelerate(randomize(make())).train(train)
    # In eval mode the graph is traced for inference (no_grad): the V2 units are fused
    # there, as in the eager calls below (see test_fused_units_fx_graph).
    with torch.no_grad() if not train else contextlib.nullcontext():
        traced = torch.fx.symbolic_trace(copy.deepcopy(fast))
    assert isinstance(traced, torch.fx.GraphModule)
    # The graph starts at forward(): the channels_last entry hook is not part of it,
    # so it gets the channels_last input the hook would give the model.
    x = torch.randn(2, 3, 32, 32)  # 32x32 reaches stage 4 at 1x1: every unit still runs
    for step in range(2):  # twice: a second call must see the updated statistics
        with torch.no_grad():
            y, yt = fast(x), traced(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(yt, y, rtol=0, atol=0, msg=lambda m, step=step: f"call {step}: {m}")
    theirs = traced.state_dict()
    for name, value in fast.state_dict().items():
        torch.testing.assert_close(theirs[name], value, rtol=0, atol=0, msg=lambda m, name=name: f"{name}: {m}")
    # An NCHW input gives the same values (up to the summation order of the layout).
    with torch.no_grad():
        torch.testing.assert_close(traced.eval()(x), fast.eval()(x), **TOL)


@pytest.mark.parametrize("make", [
    pytest.param(lambda: reference.ShuffleV2Unit(24, 24, 1), id="v2-split"),
    pytest.param(lambda: reference.ShuffleV2Unit(24, 48, 2), id="v2-stride2"),
    pytest.param(lambda: reference.ShuffleV1Unit(24, 24, 3, 1), id="v1-g3"),
    pytest.param(lambda: reference.ShuffleV1Unit(24, 48, 3, 2), id="v1-g3-stride2"),
])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_accelerated_unit_fx_symbolic_trace(make, train: bool) -> None:
    fast = sk.accelerate(randomize(make())).train(train)
    traced = torch.fx.symbolic_trace(copy.deepcopy(fast))
    x = torch.randn(2, 24, 8, 8)
    torch.testing.assert_close(traced(x), fast(x), rtol=0, atol=0)


def test_accelerated_model_fx_trace_follows_parameter_changes() -> None:
    """The folded weights are computed by the graph, not frozen at trace time."""
    fast = sk.accelerate(randomize(models.reference_shufflenet_v2(0.5, 10))).eval()
    with torch.no_grad():  # an inference graph, like the calls below
        traced = torch.fx.symbolic_trace(fast)  # shares fast's modules
    x = torch.randn(1, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        before = traced(x)
        fast.stage2[0].branch2[1].running_var.mul_(4.0)
        after = traced(x)
        torch.testing.assert_close(after, fast(x), rtol=0, atol=0)
    assert not torch.equal(before, after)


@pytest.mark.parametrize("make", _fx_models()[::2])
def test_accelerated_model_torch_export(make) -> None:
    """torch.export.export of an accelerated model (eval mode): the exported program
    computes the model's output, with the fused ops in its graph."""
    torch.manual_seed(0)
    fast = sk.accelerate(randomize(make())).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        exported = torch.export.export(fast, (x,))
        y = fast(x)
        ye = exported.module()(x)
    torch.testing.assert_close(ye, y, **TOL)
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert any(t.startswith("shufflenet.") for t in targets), sorted(targets)


# ---- fused V2 units (fuse_units) -------------------------------------------------------

TV_V2 = ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0"]


def _fused_unit_calls(model: nn.Module, x: Tensor) -> int:
    """How many v2_unit calls an inference forward of ``model`` makes (its fx graph, traced
    under no_grad, holds one leaf call per fused unit)."""
    with torch.no_grad():
        graph = torch.fx.symbolic_trace(model).graph
    return sum(1 for n in graph.nodes if n.op == "call_function" and n.target is SF.v2_unit)


@pytest.mark.parametrize("name", TV_V2)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("fuse_units", [True, False], ids=["fused", "per-op"])
def test_accelerate_torchvision_fused_units(name: str, layout: str, fuse_units: bool) -> None:
    """Eval mode, fp32: every V2 unit as one v2_unit call (or, fuse_units=False, the
    per-op path) gives torchvision's output within 1e-4, in both layouts."""
    tv = _torchvision()
    model = randomize(getattr(tv.models, name)(num_classes=10)).eval()
    fast = sk.accelerate(model, fuse_units=fuse_units, channels_last=layout == "channels_last").eval()
    units = [m for m in fast.modules() if isinstance(m, ShuffleV2Unit)]
    assert len(units) == 16 and all(u.fuse_units == fuse_units for u in units)
    x = torch.randn(2, 3, 64, 64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    eval_close(model, fast, x)
    assert _fused_unit_calls(fast, x) == (16 if fuse_units else 0)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_accelerate_keeps_each_module_mode(train: bool) -> None:
    """The converted blocks take the mode of the modules they replace: converting an eval
    model gives an eval model whose units run fused with no further ``.eval()`` call."""
    ref = randomize(models.reference_shufflenet_v2(0.5, 10)).train(train)
    fast = sk.accelerate(ref, fuse_units=True)
    assert {m.training for m in fast.modules()} == {train}
    x = torch.randn(2, 3, 32, 32)
    assert _fused_unit_calls(fast, x) == (0 if train else 16)


def test_fused_units_only_in_inference() -> None:
    """Training mode, and eval mode with autograd reaching the parameters or the input,
    take the per-op path (gradients flow); the fused op runs under no_grad."""
    ref = randomize(reference.ShuffleV2Unit(24, 48, 2))
    fast = sk.accelerate(ref, fuse_units=True)
    x = torch.randn(2, 24, 8, 8)
    check_step(ref, fast, x, train=True)
    check_step(ref, fast, x, train=False)  # eval with grad: gradients w.r.t. parameters
    fast.eval()
    frozen = copy.deepcopy(fast).requires_grad_(False)
    xg = x.clone().requires_grad_(True)
    frozen(xg).sum().backward()  # the input needs grad: per-op path
    assert xg.grad is not None
    with torch.no_grad():
        assert _fused_unit_calls(fast, x) == 1
    traced_with_grad = torch.fx.symbolic_trace(fast)  # grad on, parameters require grad
    assert not any(n.target is SF.v2_unit for n in traced_with_grad.graph.nodes)


@pytest.mark.parametrize("name", TV_V2[:1])
def test_accelerated_fused_model_compiles(name: str) -> None:
    """torch.compile(fullgraph=True) of the accelerated model with fused units (eval,
    no_grad) gives torchvision's output."""
    tv = _torchvision()
    torch._dynamo.reset()
    model = randomize(getattr(tv.models, name)(num_classes=10)).eval()
    fast = sk.accelerate(model, fuse_units=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = torch.compile(fast, fullgraph=True)(x)
        torch.testing.assert_close(out, model(x), **TOL)


def test_accelerated_fused_model_exports() -> None:
    """torch.export of the accelerated torchvision model (eval, no_grad): the exported
    program holds one v2_unit per unit and computes torchvision's output."""
    tv = _torchvision()
    model = randomize(tv.models.shufflenet_v2_x0_5(num_classes=10)).eval()
    fast = sk.accelerate(model, fuse_units=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        exported = torch.export.export(fast, (x,))
        torch.testing.assert_close(exported.module()(x), model(x), **TOL)
    calls = [n for n in exported.graph.nodes if str(n.target) == "shufflenet.v2_unit.default"]
    assert len(calls) == 16
# Copies an eval forward may make: torchvision's own head makes two (inside mean
# and addmm); the fused units none (the depthwise weights
# are cached in the layout the kernels read, biases are used as they are).
MODEL_COPY_BOUND = 2


def _copies_per_forward(model: nn.Module, x: Tensor) -> tuple[int, int]:
    """(copies in the whole forward, copies inside ``shufflenet::`` ops), from the profiler."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        model(x)  # fills the folded-weight caches
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x)
    total = inside = 0
    for e in prof.events():
        if e.name != "aten::copy_":  # every copy (clone, contiguous, to) runs one
            continue
        total += 1
        parent = e.cpu_parent
        while parent is not None and not parent.name.startswith("shufflenet::"):
            parent = parent.cpu_parent
        inside += parent is not None
    return total, inside


@pytest.mark.parametrize("channels_last", [False, True])
def test_accelerated_eval_forward_makes_no_per_call_copies(channels_last: bool) -> None:
    tv = _torchvision()
    model = sk.accelerate(tv.models.shufflenet_v2_x1_0().eval(), channels_last=channels_last)
    # 224x224: at smaller inputs ATen runs the stem conv on its slow path, which copies.
    x = torch.randn(1, 3, 224, 224)
    if channels_last:  # the whole network in channels_last, as accelerate() runs it by default
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    total, inside = _copies_per_forward(model, x)
    assert inside == 0
    if channels_last:
        # NCHW adds the copies of ATen's own stem convolution (not a fused op).
        assert total <= MODEL_COPY_BOUND


# ---- the fused stem (conv1 + maxpool) ----------------------------------------------------


def _stem_calls(model: nn.Module, x: Tensor, grad: bool = False) -> int:
    """conv3x3_relu_maxpool calls in ``model``'s fx graph traced with grad mode ``grad``."""
    with torch.set_grad_enabled(grad):
        graph = torch.fx.symbolic_trace(model).graph
    return sum(1 for n in graph.nodes if n.op == "call_function" and n.target is SF.conv3x3_relu_maxpool)


@pytest.mark.parametrize("name", TV_V2)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_accelerate_torchvision_fuses_stem(name: str, layout: str) -> None:
    """conv1 + maxpool of torchvision's ShuffleNetV2 run as one conv3x3_relu_maxpool in eval
    mode (no_grad), within 1e-4 of torchvision at 224x224, with the same state_dict keys."""
    tv = _torchvision()
    model = randomize(getattr(tv.models, name)(num_classes=10)).eval()
    fast = sk.accelerate(model, channels_last=layout == "channels_last")
    assert list(fast.state_dict()) == list(model.state_dict())
    assert isinstance(fast.maxpool, StemMaxPool) and fast.maxpool._stem is fast.conv1
    assert "pool fused" in repr(fast.conv1) and "fused into the stem" in repr(fast.maxpool)
    x = torch.randn(1, 3, 224, 224)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        pooled = fast.conv1(x)
        assert pooled.shape == (1, 24, 56, 56) and pooled.is_contiguous(memory_format=torch.channels_last)
        assert fast.maxpool(pooled) is pooled
        torch.testing.assert_close(pooled, model.maxpool(model.conv1(x)), **TOL)
    eval_close(model, fast, x)
    assert _stem_calls(fast, x) == 1
    assert _stem_calls(fast, x, grad=True) == 0  # grad on: conv1 and maxpool apart


def test_fused_stem_training_and_grad_unchanged() -> None:
    """Training mode, and eval mode with grad on, run conv1 (the unpooled map) and then
    maxpool: outputs, gradients and running statistics are the reference's."""
    tv = _torchvision()
    model = randomize(tv.models.shufflenet_v2_x0_5(num_classes=10)).double()
    fast = sk.accelerate(model)
    assert isinstance(fast.maxpool, StemMaxPool)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)  # float64: see test_models.F64_TOL
    check_step(model, fast, x, train=True, tol=F64_TOL)
    check_step(model, fast, x, train=False, tol=F64_TOL)
    for train in (True, False):
        fast.train(train)
        assert fast.conv1(x).shape == (2, 24, 16, 16)  # grad on: the conv map
        assert fast.maxpool(fast.conv1(x)).shape == (2, 24, 8, 8)


def test_fused_stem_survives_copies_and_reconversion() -> None:
    model = randomize(models.reference_shufflenet_v2(0.5, 10)).eval()
    fast = sk.accelerate(model)
    twice = sk.accelerate(fast)  # a deep copy, converted again
    for m in (copy.deepcopy(fast), twice):
        assert isinstance(m.maxpool, StemMaxPool) and m.maxpool._stem is m.conv1
        assert m.conv1 is not fast.conv1
        x = torch.randn(2, 3, 32, 32)
        eval_close(model, m, x)
        assert _stem_calls(m, x) == 1


def test_stem_not_fused_when_pattern_differs() -> None:
    """Only a 3x3 stride-2 conv with ReLU right before MaxPool2d(3, 2, 1) is paired."""
    model = models.reference_shufflenet_v2(0.5, 10)
    model.maxpool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
    assert type(sk.accelerate(model).maxpool) is nn.MaxPool2d
    model = models.reference_shufflenet_v2(0.5, 10)
    model.conv1 = nn.Sequential(nn.Conv2d(3, 24, 3, 2, 1, bias=False), nn.BatchNorm2d(24))  # no ReLU
    assert type(sk.accelerate(model).maxpool) is nn.MaxPool2d


def test_accelerated_fused_stem_compiles_and_exports() -> None:
    """torch.compile(fullgraph=True) and torch.export of the model with the fused stem (eval,
    no_grad): one conv3x3_relu_maxpool in the exported graph, torchvision's output."""
    tv = _torchvision()
    torch._dynamo.reset()
    model = randomize(tv.models.shufflenet_v2_x0_5(num_classes=10)).eval()
    fast = sk.accelerate(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(fast, fullgraph=True)(x), model(x), **TOL)
        exported = torch.export.export(fast, (x,))
        torch.testing.assert_close(exported.module()(x), model(x), **TOL)
    calls = [n for n in exported.graph.nodes if str(n.target) == "shufflenet.conv3x3_relu_maxpool.default"]
    assert len(calls) == 1
