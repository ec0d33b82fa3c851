"""ShuffleNet V1/V2 units on the fused ops, with the reference units' parameter names.

The units keep their parameters in plain ``nn.Conv2d`` / ``nn.BatchNorm2d`` modules
laid out exactly like ``shufflenet_kernels.reference`` (V2: torchvision's
``InvertedResidual``), so state_dicts are interchangeable, and run them through
``torch.ops.shufflenet``:

* training mode: every conv is a fused op (1x1 -> ``pointwise_conv``, depthwise ->
  ``depthwise_conv2d``, V1's shuffle fused into its first 1x1 conv), each BN runs as a
  separate batch norm (in shuffled channel order after a fused shuffle, see
  ``fusion.shuffled_batch_norm``), so batch statistics, running statistics and
  gradients are those of the reference;
* eval mode: each BN is folded into its conv's weight and bias and each ReLU into
  the conv's epilogue, so a conv -> BN -> ReLU chain is one op. The folded weights
  are cached (``fusion.FoldCache``) and recomputed whenever a parameter or running
  statistic changes (in-place update, ``load_state_dict``, ``.to()``); while
  ``torch.compile`` traces, or when autograd must reach the parameters, they are
  folded on every call instead. Repeated eval calls with grad off go one step further:
  they replay the previous call's folded weights (a fused V2 unit: its whole
  ``v2_unit`` call) after a check that nothing they depend on changed, which keeps the
  Python cost of a call to a few microseconds (``_EagerMemo``).

Which modules form each conv stage is fixed when a unit is built (replace a whole
unit, not a conv inside it); their parameters and buffers are read on every call.

V2's channel split is ``x.chunk(2, 1)`` (views, no copy) and its concat + shuffle is
one ``concat_shuffle``. With ``fuse_units`` (see ``ShuffleV2Unit``), a V2 unit in eval
mode whose parameters autograd need not reach runs as one ``v2_unit`` call instead.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from .. import _loader, fusion, reference
from .. import functional as F
from ..backend import Backend, check_backend
from ..backend import resolve as resolve_backend
from ..fusion import FoldCache, TensorSlots, bn_can_fold, is_tracing
from ..ops import MAX_DEPTHWISE_KERNEL

__all__ = [
    "FUSE_UNITS_DEFAULT",
    "STEM_MAX_IN_CHANNELS",
    "ConvBNReLU",
    "ShuffleV1Unit",
    "ShuffleV2Unit",
    "StemMaxPool",
    "is_stem_conv",
    "is_stem_pool",
    "parse_conv_chain",
]

# Whether V2 units run as one fused ``v2_unit`` call in inference (ShuffleV2Unit.fuse_units
# and accelerate(fuse_units=...) default to it).
FUSE_UNITS_DEFAULT = True


class ConvStage(NamedTuple):
    """One ``conv -> [BN] -> [ReLU]`` step; ``shuffle`` > 1 fuses a channel shuffle after it."""

    conv: nn.Conv2d
    bn: nn.BatchNorm2d | None
    relu: bool
    shuffle: int = 1


# Folded (weight, bias) of one stage, or None where its BN is not folded.
Folded = tuple[Tensor, Tensor] | None


def _is_pointwise(conv: nn.Conv2d) -> bool:
    return (
        tuple(conv.kernel_size) == (1, 1) and tuple(conv.stride) == (1, 1)
        and tuple(conv.padding) == (0, 0) and conv.padding_mode == "zeros"
    )


def _is_depthwise(conv: nn.Conv2d) -> bool:
    return (
        conv.groups == conv.in_channels == conv.out_channels
        and max(conv.kernel_size) <= MAX_DEPTHWISE_KERNEL
        and not isinstance(conv.padding, str) and conv.padding_mode == "zeros"
    )


def parse_conv_chain(seq: nn.Module) -> list[ConvStage] | None:
    """Splits an ``nn.Sequential`` of ``Conv2d [BatchNorm2d] [ReLU]`` groups into stages.

    Returns None when ``seq`` holds anything else (another module type, a BN or ReLU
    without a conv before it, a conv with string padding or a non-zero padding mode),
    i.e. when it is not a chain the fused units can run.
    """
    if not isinstance(seq, nn.Sequential):
        return None
    stages: list[ConvStage] = []
    for m in seq:
        if type(m) is nn.Conv2d:
            if isinstance(m.padding, str) or m.padding_mode != "zeros":
                return None
            stages.append(ConvStage(m, None, False))
        elif type(m) is nn.BatchNorm2d and stages and stages[-1].bn is None and not stages[-1].relu:
            stages[-1] = ConvStage(stages[-1].conv, m, False)
        elif type(m) is nn.ReLU and stages and not stages[-1].relu:
            stages[-1] = ConvStage(stages[-1].conv, stages[-1].bn, True)
        else:
            return None
    return stages


def _tensor_attr(module: nn.Module, name: str) -> Tensor | None:
    """``getattr(module, name)`` for a parameter or buffer, by direct dict lookup when possible."""
    params = module._parameters
    if name in params:
        return params[name]
    buffers = module._buffers
    if name in buffers:
        return buffers[name]
    return getattr(module, name)  # e.g. a parametrized weight (a property)


def _run_conv(
    x: Tensor, conv: nn.Conv2d, weight: Tensor, bias: Tensor | None, relu: bool, shuffle: int,
    backend: Backend,
) -> Tensor:
    """``channel_shuffle(act(conv(x)), shuffle)`` with ``conv``'s geometry and the given weights."""
    if _is_pointwise(conv):
        return F.pointwise_conv(x, weight, bias, conv.groups, shuffle, relu, backend=backend)
    if _is_depthwise(conv):
        y = F.depthwise_conv2d(
            x, weight, bias, conv.stride, conv.padding, conv.dilation, relu, backend=backend
        )
    else:
        # Dense or large-kernel convs (e.g. the stem) have no fused op: ATen's conv.
        y = TF.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        if relu:
            # In place, as nn.ReLU(inplace=True) does: y is this call's own buffer and the
            # conv's backward does not read its output. Saves a pass over the largest map.
            y = y.relu_()
    return F.channel_shuffle(y, shuffle, backend=backend) if shuffle > 1 else y


