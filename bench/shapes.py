"""Layer shapes of ShuffleNet V1 and V2 (224x224 input) that the per-op cases run on.

Configurations from the papers and torchvision (see ``shufflenet_reference_numbers.md``):
V2 stage output channels per width, V1 stage channels per group count with an out/4
bottleneck. The feature map is 28x28 in stage 2, 14x14 in stage 3 and 7x7 in stage 4;
a stage's stride-2 unit reads the previous stage's map (twice the size).
"""

from __future__ import annotations

from dataclasses import dataclass

from shufflenet_kernels import models

# Stage 2..4 output channels, from the model definitions (one source of truth).
V2_STAGE_CHANNELS: dict[str, tuple[int, int, int]] = {
    f"{width:.1f}": channels[1:4] for width, channels in models.V2_STAGE_CHANNELS.items()
}
V1_STAGE_CHANNELS: dict[int, tuple[int, int, int]] = dict(models.V1_STAGE_CHANNELS)
STAGE_HW: tuple[int, int, int] = (28, 14, 7)


@dataclass(frozen=True)
class ShuffleShape:
    """A channel_shuffle: ``[N, channels, hw, hw]`` shuffled in ``groups``."""

    label: str
    channels: int
    hw: int
    groups: int


@dataclass(frozen=True)
class ConcatShape:
    """A V2 merge: ``a`` (a channel slice of the unit input) and ``b`` (branch output), groups 2."""

    label: str
    channels_a: int
    channels_b: int
    hw: int
    groups: int = 2


@dataclass(frozen=True)
class PointwiseShape:
    """A 1x1 conv ``c_in -> c_out`` in ``groups`` with the ``shuffle_groups`` shuffle fused."""

    label: str
    c_in: int
    c_out: int
    hw: int
    groups: int
    shuffle_groups: int
    relu: bool


@dataclass(frozen=True)
class DepthwiseShape:
    """A depthwise ``kernel x kernel`` conv over ``[N, channels, hw, hw]`` with ``stride``."""

    label: str
    channels: int
    hw: int
    kernel: int
    stride: int


def _v2_widths(full: bool) -> tuple[str, ...]:
    return tuple(V2_STAGE_CHANNELS) if full else ("1.0", "2.0")


def _v1_groups() -> tuple[int, ...]:
    return (3, 8)


def shuffle_shapes(full: bool = False) -> list[ShuffleShape]:
    """V2 unit outputs (shuffle by 2) and V1 bottlenecks (shuffle by g) of every stage."""
    out = []
    for width in _v2_widths(full):
        for stage, (c, hw) in enumerate(zip(V2_STAGE_CHANNELS[width], STAGE_HW, strict=True), start=2):
            out.append(ShuffleShape(f"v2x{width}-s{stage}", c, hw, 2))
    for g in _v1_groups():
        for stage, (c, hw) in enumerate(zip(V1_STAGE_CHANNELS[g], STAGE_HW, strict=True), start=2):
            out.append(ShuffleShape(f"v1g{g}-s{stage}", c // 4, hw, g))
    return out


def concat_shapes(full: bool = False) -> list[ConcatShape]:
    """The V2 stride-1 merge: ``cat(x1, branch2(x2))`` then shuffle 2, halves of c each."""
    out = []
    for width in _v2_widths(full):
        for stage, (c, hw) in enumerate(zip(V2_STAGE_CHANNELS[width], STAGE_HW, strict=True), start=2):
            out.append(ConcatShape(f"v2x{width}-s{stage}", c // 2, c // 2, hw))
    return out


def pointwise_shapes(full: bool = False) -> list[PointwiseShape]:
    """V2 branch 1x1 convs (c/2 -> c/2, ReLU) and V1's grouped 1x1 convs (shuffle fused into the first)."""
    out = []
    for width in _v2_widths(full):
        for stage, (c, hw) in enumerate(zip(V2_STAGE_CHANNELS[width], STAGE_HW, strict=True), start=2):
            out.append(PointwiseShape(f"v2x{width}-s{stage}", c // 2, c // 2, hw, 1, 1, True))
    for g in _v1_groups():
        for stage, (c, hw) in enumerate(zip(V1_STAGE_CHANNELS[g], STAGE_HW, strict=True), start=2):
            m = c // 4
            out.append(PointwiseShape(f"v1g{g}-s{stage}-reduce", c, m, hw, g, g, True))
            out.append(PointwiseShape(f"v1g{g}-s{stage}-expand", m, c, hw, g, 1, False))
    return out


def depthwise_shapes(full: bool = False) -> list[DepthwiseShape]:
    """3x3 depthwise convs of V2 branches and V1 bottlenecks, stride 1 and the stride-2 entry."""
    out = []
    for width in _v2_widths(full):
        for stage, (c, hw) in enumerate(zip(V2_STAGE_CHANNELS[width], STAGE_HW, strict=True), start=2):
            out.append(DepthwiseShape(f"v2x{width}-s{stage}", c // 2, hw, 3, 1))
            out.append(DepthwiseShape(f"v2x{width}-s{stage}-stride2", c // 2, 2 * hw, 3, 2))
    for g in _v1_groups():
        for stage, (c, hw) in enumerate(zip(V1_STAGE_CHANNELS[g], STAGE_HW, strict=True), start=2):
            out.append(DepthwiseShape(f"v1g{g}-s{stage}", c // 4, hw, 3, 1))
            out.append(DepthwiseShape(f"v1g{g}-s{stage}-stride2", c // 4, 2 * hw, 3, 2))
    if full:
        # 5x5 and 7x7 must be correct and should be fast: one shape each.
        out.append(DepthwiseShape("v2x1.0-s3-k5", 116, 14, 5, 1))
        out.append(DepthwiseShape("v2x1.0-s3-k7", 116, 14, 7, 1))
    return out


# Quick mode: a few shapes per op that still cover V1 and V2, a small and a large map.
QUICK_LABELS: dict[str, tuple[str, ...]] = {
    "channel_shuffle": ("v2x1.0-s2", "v2x1.0-s4", "v1g3-s3"),
    "concat_shuffle": ("v2x1.0-s2", "v2x1.0-s3", "v2x2.0-s4"),
    "pointwise_conv": ("v2x1.0-s3", "v1g3-s3-reduce", "v1g8-s2-reduce"),
    "depthwise_conv2d": ("v2x1.0-s3", "v2x1.0-s3-stride2", "v1g3-s2"),
}


def shapes_for(op: str, quick: bool, full: bool) -> list:
    """The shape list of ``op`` for the chosen mode (quick: ``QUICK_LABELS``; full: every width)."""
    table = {
        "channel_shuffle": shuffle_shapes,
        "concat_shuffle": concat_shapes,
        "pointwise_conv": pointwise_shapes,
        "depthwise_conv2d": depthwise_shapes,
    }
    shapes = table[op](full)
    if quick:
        keep = QUICK_LABELS[op]
        shapes = [s for s in shapes if s.label in keep]
        shapes.sort(key=lambda s: keep.index(s.label))
    return shapes
