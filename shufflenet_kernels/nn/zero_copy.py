"""Zero-copy ShuffleNet V2 stages: the stride-1 units of a stage run in place on one buffer.

A V2 stride-1 unit computes ``out = concat_shuffle(x1, branch(x2))``: output channel
``2i`` is the kept half's ``x1[i]``, ``2i+1`` is ``branch(x2)[i]``. Run in place, the
stage keeps one physical buffer ``P`` and a permutation ``perm`` (logical channel ``j``
lives in physical channel ``perm[j]``), known when the model is converted: a unit's
branch reads physical channels ``perm[C/2 + i]`` and writes its output ``i`` back into
them (``v2_unit_``), and the new order is ``perm'[2i] = perm[i]``,
``perm'[2i+1] = perm[C/2 + i]``. The kept half is neither read nor written. Each unit's
index table is sorted (its 1x1 weights permuted to match), so that the channels it
touches form runs of consecutive channels.

The stage's output is ``P``, whose channels are in the stage's permuted order
(``ZeroCopyStage.out_perm``): its consumer (the next stage's stride-2 unit, or the final
1x1 conv) folds the permutation into its weights (depthwise rows and bias, 1x1
columns). The consumer recognises a permuted input as the very tensor its producer
returned last; any other input is taken in the logical order, and a permuted input
that the consumer cannot fold (training mode, autograd, tracing) is put back in
order first. So the model computes the same function in every mode; only a stage
called on its own in inference returns its channels permuted.

Runs in place only in eval mode, on CPU, when autograd need not reach the input or a
parameter, outside tracing, and when every unit is ``v2_unit``'s structure with its
BN folded; otherwise the stage runs its units one by one as before. Folded and
permuted weights are cached (``fusion.FoldCache``, keyed on the units' cached folded
weights, so a parameter change refolds both).
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor, nn

from .. import functional as F
from ..fusion import FoldCache, is_tracing
from .units import ConvBNReLU, ShuffleV2Unit, _is_pointwise, pin_weights

__all__ = ["ZeroCopyConv", "ZeroCopyStage", "stage_permutations"]


def stage_permutations(channels: int, units: int) -> tuple[list[Tensor], Tensor]:
    """The branch index tables of ``units`` stride-1 units run in place on ``channels``
    channels that start in the logical order, and the permutation after them.

    Returns ``(tables, perm)``: ``tables[u]`` (int64 ``[channels/2]``) holds the physical
    channels of unit ``u``'s branch in the branch's logical order; ``perm[j]`` is the
    physical channel of logical output channel ``j``.
    """
    half = channels // 2
    perm = torch.arange(channels)
    tables = []
    for _ in range(units):
        tables.append(perm[half:].clone())
        perm = torch.stack([perm[:half], perm[half:]], dim=1).reshape(channels)
    return tables, perm


class _LastOutput:
    """A weak reference to the tensor a stage returned last in permuted order.

    Derived per-call state: copies and pickles of a module start without one.
    """

    def __init__(self) -> None:
        self._ref: weakref.ref[Tensor] | None = None

    def set(self, t: Tensor | None) -> None:
        self._ref = None if t is None else weakref.ref(t)

    def is_(self, t: Tensor) -> bool:
        return self._ref is not None and self._ref() is t

    def __deepcopy__(self, memo: dict) -> _LastOutput:
        return _LastOutput()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._ref = None


class _PermutedInput:
    """Finding a consumer's input permutation: the producer stage whose output it may be."""

    # Held in a tuple, not as an attribute of type Module, so it is no child (no
    # state_dict keys) and deepcopy maps it to the copied producer.
    _producer: tuple[ZeroCopyStage, ...] = ()

    def set_producer(self, producer: ZeroCopyStage | None) -> None:
        self._producer = () if producer is None else (producer,)

    def input_perm(self, x: Tensor) -> tuple[Tensor, Tensor] | None:
        """``(perm, inverse)`` of ``x``'s channels when it is the producer's permuted output."""
        if self._producer and self._producer[0]._last_output.is_(x):
            return self._producer[0].out_perm, self._producer[0].out_perm_inverse
        return None


def _needs_grad(x: Tensor, module: nn.Module) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in module.parameters()))