def _runs_tap_major(x: Tensor, backend: Backend) -> bool:
    """Whether the depthwise convs fed by ``x`` run channels_last on the C++ kernels.

    Those take a tap-major weight as is; the Triton kernels copy any strided weight.
    """
    if x.dim() != 4 or x.shape[1] <= 1 or x.stride(1) != 1:
        return False
    # CPU tensors always run the C++ kernels (checked first: this runs on every call).
    return x.device.type == "cpu" or resolve_backend("depthwise_conv2d", backend, x) == "shufflenet"


_TRAINING = operator.attrgetter("training")
_EPS = operator.attrgetter("eps")


class _EagerMemo:
    """What an eager inference call of a block derived from its modules (folded weights, or
    a unit's whole ``v2_unit`` argument list), replayed while nothing it was derived from
    changed: grad mode off, the block and its BNs still in eval mode with the same ``eps``,
    every conv/BN parameter and running statistic the same tensor, unwritten
    (``TensorSlots``), and an input on the same device with the same depthwise weight
    layout (``_runs_tap_major``). The test costs a few microseconds; the full path (fold
    cache keys, argument assembly, backend resolution) costs several times that per call,
    as much as a unit's kernel at batch 1.

    A memo that fails the test is dropped, not kept for later: BN's running-statistics
    update in training mode does not bump their version counters, so a BN switched to
    training and back must not find the memo of before.
    """

    __slots__ = ("slots", "bns", "eps", "device", "tap_major", "value")

    def __init__(self, block: _FusedBlock, x: Tensor, tap_major: bool, value: Any) -> None:
        slots: list[tuple[dict, str]] = []
        bns: list[nn.Module] = []
        for s in block._stages:
            slots += [(s.conv._parameters, "weight"), (s.conv._parameters, "bias")]
            if s.bn is not None:
                bns.append(s.bn)
                slots += [(s.bn._parameters, "weight"), (s.bn._parameters, "bias"),
                          (s.bn._buffers, "running_mean"), (s.bn._buffers, "running_var")]
        if any(name not in d for d, name in slots if name in ("weight", "running_mean", "running_var")):
            # A parametrized weight (a property, not a dict entry) or a BN without running
            # statistics: nothing fixed to watch.
            raise ValueError("block tensors are not plain parameters and buffers")
        self.slots = TensorSlots(slots)
        self.bns = tuple(bns)
        self.eps = tuple(map(_EPS, bns))
        self.device = x.device
        self.tap_major = tap_major
        self.value = value

    @classmethod
    def build(cls, block: _FusedBlock, x: Tensor, tap_major: bool, value: Any) -> _EagerMemo | None:
        """A memo of ``value`` for calls like this one, or None when it cannot be watched."""
        try:
            return cls(block, x, tap_major, value)
        except (ValueError, RuntimeError):  # RuntimeError: inference tensors (no version counter)
            return None

    def __deepcopy__(self, memo: dict) -> None:
        # Derived from the original's tensors: a copied block starts without a memo.
        return None

    def __reduce__(self) -> tuple:
        # Likewise when pickled: unpickles as None (NoneType() is None).
        return (type(None), ())

    def replays(self, block: _FusedBlock, x: Tensor) -> bool:
        """Whether a call of ``block`` on ``x`` would derive ``value`` again. The caller
        checks ``is_tracing()`` first (under torch.compile nothing here is traced)."""
        return (
            not torch.is_grad_enabled() and not block.training
            and not any(map(_TRAINING, self.bns)) and tuple(map(_EPS, self.bns)) == self.eps
            and x.device == self.device and _runs_tap_major(x, block.backend) == self.tap_major
            and self.slots.unchanged()
        )


