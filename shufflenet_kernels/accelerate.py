"""``accelerate(model)``: run an existing ShuffleNet on the fused kernels, same weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .backend import Backend, check_backend
from .nn.units import (
    FUSE_UNITS_DEFAULT,
    ConvBNReLU,
    ShuffleV1Unit,
    ShuffleV2Unit,
    StemMaxPool,
    _FusedBlock,
    is_stem_conv,
    is_stem_pool,
    parse_conv_chain,
)
from .nn.zero_copy import convert_stages

__all__ = ["accelerate", "is_v1_unit", "is_v2_unit"]

_V1_TYPES = {"conv1": nn.Conv2d, "bn1": nn.BatchNorm2d, "conv2": nn.Conv2d, "bn2": nn.BatchNorm2d,
             "conv3": nn.Conv2d, "bn3": nn.BatchNorm2d}


def is_v2_unit(module: nn.Module) -> bool:
    """True for a ShuffleNet V2 unit laid out like torchvision's ``InvertedResidual``.

    Duck-typed: ``branch1`` (empty for the stride-1 split unit) and ``branch2`` are
    ``nn.Sequential`` chains of ``Conv2d [BatchNorm2d] [ReLU]`` and there are no other
    children.
    """
    names = {name for name, _ in module.named_children()}
    if names != {"branch1", "branch2"}:
        return False
    chain1 = parse_conv_chain(module.branch1)
    chain2 = parse_conv_chain(module.branch2)
    return chain1 is not None and bool(chain2)


def is_v1_unit(module: nn.Module) -> bool:
    """True for a module laid out like ``reference.ShuffleV1Unit``.

    Duck-typed: children ``conv1, bn1, conv2, bn2, conv3, bn3`` of the expected
    types, integer ``stride`` (1 or 2), ``groups`` and ``first_groups`` attributes,
    1x1 convs 1 and 3 with ``conv1.groups == first_groups`` and ``conv3.groups == groups``.
    """
    children = dict(module.named_children())
    if set(children) != set(_V1_TYPES):
        return False
    if any(type(children[k]) is not t for k, t in _V1_TYPES.items()):
        return False
    stride, groups, first = (getattr(module, a, None) for a in ("stride", "groups", "first_groups"))
    if not all(isinstance(v, int) for v in (stride, groups, first)) or stride not in (1, 2):
        return False
    c1, c3 = children["conv1"], children["conv3"]
    return (
        tuple(c1.kernel_size) == (1, 1) and tuple(c3.kernel_size) == (1, 1)
        and c1.groups == first and c3.groups == groups
    )


def _is_conv_bn_relu(module: nn.Module) -> bool:
    # Only a plain Sequential (not a subclass with its own forward) of one conv group.
    if type(module) is not nn.Sequential:
        return False
    stages = parse_conv_chain(module)
    return stages is not None and len(stages) == 1 and stages[0].bn is not None


def _convert(module: nn.Module, backend: Backend, fuse_units: bool) -> nn.Module | None:
    """The fused replacement of ``module``, or None when it is not one we convert."""
    if isinstance(module, _FusedBlock):
        module.backend = backend
        if isinstance(module, ShuffleV2Unit):
            module.fuse_units = fuse_units
        return module
    new: _FusedBlock
    if is_v2_unit(module):
        new = ShuffleV2Unit.from_module(module, backend)
        new.fuse_units = fuse_units
    elif is_v1_unit(module):
        new = ShuffleV1Unit.from_module(module, backend)
    elif _is_conv_bn_relu(module):
        new = ConvBNReLU.from_sequential(module, backend)
    else:
        return None
    # A new module starts in training mode: take the replaced module's mode (its own
    # flag only; the adopted children keep theirs), so an eval model stays in eval.
    new.training = module.training
    return new


def _convert_children(module: nn.Module, backend: Backend, fuse_units: bool) -> None:
    children = list(module.named_children())
    for name, child in children:
        new = _convert(child, backend, fuse_units)
        if new is None:
            _convert_children(child, backend, fuse_units)
        elif new is not child:
            setattr(module, name, new)
    _fuse_stem_pools(module, [name for name, _ in children])


def _fuse_stem_pools(module: nn.Module, names: list[str]) -> None:
    """Pairs each converted stem (a ``ConvBNReLU`` 3x3 stride-2 conv with ReLU) with the
    ``MaxPool2d(3, 2, 1)`` registered right after it in the same parent (torchvision's
    ``conv1``, ``maxpool``; registration order taken as call order, as the unit patterns
    assume the patterns' forward): the pool becomes a ``StemMaxPool`` (see
    ``ConvBNReLU.fuse_pool``)."""
    for first, second in zip(names, names[1:], strict=False):
        conv, pool = getattr(module, first), getattr(module, second)
        if isinstance(pool, StemMaxPool) and pool._stem is conv:
            continue  # paired by an earlier accelerate()
        if type(conv) is ConvBNReLU and conv._stem_pool is None and is_stem_conv(conv._stages) and is_stem_pool(pool):
            setattr(module, second, conv.fuse_pool(pool))


class _ChannelsLastEntry:
    """Forward pre-hook: a 4-D input enters the network in channels_last, except when the
    network's first child is a fused stem that runs ``conv3x3_relu_maxpool`` on it (that op
    reads NCHW in place and writes channels_last, so the conversion would be a wasted copy).

    A class rather than a closure, so that ``copy.deepcopy`` of the model keeps it working
    (the stem is looked up by name on the module the hook runs for)."""

    def __init__(self, stem: str | None) -> None:
        self.stem = stem

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        if not args or not isinstance(args[0], torch.Tensor) or args[0].dim() != 4:
            return args
        if self.stem is not None:
            stem = getattr(module, self.stem, None)
            if isinstance(stem, ConvBNReLU) and stem.runs_stem_op(args[0]):
                return args
        return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])


def _first_stem(model: nn.Module) -> str | None:
    """The name of ``model``'s first child when it is a stem with a fused pooling."""
    first = next(iter(model.named_children()), None)
    if first is not None and isinstance(first[1], ConvBNReLU) and first[1]._stem_pool is not None:
        return first[0]
    return None