class ZeroCopyStage(nn.Sequential, _PermutedInput):
    """A ShuffleNet V2 stage (a stride-2 ``ShuffleV2Unit`` then stride-1 ones) whose
    stride-1 units run in place in inference (see the module docstring).

    Same children and state_dict keys as the ``nn.Sequential`` of units it replaces.
    Input ``[N, C_in, H, W]``, output ``[N, C, ceil(H/2), ceil(W/2)]``; in the in-place
    mode the output's channels are in the order ``out_perm`` (logical channel ``j`` at
    ``out[:, out_perm[j]]``), otherwise in the logical order.
    """

    def __init__(self, *units: ShuffleV2Unit) -> None:
        nn.Sequential.__init__(self, *units)
        if not units or units[0].stride != 2 or any(u.stride != 1 for u in units[1:]):
            raise ValueError("ZeroCopyStage: expected a stride-2 ShuffleV2Unit followed by stride-1 ones")
        channels = 2 * units[0]._stages[-1].conv.out_channels
        tables, self.out_perm = stage_permutations(channels, len(units) - 1)
        self.out_perm_inverse = torch.argsort(self.out_perm)  # physical channel -> logical
        # Sorted tables, and the order that sorts each (to permute the 1x1 weights).
        self._orders = [torch.argsort(t) for t in tables]
        self._tables = [t[o].contiguous() for t, o in zip(tables, self._orders, strict=True)]
        self._in_cache: FoldCache[list[Tensor | None]] = FoldCache()
        self._unit_caches = [FoldCache() for _ in units[1:]]
        self._last_output = _LastOutput()

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        self._in_cache.clear()
        for c in self._unit_caches:
            c.clear()
        return super()._apply(fn, recurse)

    def _can_run_in_place(self, x: Tensor) -> bool:
        units: list[ShuffleV2Unit] = list(self)  # type: ignore[arg-type]
        return (
            not self.training and x.dim() == 4 and x.device.type == "cpu" and not is_tracing()
            and all(not u.training and u.fuse_units and u._fusable for u in units)
            and not _needs_grad(x, self)
        )

    def forward(self, x: Tensor) -> Tensor:
        perm_in = self.input_perm(x)
        self._last_output.set(None)
        if self._can_run_in_place(x):
            y = self._in_place(x, perm_in)
            if y is not None:
                if len(self) > 1:
                    self._last_output.set(y)
                return y
        if perm_in is not None:
            x = x.index_select(1, perm_in[0])  # back in the logical order
        for unit in self:
            x = unit(x)
        return x

    def _in_place(self, x: Tensor, perm_in: tuple[Tensor, Tensor] | None) -> Tensor | None:
        first: ShuffleV2Unit = self[0]  # type: ignore[assignment]
        weights = _folded_weights(first, x)
        if weights is None:
            return None
        if perm_in is not None:
            weights = self._permuted_input_weights(weights, perm_in[1])
        buf = F.v2_unit(x, *weights, 2)
        for unit, table, order, cache in zip(
            list(self)[1:], self._tables, self._orders, self._unit_caches, strict=True
        ):
            w = _folded_weights(unit, buf)
            if w is None:
                return None
            pw1, pw1_b, dw, dw_b, pw2, pw2_b = w

            def compute(pw1: Tensor = pw1, pw2: Tensor = pw2, pw2_b: Tensor | None = pw2_b,
                        order: Tensor = order) -> list[Tensor | None]:
                permuted = [pw1[:, order].contiguous(), pw2[order].contiguous(),
                            None if pw2_b is None else pw2_b[order].contiguous()]
                pin_weights(permuted)
                return permuted

            pw1_s, pw2_s, pw2_b_s = cache.get([pw1, pw2, pw2_b], compute)
            torch.ops.shufflenet.v2_unit_(buf, table, pw1_s, pw1_b, dw, dw_b, pw2_s, pw2_b_s)
        return buf

    def _permuted_input_weights(self, weights: list[Tensor | None], inv: Tensor) -> list[Tensor | None]:
        """The stride-2 unit's weights reading its input's physical channels: depthwise
        rows and bias, projection and pw1 columns in the order ``inv`` (the inverse of the
        input's permutation: physical channel ``p`` holds logical channel ``inv[p]``)."""
        proj_dw, proj_dw_b, proj_pw, proj_pw_b, pw1, *rest = weights
        assert proj_dw is not None and proj_pw is not None and pw1 is not None

        def compute() -> list[Tensor | None]:
            permuted = [proj_dw[inv].contiguous(), None if proj_dw_b is None else proj_dw_b[inv].contiguous(),
                        proj_pw[:, inv].contiguous(), pw1[:, inv].contiguous()]
            pin_weights(permuted)
            return permuted

        sources = [proj_dw, proj_dw_b, proj_pw, pw1]
        dw_p, dw_b_p, pw_p, pw1_p = self._in_cache.get(sources, compute, extra=(id(inv),))
        return [dw_p, dw_b_p, pw_p, proj_pw_b, pw1_p, *rest]

    def extra_repr(self) -> str:
        return "zero_copy=True"