def pin_weights(tensors: list[Tensor | None]) -> None:
    """Marks CPU tensors that nothing writes in place, or only with writes that bump their
    version counter (a cache's derived weights: a refresh makes new tensors), so that the
    CPU kernels check their packed copies by identity and version instead of re-reading
    the values on every call (``shufflenet::_pin_weights``)."""
    if _loader.NATIVE_AVAILABLE:
        torch.ops.shufflenet._pin_weights([t for t in tensors if t is not None])


class _FusedBlock(nn.Module):
    """Runs conv stages with BN folded (eval) or separate (training), caching folded weights.

    Which modules form each stage is fixed when the block is built (``_stages``); their
    parameters and buffers are read on every call, so they may change freely.
    """

    backend: Backend
    _stages: list[ConvStage]

    def _init_fused(self, stages: list[ConvStage], backend: Backend) -> None:
        check_backend(backend)
        self.backend = backend
        self._stages = stages
        self._fold_cache: FoldCache[list[Folded]] = FoldCache()
        self._clear_memos()

    def _clear_memos(self) -> None:
        # Derived state (see _EagerMemo): plain attributes, not in the state_dict.
        self._fold_memo: _EagerMemo | None = None
        self._call_memo: _EagerMemo | None = None

    def train(self, mode: bool = True) -> _FusedBlock:
        # Training does not fold: free the cached folded weights (eval() keeps them).
        if mode:
            self._fold_cache.clear()
            self._clear_memos()
        return super().train(mode)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> _FusedBlock:
        # .to() / .half() / .cuda() may swap parameter storage: refold on the next call.
        self._fold_cache.clear()
        self._clear_memos()
        return super()._apply(fn, recurse)

    def _folded(self, x: Tensor | None = None) -> list[Folded]:
        """Per stage: (weight, bias) with its BN folded in, or None where the BN cannot fold.

        ``x`` is the block's input: when it is channels_last and the C++ kernels run the
        depthwise convs, their cached weights are stored tap-major (``fusion.tap_major``),
        the layout those kernels read without a per-call copy.
        """
        stages = self._stages
        if is_tracing():
            # Traced into the graph (torch.compile, torch.fx): no cache, plain attribute
            # reads. fusion.* is looked up on the module so torch.fx sees its wrapped leaves.
            return [
                fusion.fold_conv_bn(s.conv.weight, s.conv.bias, s.bn)
                if s.bn is not None and bn_can_fold(s.bn) else None
                for s in stages
            ]
        memo = self._fold_memo
        if memo is not None and x is not None:
            if memo.replays(self, x):
                return memo.value
            self._fold_memo = None  # see _EagerMemo: rebuilt by the next call it can serve
        # This runs on every eager call that the memo does not serve: read parameters and
        # buffers with dict lookups, since nn.Module.__getattr__ would cost more than the
        # small ops of a unit at batch 1.
        foldable: list[bool] = []
        sources: list[Tensor | None] = []
        eps: list[float] = []
        for s in stages:
            bn = s.bn
            if bn is None or bn.training:
                foldable.append(False)
                continue
            mean, var = _tensor_attr(bn, "running_mean"), _tensor_attr(bn, "running_var")
            if mean is None or var is None:  # no running statistics: batch statistics, no fold
                foldable.append(False)
                continue
            foldable.append(True)
            sources += [_tensor_attr(s.conv, "weight"), _tensor_attr(s.conv, "bias"),
                        _tensor_attr(bn, "weight"), _tensor_attr(bn, "bias"), mean, var]
            eps.append(bn.eps)
        if not sources:
            return [None] * len(stages)

        tap_major = x is not None and _runs_tap_major(x, self.backend)

        def compute() -> list[Folded]:
            out: list[Folded] = []
            for s, f in zip(stages, foldable, strict=True):
                if not f or s.bn is None:
                    out.append(None)
                    continue
                w, b = fusion.fold_conv_bn(s.conv.weight, s.conv.bias, s.bn)
                if tap_major and _is_depthwise(s.conv):
                    w = fusion.tap_major(w)
                out.append((w, b))
            return out

        folded = self._fold_cache.get(sources, compute, extra=(tuple(foldable), tuple(eps), tap_major))
        if x is not None and not torch.is_grad_enabled():
            memo = _EagerMemo.build(self, x, tap_major, folded)
            if memo is not None and x.device.type == "cpu":
                pin_weights([t for f in folded if f is not None for t in f])
            self._fold_memo = memo
        return folded

    def _run_stage(self, x: Tensor, s: ConvStage, folded: Folded) -> Tensor:
        if folded is not None:
            return _run_conv(x, s.conv, folded[0], folded[1], s.relu, s.shuffle, self.backend)
        if s.bn is None:
            return _run_conv(x, s.conv, s.conv.weight, s.conv.bias, s.relu, s.shuffle, self.backend)
        y = _run_conv(x, s.conv, s.conv.weight, s.conv.bias, False, s.shuffle, self.backend)
        # Unshuffled, the plain BN module call: a torch.fx graph then shows it as the
        # BatchNorm2d it is rather than inside the shuffled_batch_norm leaf.
        y = s.bn(y) if s.shuffle == 1 else fusion.shuffled_batch_norm(y, s.bn, s.shuffle)
        return torch.relu(y) if s.relu else y

    def _run_chain(self, x: Tensor, stages: list[ConvStage], folded: list[Folded]) -> Tensor:
        for s, f in zip(stages, folded, strict=True):
            x = self._run_stage(x, s, f)
        return x

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}"


