"""Batch-norm folding and shuffled-order batch norm, used by the fused ShuffleNet units.

* ``fold_conv_bn`` folds an inference-mode ``BatchNorm2d`` into the preceding
  convolution's weight and bias, so a conv -> BN -> ReLU chain becomes one fused op.
* ``shuffled_batch_norm`` applies a ``BatchNorm2d`` whose parameters are stored in
  conv-output order to a tensor whose channels were shuffled by the conv's fused
  epilogue (training mode, where BN cannot be folded). The stored parameters and
  running statistics stay in their original order, so state_dicts match the
  unfused modules, and the running statistics update exactly as they would there.
* ``FoldCache`` memoises folded tensors on the identity and version counters of
  the tensors they were computed from; ``TensorSlots`` makes the same test cheap
  enough for a per-call fast path.

``fold_conv_bn`` and ``shuffled_batch_norm`` are leaves for ``torch.fx.symbolic_trace``
(``torch.fx.wrap``): a traced graph calls them on the live modules, so it folds the
current running statistics and updates them (``num_batches_tracked`` included) as
eager mode does, instead of holding values read at trace time.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

T = TypeVar("T")

__all__ = [
    "FoldCache",
    "TensorSlots",
    "is_tracing",
    "bn_can_fold",
    "bn_scale_shift",
    "fold_conv_bn",
    "from_shuffled_order",
    "shuffled_batch_norm",
    "tap_major",
    "to_shuffled_order",
]


def is_tracing() -> bool:
    """True while ``torch.compile``/``torch.export`` or ``torch.fx.symbolic_trace`` traces the caller.

    Tracing records the computation: caches and in-place shortcuts that depend on the
    values at hand are skipped then.
    """
    return torch.compiler.is_compiling() or torch.fx._symbolic_trace.is_fx_symbolic_tracing()


def _acc(t: Tensor) -> Tensor:
    """``t`` in the accumulation type of its dtype: float32 for half types, else its own."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def bn_can_fold(bn: nn.BatchNorm2d) -> bool:
    """True when ``bn`` normalises with its running statistics (eval mode with tracked stats).

    Only then is it an affine map per channel that can be folded into a convolution;
    in training mode, or without running statistics, it uses the batch statistics.
    """
    return not bn.training and bn.running_mean is not None and bn.running_var is not None


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Per-channel ``(scale, shift)`` with ``bn(y) == y * scale + shift`` in eval mode.

    Both are ``[C]`` tensors in float32, or float64 for a float64 BN (half-precision
    models are folded in float32 so they do not lose accuracy); requires ``bn_can_fold(bn)``.
    """
    assert bn.running_mean is not None and bn.running_var is not None
    inv_std = torch.rsqrt(_acc(bn.running_var) + bn.eps)
    scale = inv_std if bn.weight is None else _acc(bn.weight) * inv_std
    shift = -_acc(bn.running_mean) * scale
    if bn.bias is not None:
        shift = shift + _acc(bn.bias)
    return scale, shift


@torch.fx.wrap
def fold_conv_bn(weight: Tensor, bias: Tensor | None, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Folds eval-mode ``bn`` into a convolution: ``bn(conv(x, weight, bias)) == conv(x, w, b)``.

    weight: ``[C_out, C_in/groups, kH, kW]``; bias: ``[C_out]`` or None; bn over ``C_out``
    channels. Returns ``(w, b)`` in weight's dtype and memory format, ``b`` of shape ``[C_out]``.
    Differentiable with respect to every input.
    """
    scale, shift = bn_scale_shift(bn)
    w = (_acc(weight) * scale.view(-1, *([1] * (weight.dim() - 1)))).to(weight.dtype)
    b = shift if bias is None else shift + _acc(bias) * scale
    return w, b.to(weight.dtype)


def tap_major(weight: Tensor) -> Tensor:
    """A depthwise weight ``[C, 1, kH, kW]`` with the same values stored tap-major.

    Strides ``(1, ·, kW*C, C)`` (dim 1 has size 1): the ``[kH*kW, C]`` matrix the channels_last
    depthwise kernels read, which they then use without a copy (a weight with
    ``stride(0) == 1`` is taken as is). NCHW kernels prefer the contiguous layout.
    """
    return weight.permute(2, 3, 1, 0).contiguous().permute(3, 2, 0, 1)


def to_shuffled_order(v: Tensor, groups: int) -> Tensor:
    """Reorders a per-channel vector ``[C]`` like ``channel_shuffle(·, groups)`` reorders channels.

    Entry ``i*groups + g`` of the result is ``v[g*(C/groups) + i]``. Differentiable.
    """
    return v.view(groups, -1).t().reshape(-1)


def from_shuffled_order(v: Tensor, groups: int) -> Tensor:
    """Inverse of ``to_shuffled_order(·, groups)``."""
    return v.view(-1, groups).t().reshape(-1)


