"""The in-place stride-1 V2 unit (``v2_unit_``) on CPU and zero-copy stages
(``accelerate(zero_copy=True)``): the op against the reference for every V2 width's
branch width, layouts, dtypes, odd shapes, banded (halo) runs and bad input; the
permutation bookkeeping on whole torchvision models."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

import shufflenet_kernels as sk
import shufflenet_kernels.functional as SF
from shufflenet_kernels import reference
from shufflenet_kernels.nn.zero_copy import ZeroCopyConv, ZeroCopyStage, stage_permutations
from tests.helpers import weight_like
from tests.test_units import TOL, randomize
from tests.test_v2_unit import assert_unit_close, unit_args

pytestmark = pytest.mark.skipif(not sk.NATIVE_AVAILABLE, reason="the native ops are not built")

OP = torch.ops.shufflenet.v2_unit_.default

# Branch widths (half a stage's channels, and the stages' channels themselves) of the
# V2 widths 0.5x, 1.0x and 2.0x.
BRANCH_WIDTHS = (24, 58, 116, 232, 48, 96, 192, 122, 244, 488)


def inplace_args(branch: int, dtype: torch.dtype = torch.float32, *, bias: bool = True, mid: int | None = None) -> list:
    """pw1, pw1_bias, dw, dw_bias, pw2, pw2_bias for a branch of ``branch`` channels."""
    mid = branch if mid is None else mid

    def b(n: int) -> Tensor | None:
        return (torch.randn(n) * 0.1).to(dtype) if bias else None

    return [weight_like((mid, branch, 1, 1), dtype, "cpu", branch), b(mid),
            weight_like((mid, 1, 3, 3), dtype, "cpu", 9), b(mid),
            weight_like((branch, mid, 1, 1), dtype, "cpu", mid), b(branch)]


def random_table(channels: int, branch: int, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(channels, generator=g)[:branch]


def buffer(shape: tuple[int, ...], layout: str, dtype: torch.dtype = torch.float32) -> Tensor:
    x = torch.randn(shape).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def check_against_reference(x: Tensor, table: Tensor, args: list, rel: float) -> None:
    """Runs the op on ``x`` in place and compares with the float64 reference; the channels
    outside ``table`` must be untouched (bit for bit)."""
    ref = reference.v2_unit_(x.double(), table, *[a.double() if a is not None else None for a in args])
    before = x.clone()
    strides, ptr = x.stride(), x.data_ptr()
    OP(x, table, *args)
    assert x.stride() == strides and x.data_ptr() == ptr
    others = torch.ones(x.shape[1], dtype=torch.bool)
    others[table] = False
    assert torch.equal(x[:, others], before[:, others])
    if x.numel() > 0:
        assert_unit_close(x, ref, rel)


@pytest.mark.parametrize("branch", BRANCH_WIDTHS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_branch_widths_match_reference(branch: int, layout: str) -> None:
    """Every V2 branch width, odd H and W, the kept half a random half of the channels."""
    x = buffer((2, 2 * branch, 7, 5), layout)
    check_against_reference(x, random_table(2 * branch, branch), inplace_args(branch), 1e-4)


@pytest.mark.parametrize("units", [1, 3, 7])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_stage_tables(units: int, layout: str) -> None:
    """The tables a stage of ``units`` units uses (sorted, runs of channels), unit after unit."""
    channels = 116
    tables, _ = stage_permutations(channels, units)
    x = buffer((1, channels, 9, 9), layout)
    for t in tables:
        check_against_reference(x, t.sort().values, inplace_args(channels // 2), 1e-4)


@pytest.mark.parametrize("threads", [1, 3, 8])
@pytest.mark.parametrize("shape", [(1, 24, 13, 6), (2, 24, 5, 33), (1, 24, 2, 3)], ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_bands_read_their_halo_before_neighbours_write(threads: int, shape: tuple, layout: str) -> None:
    """Several bands per image (more threads than images): each band's pw1 input rows
    just outside it must be read before the neighbouring band overwrites them."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = buffer(shape, layout)
        check_against_reference(x, random_table(shape[1], 12, seed=1), inplace_args(12, mid=20), 1e-4)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("shape", [(1, 32, 40, 5), (3, 32, 17, 4)], ids=str)