def _chain(seq: nn.Module, what: str) -> list[ConvStage]:
    stages = parse_conv_chain(seq)
    if stages is None:
        got = [type(m).__name__ for m in seq.children()]
        raise ValueError(f"{what} must be an nn.Sequential of Conv2d [BatchNorm2d] [ReLU] groups, got {got}")
    return stages


# Widest stem input the fused stem takes (conv3x3_relu_maxpool reads each input value on
# its own: fast for the few channels of an image, not for a wide feature map).
STEM_MAX_IN_CHANNELS = 8


def is_stem_conv(stages: list[ConvStage]) -> bool:
    """Whether a conv chain is the stem ``conv3x3_relu_maxpool`` runs: one 3x3 conv, stride 2,
    padding 1, no dilation or groups, few input channels (``STEM_MAX_IN_CHANNELS``), then ReLU."""
    if len(stages) != 1:
        return False
    s = stages[0]
    c = s.conv
    return (
        tuple(c.kernel_size) == (3, 3) and tuple(c.stride) == (2, 2) and tuple(c.padding) == (1, 1)
        and tuple(c.dilation) == (1, 1) and c.groups == 1 and c.padding_mode == "zeros"
        and c.in_channels <= STEM_MAX_IN_CHANNELS and s.relu and s.shuffle == 1
    )


