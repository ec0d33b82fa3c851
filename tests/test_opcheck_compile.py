"""torch.library.opcheck for every op (schema, fake kernel strides, autograd
registration, AOT dispatch) on contiguous, channels_last and permuted inputs, and
torch.compile(fullgraph=True) of a model built from the ops."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shufflenet_kernels.functional as SF
from shufflenet_kernels import reference
from tests.helpers import ALL_IMPLS, make_input

OPCHECK_LAYOUTS = ["nchw", "channels_last", "strided", "slice_cl"]


def _x(shape, layout, impl, grad=True):
    x = make_input(shape, layout, torch.float32, impl.device)
    return x.detach().requires_grad_(grad) if layout != "slice_cl" else x.requires_grad_(False)


@pytest.mark.parametrize("impl", ALL_IMPLS)
@pytest.mark.parametrize("layout", OPCHECK_LAYOUTS)
def test_opcheck_channel_shuffle(impl, layout):
    torch.library.opcheck(impl.ops.channel_shuffle.default, (_x((2, 6, 3, 4), layout, impl), 3))


@pytest.mark.parametrize("impl", ALL_IMPLS)
@pytest.mark.parametrize("layout", OPCHECK_LAYOUTS)
def test_opcheck_concat_shuffle(impl, layout):
    a = _x((2, 4, 3, 4), layout, impl)
    b = _x((2, 2, 3, 4), layout, impl)
    torch.library.opcheck(impl.ops.concat_shuffle.default, (a, b, 3))


@pytest.mark.parametrize("impl", ALL_IMPLS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_opcheck_concat_shuffle_backward(impl, layout):
    go = make_input((2, 6, 3, 4), layout, torch.float32, impl.device)
    torch.library.opcheck(impl.ops.concat_shuffle_backward.default, (go, 3, 4))


@pytest.mark.parametrize("impl", ALL_IMPLS)
@pytest.mark.parametrize("layout", OPCHECK_LAYOUTS)
@pytest.mark.parametrize("relu", [False, True])
def test_opcheck_pointwise_conv(impl, layout, relu):
    x = _x((2, 4, 3, 5), layout, impl)
    w = torch.randn(6, 2, 1, 1, device=impl.device, requires_grad=True)
    b = torch.randn(6, device=impl.device, requires_grad=True)
    torch.library.opcheck(impl.ops.pointwise_conv.default, (x, w, b, 2, 3, relu))


@pytest.mark.parametrize("impl", ALL_IMPLS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("mask", [[True, True, True], [True, False, False], [False, True, True]])
def test_opcheck_pointwise_conv_backward(impl, layout, mask):
    x = make_input((2, 4, 3, 5), layout, torch.float32, impl.device)
    w = torch.randn(6, 2, 1, 1, device=impl.device)
    go = make_input((2, 6, 3, 5), layout, torch.float32, impl.device)
    relu_out = torch.relu(torch.randn_like(go))
    torch.library.opcheck(impl.ops.pointwise_conv_backward.default, (go, x, w, relu_out, 2, 3, mask))


@pytest.mark.parametrize("impl", ALL_IMPLS)
@pytest.mark.parametrize("layout", OPCHECK_LAYOUTS)
@pytest.mark.parametrize("relu", [False, True])
def test_opcheck_depthwise_conv2d(impl, layout, relu):
    x = _x((2, 3, 7, 6), layout, impl)
    w = torch.randn(3, 1, 3, 3, device=impl.device, requires_grad=True)
    b = torch.randn(3, device=impl.device, requires_grad=True)
    torch.library.opcheck(impl.ops.depthwise_conv2d.default, (x, w, b, [2, 2], [1, 1], [1, 1], relu))


@pytest.mark.parametrize("impl", ALL_IMPLS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("mask", [[True, True, True], [False, True, False]])
def test_opcheck_depthwise_conv2d_backward(impl, layout, mask):
    x = make_input((2, 3, 7, 6), layout, torch.float32, impl.device)
    w = torch.randn(3, 1, 3, 3, device=impl.device)
    go = make_input((2, 3, 4, 3), layout, torch.float32, impl.device)
    args = (go, x, w, None, [2, 2], [1, 1], [1, 1], mask)
    torch.library.opcheck(impl.ops.depthwise_conv2d_backward.default, args)


class _TinyV2Block(nn.Module):
    """A V2 stride-1 unit written with the functional API (no BN, so compile is quick)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.pw1 = nn.Parameter(torch.randn(half, half, 1, 1) / half**0.5)
        self.dw = nn.Parameter(torch.randn(half, 1, 3, 3) / 3)
        self.dw_bias = nn.Parameter(torch.randn(half))
        self.pw2 = nn.Parameter(torch.randn(half, half // 2, 1, 1) / half**0.5)

    def forward(self, x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        y = SF.pointwise_conv(x2, self.pw1, relu=True, backend=backend)
        y = SF.depthwise_conv2d(y, self.dw, self.dw_bias, stride=1, padding=1, backend=backend)
        y = SF.pointwise_conv(y, self.pw2, groups=2, shuffle_groups=2, relu=True, backend=backend)
        y = SF.channel_shuffle(y, 2, backend=backend)
        return SF.concat_shuffle(x1, y, 2, backend=backend)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        y = reference.pointwise_conv(x2, self.pw1, None, 1, 1, True)
        y = reference.depthwise_conv2d(y, self.dw, self.dw_bias, (1, 1), (1, 1), (1, 1), False)
        y = reference.pointwise_conv(y, self.pw2, None, 2, 2, True)
        y = reference.channel_shuffle(y, 2)
        return reference.concat_shuffle(x1, y, 2)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_compile_fullgraph_forward_and_backward(memory_format):
    torch._dynamo.reset()
    block = _TinyV2Block(16)
    x = torch.randn(2, 16, 8, 8).to(memory_format=memory_format).requires_grad_(True)
    compiled = torch.compile(block, fullgraph=True)
    out = compiled(x)
    ref = block.reference(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, *block.parameters()], g)
    ref_grads = torch.autograd.grad(ref, [x, *block.parameters()], g)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