def accelerate(
    model: nn.Module,
    backend: Backend = "auto",
    inplace: bool = False,
    channels_last: bool = True,
    fuse_units: bool = FUSE_UNITS_DEFAULT,
    zero_copy: bool = False,
) -> nn.Module:
    """Returns ``model`` with its ShuffleNet blocks running on the fused kernels.

    Computes the same function with the same parameters, buffers and state_dict keys
    (the converted blocks hold the original ``Conv2d``/``BatchNorm2d`` modules), in
    training mode (BN separate, running statistics updated as before) and eval mode
    (BN folded into the convs, ReLU into their epilogues; see ``nn.units``).

    Converted, wherever they appear in the module tree (found by structure, not by
    class, so torchvision need not be installed):

    * ShuffleNet V2 units: any module whose only children are ``branch1``/``branch2``
      Sequentials of ``Conv2d [BatchNorm2d] [ReLU]`` groups (torchvision's
      ``InvertedResidual``, ``reference.ShuffleV2Unit``) -> ``nn.ShuffleV2Unit``;
    * ShuffleNet V1 units laid out like ``reference.ShuffleV1Unit`` -> ``nn.ShuffleV1Unit``;
    * plain ``nn.Sequential(Conv2d, BatchNorm2d[, ReLU])`` (torchvision's ``conv1`` and
      ``conv5``) -> ``nn.ConvBNReLU`` (1x1 convs on ``pointwise_conv``, depthwise on
      ``depthwise_conv2d``, others on ATen with BN folded in eval mode);
    * the stem: such a block with a 3x3 stride-2 conv and ReLU (few input channels)
      registered right before an ``nn.MaxPool2d(3, 2, 1)`` in the same parent
      (torchvision's ``conv1``, ``maxpool``): in eval mode with grad off the stem runs
      conv, ReLU and pooling as one ``conv3x3_relu_maxpool`` (CPU; the conv map never goes
      to memory) and returns the pooled map in channels_last; the pool becomes an
      ``nn.StemMaxPool`` that passes it through. In training mode or with grad on, the
      stem returns the conv map and the pool pools it, as before.

    Not converted (left as they are): the model's own ``forward`` (torchvision's
    ``ShuffleNetV2.forward`` keeps running; only its submodules change), other max
    pooling, the classifier, lone convs or BNs outside those patterns, and subclasses of
    ``nn.Sequential`` with their own forward. Forward hooks registered on converted
    blocks are not carried over. Each converted unit is assumed to compute its
    pattern's forward (torchvision's / the reference's); a module that merely has the
    same children but a different forward would be changed.

    model: any ``nn.Module``; backend: ``"auto"``, ``"cuda"`` or ``"triton"`` (see
    ``shufflenet_kernels.backend``); inplace: convert ``model`` itself instead of a
    deep copy; channels_last: when ``model`` is a network rather than a single
    unit, convert a 4-D input to channels_last once on entry (a forward pre-hook on
    the returned model), so every layer runs in the layout
    these kernels, oneDNN and cuDNN are fastest in (on CPU, max pooling of an NCHW
    map is several times slower than of a channels_last one). The results are the
    same; a 4-D output, if the model returns one, comes back in channels_last. When the
    model's first child is a fused stem that runs ``conv3x3_relu_maxpool`` on the input,
    the input is passed as it is (the op reads NCHW in place and writes channels_last).
    fuse_units: run each V2 unit as one ``v2_unit`` call (the whole unit in one pass,
    BN folded) in eval mode whenever autograd need not reach its weights or input (see
    ``nn.ShuffleV2Unit``); False keeps the per-op path (one fused op per conv plus
    ``concat_shuffle``) there too. Training mode is unaffected.
    zero_copy: for a network laid out like torchvision's ``ShuffleNetV2`` (children
    ``conv1, maxpool, stage2, stage3, stage4, conv5, fc``), run each stage in inference
    (eval mode, CPU, autograd not needed) as its stride-2 unit followed by its stride-1
    units in place on one buffer (``v2_unit_``), tracking the channel shuffles as a
    permutation that the next stage's first unit and ``conv5`` fold into their weights
    (``nn.zero_copy``; needs ``fuse_units``). The model's output is unchanged; a stage
    called on its own in that mode returns its channels permuted. Ignored for other models.
    Returns the converted model (``model`` itself when inplace).
    """
    check_backend(backend)
    if not inplace:
        model = copy.deepcopy(model)
    root = _convert(model, backend, fuse_units)
    if root is not None:  # the model is itself one unit: its layout is the caller's
        return root
    _convert_children(model, backend, fuse_units)
    if zero_copy and fuse_units:
        convert_stages(model)
    if channels_last:
        model.register_forward_pre_hook(_ChannelsLastEntry(_first_stem(model)))
    return model