def is_stem_pool(module: nn.Module) -> bool:
    """Whether ``module`` is the max pooling ``conv3x3_relu_maxpool`` fuses: exactly
    ``nn.MaxPool2d(3, 2, 1)`` (no dilation, ceil_mode or indices)."""
    if type(module) is not nn.MaxPool2d:
        return False
    m = module

    def pair(v: int | tuple[int, ...]) -> tuple[int, ...]:
        return (v, v) if isinstance(v, int) else tuple(v)

    return (
        pair(m.kernel_size) == (3, 3) and pair(m.stride) == (2, 2) and pair(m.padding) == (1, 1)
        and pair(m.dilation) == (1, 1) and not m.ceil_mode and not m.return_indices
    )


class ConvBNReLU(nn.Sequential, _FusedBlock):
    """``nn.Sequential(Conv2d, BatchNorm2d, ReLU)`` (BN and ReLU optional) run as one fused op.

    Same children and state_dict keys as the plain Sequential (``0.weight``,
    ``1.running_mean``, ...). A 1x1 conv runs as ``pointwise_conv`` and a depthwise conv
    as ``depthwise_conv2d``; other convs use ATen. In eval mode BN is folded into the conv
    and ReLU into its epilogue. Input ``[N, C_in, H, W]``, output ``[N, C_out, H', W']``.

    A stem (3x3 stride-2 conv, ReLU, see ``is_stem_conv``) may take over the max pooling
    that follows it (``fuse_pool``, which ``accelerate`` calls with the model's
    ``MaxPool2d(3, 2, 1)``): in eval mode with grad off it then returns the *pooled* map,
    ``[N, C_out, H'', W'']`` in channels_last (one ``conv3x3_relu_maxpool`` call on CPU, the
    conv then ``max_pool2d`` elsewhere), and the pooling module, now a ``StemMaxPool``,
    passes it through. Otherwise (training, grad on) both run as before.
    """

    _stem_pool: StemMaxPool | None = None

    def __init__(self, *modules: nn.Module, backend: Backend = "auto") -> None:
        nn.Sequential.__init__(self, *modules)
        self._init_fused(_chain(self, "ConvBNReLU"), backend)

    @classmethod
    def from_sequential(cls, seq: nn.Sequential, backend: Backend = "auto") -> ConvBNReLU:
        """Wraps the children of ``seq`` (shared, not copied) in a ConvBNReLU."""
        return cls(*seq, backend=backend)

    def fuse_pool(self, pool: nn.MaxPool2d) -> StemMaxPool:
        """Takes over ``pool`` (an ``nn.MaxPool2d(3, 2, 1)`` that the model applies right after
        this block) and returns the module to put in its place. Raises ValueError when this
        block is not a stem (``is_stem_conv``) or ``pool`` is not that pooling."""
        if not is_stem_conv(self._stages) or not is_stem_pool(pool):
            raise ValueError(f"fuse_pool needs a 3x3 stride-2 conv with ReLU and few input channels "
                             f"followed by MaxPool2d(3, 2, 1), got {self} and {pool}")
        new = StemMaxPool(self)
        new.training = pool.training
        # A plain attribute, not a child: the module tree and state_dict keys stay as they were.
        object.__setattr__(self, "_stem_pool", new)
        return new

    def pools(self) -> bool:
        """Whether this call returns the pooled map (see the class docstring): a fused
        pooling, eval mode, grad off. Its ``StemMaxPool`` asks the same question."""
        return self._stem_pool is not None and not self.training and not torch.is_grad_enabled()

    def runs_stem_op(self, x: Tensor) -> bool:
        """Whether a call on ``x`` runs ``conv3x3_relu_maxpool`` (which reads any input layout
        in place, so ``accelerate``'s channels_last entry need not convert ``x`` for it)."""
        if not self.pools():
            return False
        s = self._stages[0]
        return F.conv3x3_relu_maxpool_available(x.device.type) and (s.bn is None or bn_can_fold(s.bn))

    def forward(self, x: Tensor) -> Tensor:
        folded = self._folded(x)
        if not self.pools():
            return self._run_chain(x, self._stages, folded)
        s, f = self._stages[0], folded[0]
        # The weight's device, read from the dict (torch.fx turns x.device into a proxy).
        device = _tensor_attr(s.conv, "weight").device.type
        if F.conv3x3_relu_maxpool_available(device) and (f is not None or s.bn is None):
            weight, bias = f if f is not None else (s.conv.weight, s.conv.bias)
            return F.conv3x3_relu_maxpool(x, weight, bias)
        y = self._run_chain(x, self._stages, folded)
        return TF.max_pool2d(y, 3, 2, 1)

    def extra_repr(self) -> str:
        pool = ", pool fused (eval, no grad)" if self._stem_pool is not None else ""
        return f"{super().extra_repr()}{pool}"


