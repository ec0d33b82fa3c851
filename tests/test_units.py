"""ShuffleNet V1/V2 units on the fused ops vs the reference units, and the BN fusion helpers.

Also holds the helpers the model and accelerate tests share (randomised BN,
forward/backward comparison against a reference module).
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

import shufflenet_kernels as sk
from shufflenet_kernels import fusion, reference
from shufflenet_kernels.nn import ConvBNReLU, ShuffleV1Unit, ShuffleV2Unit

TOL = dict(rtol=1e-4, atol=1e-4)


# ---- shared helpers ------------------------------------------------------------


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN affine parameters and running statistics, so folding is really exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.num_batches_tracked.fill_(3)
    return model


def to_format(x: Tensor, layout: str) -> Tensor:
    return x.to(memory_format=torch.channels_last) if layout == "channels_last" else x.contiguous()


def assert_state_equal(a: nn.Module, b: nn.Module, **tol: float) -> None:
    """Same state_dict keys, in the same order, with equal values (running stats included)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], msg=lambda m, k=k: f"{k}: {m}", **(tol or TOL))


def check_step(
    ref: nn.Module, ours: nn.Module, x: Tensor, *, train: bool, tol: dict | None = None,
    forward: Callable[[Tensor], Tensor] | None = None,
) -> None:
    """One forward + backward of both modules on the same input: outputs, input
    gradients, parameter gradients and (in training) updated running stats agree.
    ``forward`` runs ``ours`` (e.g. its compiled version); default ``ours`` itself."""
    tol = tol or TOL
    ref.train(train)
    ours.train(train)
    xr = x.detach().clone().requires_grad_()
    xo = x.detach().clone().requires_grad_()
    yr, yo = ref(xr), (ours if forward is None else forward)(xo)
    torch.testing.assert_close(yo, yr, **tol)
    grad = torch.randn_like(yr)
    yr.backward(grad)
    yo.backward(grad)
    torch.testing.assert_close(xo.grad, xr.grad, **tol)
    pr, po = dict(ref.named_parameters()), dict(ours.named_parameters())
    assert list(pr) == list(po)
    for name in pr:
        torch.testing.assert_close(po[name].grad, pr[name].grad, msg=lambda m, n=name: f"grad {n}: {m}",
                                   **tol)
    assert_state_equal(ref, ours, **tol)


def eval_close(ref: nn.Module, ours: nn.Module, x: Tensor) -> Tensor:
    """Eval-mode outputs of both under no_grad; asserts they agree and returns ours."""
    ref.eval()
    ours.eval()
    with torch.no_grad():
        yr, yo = ref(x), ours(x)
    torch.testing.assert_close(yo, yr, **TOL)
    return yo


def paired(
    make_ref: Callable[[], nn.Module], make_ours: Callable[[], nn.Module]
) -> tuple[nn.Module, nn.Module]:
    """A randomised reference module and ours loaded from its state_dict."""
    ref = randomize(make_ref())
    ours = make_ours()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


# ---- unit cases ---------------------------------------------------------------

V2_CASES = [(48, 48, 1), (24, 48, 2), (40, 40, 1), (20, 64, 2)]
V1_CASES = [
    (24, 240, 3, 2, False),  # first unit of stage 2: ungrouped first conv, no shuffle
    (48, 48, 4, 1, True),
    (48, 96, 4, 2, True),
    (36, 36, 3, 1, True),
    (32, 32, 8, 1, True),
    (16, 16, 1, 1, True),
]


def v2_pair(args: tuple) -> tuple[nn.Module, nn.Module]:
    return paired(lambda: reference.ShuffleV2Unit(*args), lambda: ShuffleV2Unit(*args))


def v1_pair(args: tuple) -> tuple[nn.Module, nn.Module]:
    return paired(lambda: reference.ShuffleV1Unit(*args), lambda: ShuffleV1Unit(*args))


UNIT_CASES = [pytest.param(v2_pair, a, id=f"v2-{a}") for a in V2_CASES] + [
    pytest.param(v1_pair, a, id=f"v1-{a}") for a in V1_CASES
]


@pytest.mark.parametrize("make, args", UNIT_CASES)
def test_unit_state_dict_keys_match_reference(make, args) -> None:
    ref, ours = make(args)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("make, args", UNIT_CASES)
def test_unit_eval_matches_reference(make, args, layout) -> None:
    ref, ours = make(args)
    x = to_format(torch.randn(2, args[0], 12, 10), layout)
    y = eval_close(ref, ours, x)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("make, args", UNIT_CASES)
def test_unit_train_step_matches_reference(make, args, layout) -> None:
    ref, ours = make(args)
    x = to_format(torch.randn(2, args[0], 12, 10), layout)
    check_step(ref, ours, x, train=True)
    check_step(ref, ours, x * 0.5 + 0.1, train=True)  # a second step moves the running stats again
    # Folded eval after training uses the updated statistics.
    eval_close(ref, ours, x)