def test_bands_repeatedly(shape: tuple) -> None:
    """Many bands on many threads, run again and again: a band that wrote rows its
    neighbour had still to read would show as a mismatch in some run."""
    old = torch.get_num_threads()
    torch.set_num_threads(8)
    try:
        args = inplace_args(16)
        table = random_table(shape[1], 16, seed=2)
        for _ in range(10):
            check_against_reference(buffer(shape, "channels_last"), table, args, 1e-4)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("shape", [(2, 24, 1, 1), (1, 24, 1, 7), (3, 24, 6, 1), (0, 24, 4, 4)], ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_odd_shapes(shape: tuple, layout: str) -> None:
    x = buffer(shape, layout)
    check_against_reference(x, random_table(24, 12), inplace_args(12), 1e-4)


@pytest.mark.parametrize("dtype,rel", [(torch.float16, 1e-2), (torch.bfloat16, 3e-2), (torch.float64, 1e-10)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_dtypes(dtype: torch.dtype, rel: float, layout: str) -> None:
    x = buffer((2, 58, 6, 7), layout, dtype)
    check_against_reference(x, random_table(58, 29), inplace_args(29, dtype), rel)


def test_no_bias_other_widths_and_a_strided_buffer() -> None:
    """No biases, C_mid != B, B != C/2, a buffer that is neither NCHW nor channels_last."""
    x = torch.randn(2, 7, 40, 6).permute(0, 2, 3, 1)  # [2, 40, 6, 7], H stride 1
    check_against_reference(x, random_table(40, 17), inplace_args(17, bias=False, mid=33), 1e-4)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_equals_v2_unit_stride1_up_to_the_permutation(layout: str) -> None:
    """v2_unit (stride 1) = v2_unit_ on the second half, then out[2i] = x[i], out[2i+1] = x[C/2 + i]."""
    c = 116
    x = buffer((2, c, 8, 9), layout)
    args = unit_args(c, c, 1)
    expected = torch.ops.shufflenet.v2_unit(x, *args)
    tables, perm = stage_permutations(c, 1)
    buf = x.clone()
    SF.v2_unit_(buf, tables[0], *args[4:10])
    torch.testing.assert_close(buf[:, perm], expected, rtol=1e-5, atol=1e-5)


def test_bad_input() -> None:
    x = torch.randn(1, 8, 4, 4)
    args = inplace_args(4)
    with pytest.raises(RuntimeError, match="distinct"):
        OP(x, torch.tensor([0, 1, 1, 2]), *args)
    with pytest.raises(RuntimeError, match=r"branch_channels\[3\] = 8"):
        OP(x, torch.tensor([0, 1, 2, 8]), *args)
    with pytest.raises(RuntimeError, match="int64"):
        OP(x, torch.tensor([0, 1, 2, 3], dtype=torch.int32), *args)
    with pytest.raises(RuntimeError, match="pw1_weight must have shape"):
        OP(x, torch.tensor([0, 1, 2]), *args)
    with pytest.raises(RuntimeError, match="overlapping"):
        OP(torch.randn(1, 1, 4, 4).expand(1, 8, 4, 4), torch.tensor([0, 1, 2, 3]), *args)
    with pytest.raises(RuntimeError, match="buffer must be 4-D"):
        OP(torch.randn(8, 4, 4), torch.tensor([0, 1, 2, 3]), *args)
    w = args[0].clone().requires_grad_()
    with pytest.raises(RuntimeError, match="inference-only"):
        OP(x, torch.tensor([0, 1, 2, 3]), w, *args[1:])
    with torch.no_grad():
        OP(x, torch.tensor([0, 1, 2, 3]), w, *args[1:])


def test_bumps_the_version_counter() -> None:
    x = torch.randn(1, 8, 4, 4)
    v = x._version
    OP(x, torch.tensor([4, 5, 6, 7]), *inplace_args(4))
    assert x._version > v


def test_opcheck() -> None:
    x = buffer((2, 16, 5, 3), "channels_last")
    torch.library.opcheck(OP, (x, torch.tensor([9, 2, 15, 4, 11, 0, 7, 12]), *inplace_args(8)))


# ---- zero-copy stages on whole models ---------------------------------------------------


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.names.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def _torchvision_model(name: str) -> torch.nn.Module:
    """A torchvision ShuffleNetV2 in eval mode with random BN statistics."""
    tv = pytest.importorskip("torchvision")
    return randomize(getattr(tv.models, name)(num_classes=10)).eval()


@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_torchvision_zero_copy_matches(name: str, layout: str) -> None:
    """Eval, no grad: every stride-1 unit in place, the permutations folded into the next
    stage and conv5; torchvision's output within 1e-4, in both layouts."""
    model = _torchvision_model(name)
    fast = sk.accelerate(model, zero_copy=True, channels_last=layout == "channels_last")
    assert [type(fast.get_submodule(s)) for s in ("stage2", "stage3", "stage4", "conv5")] == [ZeroCopyStage] * 3 + [
        ZeroCopyConv]
    assert list(fast.state_dict()) == list(model.state_dict())
    x = torch.randn(2, 3, 64, 48)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = model(x)
        with _CountOps() as ops:
            out = fast(x)
    torch.testing.assert_close(out, expected, **TOL)
    assert ops.names.count("shufflenet.v2_unit_") == 13  # 3 + 7 + 3 stride-1 units
    assert ops.names.count("shufflenet.v2_unit") == 3
    assert "aten.index_select" not in ops.names  # every permutation folded, none undone
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), expected, **TOL)


def test_zero_copy_follows_parameter_changes_and_other_modes() -> None:
    """Changed BN statistics refold (stage, next stage's first unit, conv5); grad mode and
    training mode run the units one by one and still agree with torchvision."""
    model = _torchvision_model("shufflenet_v2_x0_5")
    fast = sk.accelerate(model, zero_copy=True, inplace=False)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        fast(x)
        for m in (fast.stage3[0].branch1[1], fast.stage3[2].branch2[1], fast.conv5[1]):
            m.running_mean.add_(0.3)
        for m in (model.stage3[0].branch1[1], model.stage3[2].branch2[1], model.conv5[1]):
            m.running_mean.add_(0.3)
        torch.testing.assert_close(fast(x), model(x), **TOL)
    with _CountOps() as ops:
        torch.testing.assert_close(fast(x), model(x), **TOL)  # grad on: no in-place units
    assert "shufflenet.v2_unit_" not in ops.names
    model.train()
    fast.train()
    torch.testing.assert_close(fast(x), model(x), **TOL)


def test_stage_output_alone_is_permuted_and_undone_for_other_consumers() -> None:
    """A stage's in-place output is in its out_perm order; fed to a consumer that is not
    its own (here: the next stage in training mode) it is put back in order."""
    model = _torchvision_model("shufflenet_v2_x0_5")
    fast = sk.accelerate(model, zero_copy=True, channels_last=False)
    x = torch.randn(1, 24, 16, 16)
    with torch.no_grad():
        y = fast.stage2(x)
        expected = model.stage2(x)
        torch.testing.assert_close(y[:, fast.stage2.out_perm], expected, **TOL)
        fast.stage3.train()
        model.stage3.train()
        torch.testing.assert_close(fast.stage3(y), model.stage3(expected), **TOL)


def test_zero_copy_is_off_by_default_and_ignored_for_other_models() -> None:
    model = _torchvision_model("shufflenet_v2_x0_5")
    fast = sk.accelerate(model)
    assert not any(isinstance(m, (ZeroCopyStage, ZeroCopyConv)) for m in fast.modules())
    unit = sk.accelerate(model.stage2[1], zero_copy=True)
    assert not isinstance(unit, ZeroCopyStage)