class StemMaxPool(nn.MaxPool2d):
    """``nn.MaxPool2d(3, 2, 1)`` whose pooling a stem ``ConvBNReLU`` has taken over
    (``ConvBNReLU.fuse_pool``): passes the stem's already pooled map through when the stem
    pooled it (``stem.pools()``: eval, grad off), else pools as ``MaxPool2d`` does. No
    parameters or buffers, so state_dict keys are unchanged."""

    def __init__(self, stem: ConvBNReLU) -> None:
        super().__init__(3, 2, 1)
        # Not a child module: the stem is already in the tree under its own name.
        object.__setattr__(self, "_stem", stem)

    def forward(self, input: Tensor) -> Tensor:
        if self._stem.pools():
            return input
        return super().forward(input)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fused into the stem conv in eval mode with grad off"


def _v2_fusable(stages1: list[ConvStage], stages2: list[ConvStage], stride: int) -> bool:
    """Whether the unit is the one ``v2_unit`` computes: branch2 = 1x1 + ReLU, depthwise 3x3
    (padding 1, dilation 1, the unit's stride, no ReLU), 1x1 + ReLU; branch1 empty (stride 1,
    the kept half as wide as branch2's output) or depthwise 3x3 stride 2, 1x1 + ReLU."""

    def pointwise(s: ConvStage) -> bool:
        return _is_pointwise(s.conv) and s.conv.groups == 1 and s.relu and s.shuffle == 1

    def depthwise(s: ConvStage) -> bool:
        c = s.conv
        return (
            _is_depthwise(c) and tuple(c.kernel_size) == (3, 3) and tuple(c.stride) == (stride, stride)
            and tuple(c.padding) == (1, 1) and tuple(c.dilation) == (1, 1) and not s.relu and s.shuffle == 1
        )

    if stride not in (1, 2) or len(stages2) != 3:
        return False
    if not (pointwise(stages2[0]) and depthwise(stages2[1]) and pointwise(stages2[2])):
        return False
    half = stages2[2].conv.out_channels
    if stride == 1:
        return not stages1 and stages2[0].conv.in_channels == half
    return (
        len(stages1) == 2 and depthwise(stages1[0]) and pointwise(stages1[1])
        and stages1[1].conv.out_channels == half and stages1[0].conv.in_channels == stages2[0].conv.in_channels
    )