@torch.fx.wrap
def shuffled_batch_norm(x: Tensor, bn: nn.BatchNorm2d, groups: int) -> Tensor:
    """``channel_shuffle(bn(y), groups)`` given ``x = channel_shuffle(y, groups)``.

    x: ``[N, C, H, W]`` whose channel ``i*groups + g`` is conv channel ``g*(C/groups) + i``;
    bn: ``BatchNorm2d(C)`` in conv channel order. Same semantics as ``bn.forward``
    (training/eval, momentum or cumulative average, ``num_batches_tracked``), with
    the affine parameters and statistics read in shuffled order and the updated running
    statistics written back in bn's own order.
    """
    if groups == 1 or groups == x.shape[1]:
        return bn(x)  # the shuffle is the identity permutation
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        # Same factor as nn.BatchNorm2d.forward: cumulative average when momentum is None.
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    # nn.BatchNorm2d passes (and so updates) the running stats unless it is training
    # without tracking them; batch statistics are used in training or without stats.
    pass_stats = (not bn.training or bn.track_running_stats) and bn.running_mean is not None

    def perm(t: Tensor | None) -> Tensor | None:
        return None if t is None else to_shuffled_order(t, groups)

    # With 1 < groups < C the permuted running stats are copies (a transposed view
    # cannot be flattened in place): batch_norm updates the copies, which are written
    # back in bn's order.
    running_mean = perm(bn.running_mean) if pass_stats else None
    running_var = perm(bn.running_var) if pass_stats else None
    out = F.batch_norm(
        x, running_mean, running_var, perm(bn.weight), perm(bn.bias), use_batch_stats, momentum, bn.eps
    )
    if use_batch_stats and running_mean is not None and running_var is not None:
        with torch.no_grad():
            bn.running_mean.copy_(from_shuffled_order(running_mean, groups))
            bn.running_var.copy_(from_shuffled_order(running_var, groups))
    return out


_VERSION = operator.attrgetter("_version")
_DATA_PTR = operator.methodcaller("data_ptr")


class TensorSlots:
    """A fixed set of module tensor slots (``(module._parameters, "weight")``, ...) and a
    cheap test that none changed since they were recorded.

    "Unchanged" is ``FoldCache``'s key: the same tensor object in every slot (a replaced
    parameter, or one set to None, counts as a change), with the same storage address and
    version counter (bumped by in-place writes). The test runs as a few C-level ``map``
    passes rather than a Python loop per tensor: it is meant for fast paths that run on
    every call of a small module. Raises RuntimeError when a tensor has no version counter
    (an inference tensor): such tensors cannot be watched.
    """

    __slots__ = ("_dicts", "_names", "_tensors", "_present", "_versions", "_ptrs")

    def __init__(self, slots: Sequence[tuple[dict[str, Tensor | None], str]]) -> None:
        self._dicts = tuple(d for d, _ in slots)
        self._names = tuple(n for _, n in slots)
        self._tensors = tuple(map(dict.get, self._dicts, self._names))
        self._present = tuple(t for t in self._tensors if t is not None)
        self._versions = tuple(map(_VERSION, self._present))
        self._ptrs = tuple(map(_DATA_PTR, self._present))

    def unchanged(self) -> bool:
        """True when every slot still holds its recorded tensor, not written to since."""
        return (
            all(map(operator.is_, map(dict.get, self._dicts, self._names), self._tensors))
            and tuple(map(_VERSION, self._present)) == self._versions
            and tuple(map(_DATA_PTR, self._present)) == self._ptrs
        )


class FoldCache(Generic[T]):
    """Memoises a value computed from tensors (folded weights), keyed on those tensors.

    The key is each source tensor's identity (held by weak reference, so a replaced
    parameter never matches even if its memory is reused), storage address and version
    counter (bumped by every in-place write: optimizer steps, ``load_state_dict``,
    ``copy_``), so any change of a source recomputes the value. The
    cache is bypassed (value recomputed on every call) while ``torch.compile`` or
    ``torch.fx`` traces (``is_tracing``), so the fold becomes part of the graph, and
    when autograd must reach the sources (grad enabled and a source requires grad), so
    gradients flow through the fold. Copies and pickles of a module start with an empty cache.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._refs: tuple[weakref.ref[Tensor] | None, ...] = ()
        self._value: T | None = None

    def clear(self) -> None:
        """Drops the cached value (frees its memory)."""
        self._key = None
        self._refs = ()
        self._value = None

    def _same_sources(self, sources: Sequence[Tensor | None]) -> bool:
        if len(sources) != len(self._refs):
            return False
        return all(
            (r is None and s is None) or (r is not None and r() is s)
            for r, s in zip(self._refs, sources, strict=True)
        )

    def get(self, sources: Sequence[Tensor | None], compute: Callable[[], T], extra: tuple = ()) -> T:
        """The cached value for ``sources`` (and hashable ``extra``), computing it when stale."""
        if is_tracing():
            return compute()
        if torch.is_grad_enabled() and any(s is not None and s.requires_grad for s in sources):
            return compute()
        try:
            # A new dtype or device means a new storage, or goes through Module._apply,
            # which clears the cache: address, version and identity are enough.
            key = extra + tuple(None if s is None else (s.data_ptr(), s._version) for s in sources)
        except RuntimeError:
            # Inference tensors have no version counter: nothing to key on, do not cache.
            return compute()
        if self._value is None or key != self._key or not self._same_sources(sources):
            # Built outside inference mode so the cached tensors can also serve later
            # calls that run with autograd on (e.g. gradients w.r.t. the input only).
            with torch.inference_mode(False), torch.no_grad():
                self._value = compute()
            self._key = key
            self._refs = tuple(None if s is None else weakref.ref(s) for s in sources)
        return self._value

    def __deepcopy__(self, memo: dict) -> FoldCache[T]:
        # The cache is derived state: a copied module starts with an empty one.
        return FoldCache()

    def __getstate__(self) -> dict:
        # Weak references cannot be pickled, and the cache is derived state anyway.
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