@pytest.mark.parametrize("make, args", UNIT_CASES)
def test_unit_eval_gradients_flow_through_fold(make, args) -> None:
    """Eval mode with autograd on: the fold is differentiable, parameter grads match."""
    ref, ours = make(args)
    check_step(ref, ours, torch.randn(2, args[0], 8, 8), train=False)


def test_v1_shuffled_bn_momentum_none_matches_reference() -> None:
    """Cumulative-average running stats (momentum None) of the BN after the fused shuffle."""
    ref, ours = v1_pair((48, 48, 4, 1, True))
    for m in list(ref.modules()) + list(ours.modules()):
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    for step in range(3):
        check_step(ref, ours, torch.randn(2, 48, 6, 6) + step, train=True)
    assert int(ours.bn1.num_batches_tracked) == int(ref.bn1.num_batches_tracked) == 6


def test_v2_split_reads_channel_slices_without_copy(monkeypatch) -> None:
    """The stride-1 unit hands x.chunk(2, 1) views straight to the ops (per-op path; the
    fused op reads the slice in place too, see test_v2_unit)."""
    _, ours = v2_pair((16, 16, 1))
    ours.eval()
    ours.fuse_units = False
    x = torch.randn(2, 16, 5, 5)
    seen: list[Tensor] = []
    real = sk.functional.pointwise_conv

    def spy(input: Tensor, *args, **kwargs) -> Tensor:
        seen.append(input)
        return real(input, *args, **kwargs)

    monkeypatch.setattr(sk.functional, "pointwise_conv", spy)
    with torch.no_grad():
        ours(x)
    assert seen[0].data_ptr() == x[:, 8:].data_ptr()
    assert not seen[0].is_contiguous()


def test_fold_cache_follows_parameter_changes() -> None:
    ref, ours = v2_pair((24, 48, 2))
    x = torch.randn(2, 24, 8, 8)
    eval_close(ref, ours, x)
    cached = ours._fold_cache._value
    eval_close(ref, ours, x)
    assert ours._fold_cache._value is cached  # unchanged parameters: folded weights reused
    with torch.no_grad():  # in-place edits of a weight and a running statistic
        for m in (ref, ours):
            m.branch2[0].weight.mul_(1.5)
            m.branch1[1].running_var.add_(0.25)
    eval_close(ref, ours, x)
    ref2 = randomize(reference.ShuffleV2Unit(24, 48, 2), seed=7)
    ours.load_state_dict(ref2.state_dict())
    eval_close(ref2, ours, x)
    ours.train()
    assert ours._fold_cache._value is None


def test_unit_inference_mode_and_deepcopy() -> None:
    ref, ours = v1_pair((48, 48, 4, 1, True))
    ref.eval()
    ours.eval()
    x = torch.randn(2, 48, 6, 6)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), ref(x), **TOL)
    twin = copy.deepcopy(ours)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), ref(x), **TOL)


def test_fold_cache_follows_replaced_parameters_and_pickles() -> None:
    """A parameter swapped for a new tensor (not written in place) refolds; a unit with a
    filled cache pickles and its copy computes the same function."""
    ref, ours = v2_pair((16, 16, 1))
    x = torch.randn(2, 16, 6, 6)
    eval_close(ref, ours, x)
    for m in (ref, ours):
        m.branch2[5].weight = nn.Parameter(m.branch2[5].weight.detach() * -2.0)
    eval_close(ref, ours, x)
    twin = pickle.loads(pickle.dumps(ours))
    with torch.no_grad():
        torch.testing.assert_close(twin(x), ref(x), **TOL)


@pytest.mark.parametrize("make, args", [
    pytest.param(v2_pair, (16, 16, 1), id="v2-s1"), pytest.param(v2_pair, (24, 48, 2), id="v2-s2"),
    pytest.param(v1_pair, (48, 48, 4, 1, True), id="v1-s1"),
])
def test_eager_memo_replays_only_while_nothing_changed(make, args, monkeypatch) -> None:
    """Repeated no-grad eval calls skip the fold and argument assembly (the memo), and
    every change the fold depends on is seen on the very next call."""
    ref, ours = make(args)
    x = torch.randn(2, args[0], 6, 6)
    eval_close(ref, ours, x)
    fused = isinstance(ours, ShuffleV2Unit)
    assert (ours._call_memo if fused else ours._fold_memo) is not None
    folds = []
    real_get = ours._fold_cache.get
    monkeypatch.setattr(ours._fold_cache, "get", lambda *a, **k: folds.append(1) or real_get(*a, **k))
    eval_close(ref, ours, x)
    eval_close(ref, ours, x.to(memory_format=torch.channels_last))  # other layout: refolds
    eval_close(ref, ours, x)
    assert len(folds) == 2, "an unchanged block must be served by the memo"

    def both(edit: Callable[[nn.Module], None]) -> None:
        for m in (ref, ours):
            edit(m)
        eval_close(ref, ours, x)

    convs = lambda m: [c for c in m.modules() if isinstance(c, nn.Conv2d)]  # noqa: E731
    bns = lambda m: [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)]  # noqa: E731
    with torch.no_grad():
        both(lambda m: convs(m)[0].weight.mul_(1.5))                       # in place
        both(lambda m: bns(m)[-1].running_mean.add_(0.3))
    both(lambda m: setattr(convs(m)[-1], "weight", nn.Parameter(convs(m)[-1].weight.detach() * -2)))
    both(lambda m: setattr(convs(m)[1].weight, "data", convs(m)[1].weight.detach() * 0.5))  # .data swap
    both(lambda m: setattr(bns(m)[0], "eps", 0.5))
    # One BN back in training (batch statistics): the block must not replay the fold.
    for m in (ref, ours):
        m.eval()
        bns(m)[0].train()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), **TOL)
    for m in (ref, ours):
        m.eval()
    with torch.enable_grad():  # grad on: the parameters require grad, no memo
        torch.testing.assert_close(ours(x), ref(x), **TOL)
    eval_close(ref, ours, x)
    twin, clone = copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))
    assert twin._call_memo is None and twin._fold_memo is None and clone._fold_memo is None
    with torch.no_grad():
        torch.testing.assert_close(twin(x), ref(x), **TOL)
        torch.testing.assert_close(clone(x), ref(x), **TOL)