class ShuffleV2Unit(_FusedBlock):
    """ShuffleNet V2 unit (torchvision ``InvertedResidual``) on the fused ops.

    inp -> oup channels, ``stride`` 1 to 3; input ``[N, inp, H, W]``, output
    ``[N, oup, ceil(H/stride), ceil(W/stride)]`` in the input's memory format.
    stride 1: ``x1, x2 = x.chunk(2, 1)`` (views), ``concat_shuffle(x1, branch2(x2), 2)``;
    stride > 1: ``concat_shuffle(branch1(x), branch2(x), 2)``. Module names and
    state_dict keys are torchvision's (``branch1.0..4``, ``branch2.0..7``).

    ``fuse_units`` (default ``FUSE_UNITS_DEFAULT``): in eval mode, when every BN folds,
    neither the input nor a parameter needs autograd (grad mode off, or nothing requires
    grad) and the unit has torchvision's structure (3x3 depthwise, stride 1 or 2), the
    whole unit runs as one ``v2_unit`` call with the folded weights; otherwise, and in
    training mode, the per-op path above. ``torch.fx.symbolic_trace`` records the path
    chosen when it traces, as it records train or eval mode: grad mode and the parameters'
    ``requires_grad`` then decide (the input's is not known; it is taken as False), so trace
    under ``torch.no_grad()`` for an inference graph with the fused op.
    """

    fuse_units: bool = FUSE_UNITS_DEFAULT

    def __init__(self, inp: int, oup: int, stride: int, *, backend: Backend = "auto") -> None:
        super().__init__()
        ref = reference.ShuffleV2Unit(inp, oup, stride)
        self._adopt(ref.branch1, ref.branch2, backend)

    def _adopt(self, branch1: nn.Sequential, branch2: nn.Sequential, backend: Backend) -> None:
        stages1 = _chain(branch1, "branch1")
        stages2 = _chain(branch2, "branch2")
        if not stages2:
            raise ValueError("branch2 must hold at least one conv")
        self.branch1 = branch1
        self.branch2 = branch2
        # torchvision's InvertedResidual: an empty branch1 means the stride-1 (split) unit.
        self.stride = max(max(s.conv.stride) for s in stages1) if stages1 else 1
        self._split = len(stages1)
        self._fusable = _v2_fusable(stages1, stages2, self.stride)
        self._init_fused(stages1 + stages2, backend)

    @classmethod
    def from_module(cls, module: nn.Module, backend: Backend = "auto") -> ShuffleV2Unit:
        """A unit running ``module``'s ``branch1``/``branch2`` (shared, not copied).

        ``module`` must compute torchvision's ``InvertedResidual`` forward from those two
        Sequentials (duck-typed: any class with that structure is accepted).
        """
        unit = cls.__new__(cls)
        nn.Module.__init__(unit)
        unit._adopt(module.branch1, module.branch2, backend)
        return unit

    def forward(self, x: Tensor) -> Tensor:
        if not is_tracing():
            memo = self._call_memo
            if memo is not None:
                if self.fuse_units and memo.replays(self, x):
                    op, args = memo.value
                    return op(x, *args)
                self._call_memo = None  # see _EagerMemo: rebuilt by the next call it can serve
        folded = self._folded(x)
        if self.fuse_units and self._fusable and not self.training:
            y = self._fused(x, folded)
            if y is not None:
                return y
        return self._per_op(x, folded)

    def _per_op(self, x: Tensor, folded: list[Folded]) -> Tensor:
        k = self._split
        stages1, stages2 = self._stages[:k], self._stages[k:]
        if k == 0:
            x1, x2 = x.chunk(2, dim=1)
            return F.concat_shuffle(x1, self._run_chain(x2, stages2, folded), 2, backend=self.backend)
        a = self._run_chain(x, stages1, folded[:k])
        b = self._run_chain(x, stages2, folded[k:])
        return F.concat_shuffle(a, b, 2, backend=self.backend)

    def _fused(self, x: Tensor, folded: list[Folded]) -> Tensor | None:
        """The unit as one ``v2_unit`` call, or None when it cannot run so: a BN that does
        not fold (no running statistics), autograd to reach a weight or the input, or no
        ``v2_unit`` for the device."""
        weights: list[Tensor | None] = []
        for s, f in zip(self._stages, folded, strict=True):
            if f is None and s.bn is not None:
                return None
            weights += [f[0], f[1]] if f is not None else [s.conv.weight, s.conv.bias]
        if torch.is_grad_enabled():
            if torch.fx._symbolic_trace.is_fx_symbolic_tracing():
                # x and the folded weights are proxies: the parameters decide.
                needs_grad = any(p.requires_grad for p in self.parameters())
            else:
                needs_grad = x.requires_grad or any(w is not None and w.requires_grad for w in weights)
            if needs_grad:
                return None
        # The input's device too (or the op raises); read from the dict, not through
        # nn.Module.__getattr__, which torch.fx turns into a proxy.
        device = _tensor_attr(self._stages[0].conv, "weight").device.type
        if device != "cpu" and F.v2_unit_namespace(device, self.backend) is None:
            return None
        if self._split == 0:
            weights = [None, None, None, None] + weights
        y = F.v2_unit(x, *weights, self.stride, backend=self.backend)
        if not torch.is_grad_enabled() and not is_tracing():
            # The next calls replay this one's op and arguments while nothing changes.
            op = getattr(torch.ops, F.v2_unit_namespace(x.device.type, self.backend)).v2_unit.default
            self._call_memo = _EagerMemo.build(self, x, _runs_tap_major(x, self.backend), (op, (*weights, self.stride)))
        return y

    def extra_repr(self) -> str:
        return f"stride={self.stride}, backend={self.backend!r}, fuse_units={self.fuse_units}"