def _folded_weights(unit: ShuffleV2Unit, x: Tensor) -> list[Tensor | None] | None:
    """The unit's ``v2_unit`` weight arguments (BN folded), or None where a BN does not fold."""
    weights: list[Tensor | None] = []
    for s, f in zip(unit._stages, unit._folded(x), strict=True):
        if f is None and s.bn is not None:
            return None
        weights += [f[0], f[1]] if f is not None else [s.conv.weight, s.conv.bias]
    return weights


class ZeroCopyConv(ConvBNReLU, _PermutedInput):
    """The 1x1 ``ConvBNReLU`` after the last zero-copy stage (torchvision's ``conv5``):
    folds the stage's channel permutation into its weight's columns.

    Same children and state_dict keys as ``ConvBNReLU``; input and output as there.
    """

    _col_cache: FoldCache[Tensor]

    def forward(self, x: Tensor) -> Tensor:
        perm = self.input_perm(x)
        if perm is None:
            return super().forward(x)
        stage = self._stages[0]
        folded = self._folded(x)
        f = folded[0]
        if (
            len(self._stages) == 1 and f is not None and _is_pointwise(stage.conv) and stage.conv.groups == 1
            and stage.shuffle == 1 and not _needs_grad(x, self)
        ):
            weight, bias = f
            if not hasattr(self, "_col_cache"):
                self._col_cache = FoldCache()
            inv = perm[1]
            def compute() -> Tensor:
                permuted = weight[:, inv].contiguous()
                pin_weights([permuted])
                return permuted

            w = self._col_cache.get([weight], compute, extra=(id(inv),))
            return F.pointwise_conv(x, w, bias, 1, 1, stage.relu, backend=self.backend)
        return super().forward(x.index_select(1, perm[0]))

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        if hasattr(self, "_col_cache"):
            self._col_cache.clear()
        return super()._apply(fn, recurse)


_STAGES = ("stage2", "stage3", "stage4")


def convert_stages(model: nn.Module) -> bool:
    """Runs the stages of a converted torchvision-layout ShuffleNetV2 (children
    ``conv1, maxpool, stage2, stage3, stage4, conv5, fc``, each stage a Sequential of
    ``ShuffleV2Unit``, ``conv5`` a ``ConvBNReLU``) as zero-copy stages, in place.

    Returns False (and changes nothing) when ``model`` is not laid out so.
    """
    children = dict(model.named_children())
    if set(children) != {"conv1", "maxpool", *_STAGES, "conv5", "fc"}:
        return False
    stages = [children[name] for name in _STAGES]
    for s in stages:
        if isinstance(s, ZeroCopyStage):
            continue
        units = list(s.children())
        if type(s) is not nn.Sequential or not units or not all(isinstance(u, ShuffleV2Unit) for u in units):
            return False
        if units[0].stride != 2 or any(u.stride != 1 for u in units[1:]):
            return False
    if not isinstance(children["conv5"], ConvBNReLU):
        return False
    producer: ZeroCopyStage | None = None
    for name, s in zip(_STAGES, stages, strict=True):
        new = s if isinstance(s, ZeroCopyStage) else ZeroCopyStage(*s.children())
        new.training = s.training
        new.set_producer(producer)
        setattr(model, name, new)
        producer = new
    conv5 = children["conv5"]
    if not isinstance(conv5, ZeroCopyConv):
        new5 = ZeroCopyConv(*conv5, backend=conv5.backend)
        new5.training = conv5.training
        model.conv5 = new5
        conv5 = new5
    conv5.set_producer(producer)
    return True