def test_unit_bad_arguments() -> None:
    with pytest.raises(ValueError, match="stride"):
        ShuffleV2Unit(16, 16, 4)
    with pytest.raises(ValueError, match="inp"):
        ShuffleV1Unit(16, 32, 2, 1)
    with pytest.raises(ValueError, match="backend"):
        ShuffleV2Unit(16, 16, 1, backend="cpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Sequential"):
        ConvBNReLU(nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))


@pytest.mark.parametrize("seq", [
    [nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()],
    [nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16)],
    [nn.Conv2d(8, 8, 5, 1, 2, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU()],
    [nn.Conv2d(8, 16, 1, groups=4, bias=True), nn.BatchNorm2d(16)],
], ids=["pw-relu", "dense3x3-bias", "dw5x5", "grouped-pw-bias"])
def test_conv_bn_relu_matches_sequential(seq) -> None:
    ref = randomize(nn.Sequential(*seq))
    ours = ConvBNReLU.from_sequential(copy.deepcopy(ref))
    x = torch.randn(2, 8, 9, 7)
    eval_close(ref, ours, x)
    eval_close(ref, ours, x.to(memory_format=torch.channels_last))
    check_step(ref, ours, x, train=True)


# ---- fusion helpers ---------------------------------------------------------------


@pytest.mark.parametrize("groups, channels", [(2, 8), (3, 12), (4, 4), (1, 6)])
def test_shuffled_order_matches_channel_shuffle(groups, channels) -> None:
    v = torch.randn(channels)
    shuffled = reference.channel_shuffle(v.view(1, channels, 1, 1), groups).flatten()
    torch.testing.assert_close(fusion.to_shuffled_order(v, groups), shuffled, rtol=0, atol=0)
    torch.testing.assert_close(fusion.from_shuffled_order(shuffled, groups), v, rtol=0, atol=0)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("training", [True, False])
def test_shuffled_batch_norm_matches_bn_then_shuffle(momentum, training) -> None:
    groups = 3
    bn_ref = randomize(nn.BatchNorm2d(12, momentum=momentum))
    bn = copy.deepcopy(bn_ref)
    bn_ref.train(training)
    bn.train(training)
    y = torch.randn(4, 12, 3, 3)
    expected = reference.channel_shuffle(bn_ref(y), groups)
    got = fusion.shuffled_batch_norm(reference.channel_shuffle(y, groups), bn, groups)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert_state_equal(bn_ref, bn, rtol=1e-6, atol=1e-6)


def test_fold_conv_bn_equals_conv_then_bn() -> None:
    conv = nn.Conv2d(6, 10, 3, padding=1, groups=2, bias=True)
    bn = randomize(nn.BatchNorm2d(10)).eval()
    w, b = fusion.fold_conv_bn(conv.weight, conv.bias, bn)
    x = torch.randn(2, 6, 5, 5)
    torch.testing.assert_close(
        torch.nn.functional.conv2d(x, w, b, padding=1, groups=2), bn(conv(x)), rtol=1e-5, atol=1e-5
    )


# ---- torch.compile ------------------------------------------------------------------


def test_unit_eval_compiles_fullgraph() -> None:
    """Eval: the BN fold is traced into the graph (no cache while compiling)."""
    torch._dynamo.reset()
    ref, ours = v2_pair((24, 48, 2))
    ref.eval()
    ours.eval()
    x = torch.randn(2, 24, 8, 8)
    compiled = torch.compile(ours, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), ref(x), **TOL)


def test_unit_train_step_compiles_fullgraph() -> None:
    """Training forward + backward compiled: outputs, gradients and the running stats of
    the BN in shuffled order (written back by the graph) match the reference."""
    torch._dynamo.reset()
    ref, ours = v1_pair((48, 48, 4, 1, True))
    compiled = torch.compile(ours, fullgraph=True)
    check_step(ref, ours, torch.randn(2, 48, 8, 8), train=True, forward=compiled)
