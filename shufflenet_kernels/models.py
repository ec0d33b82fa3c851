"""ShuffleNet V1 and V2 models, plain (reference) and on the fused kernels.

* ``shufflenet_v2(width)`` / ``reference_shufflenet_v2(width)``: torchvision's
  ``ShuffleNetV2`` layout and module names (``conv1, maxpool, stage2..4, conv5, fc``),
  so a torchvision state_dict loads unchanged into either.
* ``shufflenet_v1(groups, width)`` / ``reference_shufflenet_v1(groups, width)``: the
  V1 paper's Table 1 network (``conv1, maxpool, stage2..4, fc``).

The fused models are the reference models passed through ``accelerate``, so both
have the same parameters, state_dict keys and (seeded) initialisation.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from . import reference
from .accelerate import accelerate
from .backend import Backend

__all__ = [
    "V1_STAGE_CHANNELS",
    "V2_STAGE_CHANNELS",
    "ShuffleNetV1",
    "ShuffleNetV2",
    "reference_shufflenet_v1",
    "reference_shufflenet_v2",
    "shufflenet_v1",
    "shufflenet_v2",
]

# torchvision's stage output channels per width: conv1, stage2, stage3, stage4, conv5.
V2_STAGE_CHANNELS: dict[float, tuple[int, int, int, int, int]] = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}
V2_STAGE_REPEATS = (4, 8, 4)

# V1 paper, Table 1: output channels of stages 2, 3, 4 per group count (width 1.0).
V1_STAGE_CHANNELS: dict[int, tuple[int, int, int]] = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
V1_STAGE_REPEATS = (4, 8, 4)  # one stride-2 unit, then 3 / 7 / 3 stride-1 units
V1_STEM_CHANNELS = 24


def _conv_bn_relu(inp: int, oup: int, kernel: int, stride: int) -> nn.Sequential:
    conv = nn.Conv2d(inp, oup, kernel, stride, kernel // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


class ShuffleNetV2(nn.Module):
    """ShuffleNet V2 from reference units, torchvision's layout and names.

    stages_repeats: units per stage 2..4; stages_out_channels: conv1, stage2..4, conv5.
    Input ``[N, 3, H, W]``, output logits ``[N, num_classes]``.
    """

    def __init__(
        self, stages_repeats: Sequence[int], stages_out_channels: Sequence[int], num_classes: int = 1000
    ) -> None:
        super().__init__()
        if len(stages_repeats) != 3 or len(stages_out_channels) != 5:
            raise ValueError("ShuffleNetV2: expected 3 stage repeats and 5 output channel counts")
        self._stage_out_channels = list(stages_out_channels)
        c = stages_out_channels[0]
        self.conv1 = _conv_bn_relu(3, c, 3, 2)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for i, (repeats, oup) in enumerate(zip(stages_repeats, stages_out_channels[1:4], strict=True)):
            units = [reference.ShuffleV2Unit(c, oup, 2)]
            units += [reference.ShuffleV2Unit(oup, oup, 1) for _ in range(repeats - 1)]
            setattr(self, f"stage{i + 2}", nn.Sequential(*units))
            c = oup
        self.conv5 = _conv_bn_relu(c, stages_out_channels[-1], 1, 1)
        self.fc = nn.Linear(stages_out_channels[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        x = self.conv5(x)
        return self.fc(x.mean([2, 3]))


def _round_to(v: float, multiple: int) -> int:
    return max(multiple, int(v / multiple + 0.5) * multiple)


def v1_channels(groups: int, width: float = 1.0) -> tuple[int, int, int, int]:
    """(conv1, stage2, stage3, stage4) output channels of ShuffleNet V1 ``groups``, width ``width``.

    Width 1.0 is the paper's Table 1. Other widths scale every count and round it so
    the units stay valid: stage channels to a multiple of ``4*groups`` (the bottleneck,
    out/4, is split in ``groups``), conv1 to a multiple of ``groups``.
    """
    if groups not in V1_STAGE_CHANNELS:
        raise ValueError(f"shufflenet_v1: groups must be one of {sorted(V1_STAGE_CHANNELS)}, got {groups}")
    if width <= 0:
        raise ValueError(f"shufflenet_v1: width must be positive, got {width}")
    stem = _round_to(V1_STEM_CHANNELS * width, groups)
    s2, s3, s4 = (_round_to(c * width, 4 * groups) for c in V1_STAGE_CHANNELS[groups])
    return stem, s2, s3, s4


class ShuffleNetV1(nn.Module):
    """ShuffleNet V1 (paper Table 1) from reference units.

    conv1 (3x3 s2) -> BN -> ReLU -> maxpool 3x3 s2 -> stages 2..4 (a stride-2 unit then
    3 / 7 / 3 stride-1 units; the first 1x1 conv of stage 2 is not grouped) -> global
    average pool -> fc. Input ``[N, 3, H, W]``, output logits ``[N, num_classes]``.
    """

    def __init__(self, groups: int = 3, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        stem, *stages = v1_channels(groups, width)
        self.groups = groups
        self.conv1 = _conv_bn_relu(3, stem, 3, 2)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        c = stem
        for i, (repeats, oup) in enumerate(zip(V1_STAGE_REPEATS, stages, strict=True)):
            units = [reference.ShuffleV1Unit(c, oup, groups, 2, first_group=i != 0)]
            units += [reference.ShuffleV1Unit(oup, oup, groups, 1) for _ in range(repeats - 1)]
            setattr(self, f"stage{i + 2}", nn.Sequential(*units))
            c = oup
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        return self.fc(x.mean([2, 3]))


def reference_shufflenet_v2(width: float = 1.0, num_classes: int = 1000) -> ShuffleNetV2:
    """Plain-PyTorch ShuffleNet V2 ``width`` x (0.5, 1.0, 1.5, 2.0), torchvision's config and names."""
    if width not in V2_STAGE_CHANNELS:
        raise ValueError(f"shufflenet_v2: width must be one of {sorted(V2_STAGE_CHANNELS)}, got {width}")
    return ShuffleNetV2(V2_STAGE_REPEATS, V2_STAGE_CHANNELS[width], num_classes)


def shufflenet_v2(width: float = 1.0, num_classes: int = 1000, *, backend: Backend = "auto") -> ShuffleNetV2:
    """ShuffleNet V2 ``width`` x on the fused kernels; loads torchvision's state_dict unchanged.

    Runs in the input's memory format (pass channels_last input, or use
    ``accelerate(model)``, which converts on entry, for the fastest layout).
    """
    return accelerate(reference_shufflenet_v2(width, num_classes), backend, inplace=True, channels_last=False)  # type: ignore[return-value]


def reference_shufflenet_v1(groups: int = 3, width: float = 1.0, num_classes: int = 1000) -> ShuffleNetV1:
    """Plain-PyTorch ShuffleNet V1 with ``groups`` in (1, 2, 3, 4, 8) and width multiplier ``width``."""
    return ShuffleNetV1(groups, width, num_classes)


def shufflenet_v1(
    groups: int = 3, width: float = 1.0, num_classes: int = 1000, *, backend: Backend = "auto"
) -> ShuffleNetV1:
    """ShuffleNet V1 on the fused kernels; same parameters and names as ``reference_shufflenet_v1``.

    Runs in the input's memory format, like ``shufflenet_v2``.
    """
    return accelerate(
        reference_shufflenet_v1(groups, width, num_classes), backend, inplace=True, channels_last=False
    )  # type: ignore[return-value]