_V1_PARTS = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3")


class ShuffleV1Unit(_FusedBlock):
    """ShuffleNet V1 unit on the fused ops; same modules as ``reference.ShuffleV1Unit``.

    ``pointwise_conv(groups or 1, shuffle fused) -> BN -> ReLU -> depthwise 3x3 (stride)
    -> BN -> pointwise_conv(groups) -> BN``, then ``relu(x + y)`` (stride 1, inp == oup)
    or ``relu(cat([avg_pool2d(x, 3, 2, 1), y], 1))`` (stride 2, y has oup - inp channels).
    Input ``[N, inp, H, W]``, output ``[N, oup, H/stride, W/stride]``. The first conv is
    grouped (and followed by the shuffle) only when ``first_group``.
    """

    def __init__(
        self, inp: int, oup: int, groups: int, stride: int, first_group: bool = True,
        *, backend: Backend = "auto",
    ) -> None:
        super().__init__()
        self._adopt(reference.ShuffleV1Unit(inp, oup, groups, stride, first_group), backend)

    def _adopt(self, module: nn.Module, backend: Backend) -> None:
        for name in _V1_PARTS:
            setattr(self, name, getattr(module, name))
        self.stride = int(module.stride)
        self.groups = int(module.groups)
        self.first_groups = int(module.first_groups)
        # With stride 2 the final ReLU distributes over the concat: it is fused into
        # conv3's epilogue and applied to the pooled shortcut alone.
        stages = [
            ConvStage(self.conv1, self.bn1, True, self.first_groups),
            ConvStage(self.conv2, self.bn2, False),
            ConvStage(self.conv3, self.bn3, self.stride != 1),
        ]
        self._init_fused(stages, backend)

    @classmethod
    def from_module(cls, module: nn.Module, backend: Backend = "auto") -> ShuffleV1Unit:
        """A unit running ``module``'s convs and BNs (shared, not copied); ``module`` must
        compute ``reference.ShuffleV1Unit``'s forward (duck-typed on its attributes)."""
        unit = cls.__new__(cls)
        nn.Module.__init__(unit)
        unit._adopt(module, backend)
        return unit

    def forward(self, x: Tensor) -> Tensor:
        y = self._run_chain(x, self._stages, self._folded(x))
        if self.stride == 1:
            if not torch.is_grad_enabled() and not is_tracing():
                return y.add_(x).relu_()  # y is this call's own buffer: reuse it
            return torch.relu(x + y)
        return torch.cat([torch.relu(TF.avg_pool2d(x, 3, 2, 1)), y], 1)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, stride={self.stride}, backend={self.backend!r}"
