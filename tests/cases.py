"""Layer shapes of ShuffleNet V1 (g = 1, 2, 3, 4, 8) and V2 (x0.5 to x2.0) at small
batch (224x224 input: stages 2/3/4 run at 28, 14, 7 pixels), plus odd shapes."""

from __future__ import annotations

import dataclasses

BATCH = 2
STAGE_SIZES = (28, 14, 7)
V1_STAGE_CHANNELS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960), 4: (272, 544, 1088),
                     8: (384, 768, 1536)}
V2_STAGE_CHANNELS = {0.5: (48, 96, 192), 1.0: (116, 232, 464), 1.5: (176, 352, 704), 2.0: (244, 488, 976)}
# Branch widths of ShuffleNet V2 x1.0 (half of each stage's channels).
V2_X1_BRANCH_WIDTHS = tuple(c // 2 for c in V2_STAGE_CHANNELS[1.0])


@dataclasses.dataclass(frozen=True)
class ShuffleCase:
    shape: tuple[int, ...]
    groups: int
    name: str


@dataclasses.dataclass(frozen=True)
class ConcatCase:
    shape: tuple[int, ...]  # of a
    channels_b: int
    groups: int
    name: str


@dataclasses.dataclass(frozen=True)
class PointwiseCase:
    n: int
    c_in: int
    c_out: int
    hw: int
    groups: int
    shuffle_groups: int
    name: str


@dataclasses.dataclass(frozen=True)
class DepthwiseCase:
    n: int
    c: int
    hw: int
    kernel: int
    stride: int
    padding: int
    dilation: int
    name: str


def shuffle_cases() -> list[ShuffleCase]:
    cases = []
    for g, chans in V1_STAGE_CHANNELS.items():  # V1: shuffle of the bottleneck (out/4) after the grouped conv
        if g == 1:
            continue
        for c, hw in zip(chans, STAGE_SIZES, strict=True):
            cases.append(ShuffleCase((BATCH, c // 4, hw, hw), g, f"v1g{g}-{c // 4}x{hw}"))
    for w, chans in V2_STAGE_CHANNELS.items():  # V2: shuffle of the concatenated unit output
        for c, hw in zip(chans, STAGE_SIZES, strict=True):
            cases.append(ShuffleCase((BATCH, c, hw, hw), 2, f"v2x{w}-{c}x{hw}"))
    cases += [
        ShuffleCase((2, 3, 5, 5), 3, "c-eq-groups"),
        ShuffleCase((2, 6, 1, 1), 2, "hw1"),
        ShuffleCase((0, 6, 4, 4), 3, "n0"),
        ShuffleCase((3, 30, 5, 7), 5, "c-not-pow2"),
        ShuffleCase((2, 12, 9), 4, "rank3"),
        ShuffleCase((2, 8, 3, 2, 4), 2, "rank5"),
        ShuffleCase((1, 7, 3, 3), 1, "groups1"),
    ]
    return cases


def concat_cases() -> list[ConcatCase]:
    cases = []
    for w, chans in V2_STAGE_CHANNELS.items():  # V2 units: two halves of the unit's output
        for c, hw in zip(chans, STAGE_SIZES, strict=True):
            cases.append(ConcatCase((BATCH, c // 2, hw, hw), c // 2, 2, f"v2x{w}-{c}x{hw}"))
    cases += [
        ConcatCase((2, 4, 5, 5), 8, 3, "unequal"),
        ConcatCase((2, 6, 3, 3), 6, 4, "groups4"),
        ConcatCase((2, 5, 3, 3), 7, 1, "groups1"),
        ConcatCase((2, 3, 1, 1), 3, 2, "hw1"),
        ConcatCase((0, 4, 3, 3), 4, 2, "n0"),
        ConcatCase((2, 6, 10), 6, 2, "rank3"),
    ]
    return cases


def pointwise_cases() -> list[PointwiseCase]:
    cases = []
    for g, chans in V1_STAGE_CHANNELS.items():
        prev = 24
        for stage, (c, hw) in enumerate(zip(chans, STAGE_SIZES, strict=True)):
            m = c // 4
            g_first = 1 if stage == 0 else g  # the first pointwise conv of stage 2 is not grouped
            # stride-2 unit: in -> m (shuffled), m -> out - in; stride-1 unit: c -> m, m -> c
            cases.append(PointwiseCase(BATCH, prev, m, hw * 2, g_first, g, f"v1g{g}-s{stage + 2}-in"))
            cases.append(PointwiseCase(BATCH, m, c - prev, hw, g, 1, f"v1g{g}-s{stage + 2}-out-s2"))
            cases.append(PointwiseCase(BATCH, c, m, hw, g, g, f"v1g{g}-s{stage + 2}-in-s1"))
            cases.append(PointwiseCase(BATCH, m, c, hw, g, 1, f"v1g{g}-s{stage + 2}-out-s1"))
            prev = c
    for w, chans in V2_STAGE_CHANNELS.items():
        for stage, (c, hw) in enumerate(zip(chans, STAGE_SIZES, strict=True)):
            b = c // 2
            cases.append(PointwiseCase(BATCH, b, b, hw, 1, 1, f"v2x{w}-s{stage + 2}"))
    cases += [
        PointwiseCase(2, 6, 6, 5, 3, 3, "c-eq-groups"),
        PointwiseCase(2, 8, 12, 1, 2, 2, "hw1"),
        PointwiseCase(5, 40, 24, 1, 1, 1, "hw1-ungrouped"),
        PointwiseCase(3, 32, 48, 1, 1, 4, "hw1-shuffle-only"),
        PointwiseCase(0, 8, 12, 4, 2, 2, "n0"),
        PointwiseCase(3, 10, 15, 7, 5, 3, "shuffle-ne-groups"),
        PointwiseCase(2, 12, 16, 6, 4, 8, "shuffle-gt-groups"),
        PointwiseCase(2, 12, 16, 6, 1, 4, "shuffle-only"),
    ]
    return cases


def depthwise_cases() -> list[DepthwiseCase]:
    cases = []
    for w, chans in V2_STAGE_CHANNELS.items():
        for stage, (c, hw) in enumerate(zip(chans, STAGE_SIZES, strict=True)):
            cases.append(DepthwiseCase(BATCH, c // 2, hw, 3, 1, 1, 1, f"v2x{w}-s{stage + 2}"))
            cases.append(DepthwiseCase(BATCH, c // 2, hw * 2, 3, 2, 1, 1, f"v2x{w}-s{stage + 2}-stride2"))
    for g, chans in V1_STAGE_CHANNELS.items():
        for stage, (c, hw) in enumerate(zip(chans, STAGE_SIZES, strict=True)):
            cases.append(DepthwiseCase(BATCH, c // 4, hw, 3, 1, 1, 1, f"v1g{g}-s{stage + 2}"))
    cases += [
        DepthwiseCase(2, 5, 9, 5, 1, 2, 1, "5x5"),
        DepthwiseCase(2, 5, 11, 5, 2, 2, 1, "5x5-stride2"),
        DepthwiseCase(2, 3, 13, 7, 1, 3, 1, "7x7"),
        DepthwiseCase(2, 3, 13, 7, 2, 3, 1, "7x7-stride2"),
        DepthwiseCase(2, 4, 9, 3, 1, 2, 2, "dilation2"),
        DepthwiseCase(2, 4, 8, 3, 1, 0, 1, "no-padding"),
        DepthwiseCase(2, 4, 1, 3, 1, 1, 1, "hw1"),
        DepthwiseCase(0, 4, 6, 3, 1, 1, 1, "n0"),
        DepthwiseCase(2, 1, 6, 3, 2, 1, 1, "c1"),
        DepthwiseCase(1, 7, 10, 1, 1, 0, 1, "1x1"),
        DepthwiseCase(2, 6, 7, 3, 3, 1, 1, "stride3"),
    ]
    return cases


def by_name(cases: list) -> dict:
    return {c.name: c for c in cases}
