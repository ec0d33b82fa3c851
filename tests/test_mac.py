"""MAC / FLOP formulas of ``shufflenet_kernels.mac`` against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from shufflenet_kernels import mac


def test_dtype_size() -> None:
    assert mac.dtype_size(torch.float32) == 4
    assert mac.dtype_size(torch.float16) == 2
    assert mac.dtype_size(torch.bfloat16) == 2
    assert mac.dtype_size(torch.float64) == 8


def test_channel_shuffle() -> None:
    # [2, 6, 3, 5] = 180 elements, read once and written once, fp16.
    cost = mac.channel_shuffle_cost((2, 6, 3, 5), 2)
    assert cost == mac.Cost(mac_bytes=720, flops=0)
    assert mac.channel_shuffle_backward_cost((2, 6, 3, 5), 2) == cost
    # Rank 3 and 5 tensors too.
    assert mac.channel_shuffle_cost((1, 4, 7), 4).mac_bytes == 2 * 28 * 4
    assert mac.channel_shuffle_cost((1, 4, 2, 2, 2), 4).mac_bytes == 2 * 32 * 4


def test_concat_shuffle() -> None:
    # a [1, 3, 2, 2] (12) + b [1, 5, 2, 2] (20) -> out [1, 8, 2, 2] (32): 64 elements moved.
    cost = mac.concat_shuffle_cost((1, 3, 2, 2), (1, 5, 2, 2), 4)
    assert cost == mac.Cost(mac_bytes=256, flops=0)
    back = mac.concat_shuffle_backward_cost((1, 8, 2, 2), 3, 4)
    assert back == mac.Cost(mac_bytes=256, flops=0)
    with pytest.raises(ValueError, match="channels_a"):
        mac.concat_shuffle_backward_cost((1, 8, 2, 2), 9, 4)


def test_pointwise_conv_forward() -> None:
    # N=2, C_in=6, 4x5 map, C_out=9, groups=3, bias, fp32.
    # input 2*6*20 = 240, weight 9*2 = 18, bias 9, output 2*9*20 = 360 -> 627 elements.
    # FLOPs: N*H*W * C_in*C_out/g = 40 * 18 = 720.
    cost = mac.pointwise_conv_cost((2, 6, 4, 5), 9, 3, 4, bias=True, relu=True, shuffle_groups=3)
    assert cost == mac.Cost(mac_bytes=627 * 4, flops=720)
    # No bias: 9 elements fewer; the fused ReLU/shuffle never change the count.
    assert mac.pointwise_conv_cost((2, 6, 4, 5), 9, 3, 4).mac_bytes == 618 * 4
    with pytest.raises(ValueError, match="groups"):
        mac.pointwise_conv_cost((2, 6, 4, 5), 9, 4, 4)
    with pytest.raises(ValueError, match="shuffle_groups"):
        mac.pointwise_conv_cost((2, 6, 4, 5), 9, 3, 4, shuffle_groups=2)
    with pytest.raises(ValueError, match="4-D"):
        mac.pointwise_conv_cost((6, 4, 5), 9, 3, 4)


def test_pointwise_conv_backward() -> None:
    shape, c_out, g = (2, 6, 4, 5), 9, 3
    # grad_output 360; relu_output 360; grad_input: weight 18 read + 240 written;
    # grad_weight: input 240 read + 18 written; grad_bias 9 written.
    full = mac.pointwise_conv_backward_cost(shape, c_out, g, 2, relu=True, output_mask=(True, True, True))
    assert full == mac.Cost(mac_bytes=(360 + 360 + 258 + 258 + 9) * 2, flops=2 * 720)
    only_input = mac.pointwise_conv_backward_cost(shape, c_out, g, 2, output_mask=(True, False, False))
    assert only_input == mac.Cost(mac_bytes=(360 + 18 + 240) * 2, flops=720)
    only_bias = mac.pointwise_conv_backward_cost(shape, c_out, g, 2, output_mask=(False, False, True))
    assert only_bias == mac.Cost(mac_bytes=(360 + 9) * 2, flops=0)
    nothing = mac.pointwise_conv_backward_cost(shape, c_out, g, 2, output_mask=(False, False, False))
    assert nothing == mac.Cost(0, 0)


def test_depthwise_conv2d_forward() -> None:
    # N=1, C=4, 8x8, 3x3 stride 2 padding 1 -> 4x4 output.
    # input 256, weight 36, bias 4, output 64 -> 360 elements; FLOPs 64*9 = 576.
    cost = mac.depthwise_conv2d_cost((1, 4, 8, 8), (3, 3), 4, stride=(2, 2), padding=(1, 1), bias=True)
    assert cost == mac.Cost(mac_bytes=360 * 4, flops=576)
    # 5x5, stride 1, no padding, dilation 1: 8x8 -> 4x4; 256 + 100 + 64 = 420; FLOPs 64*25.
    cost5 = mac.depthwise_conv2d_cost((1, 4, 8, 8), (5, 5), 2)
    assert cost5 == mac.Cost(mac_bytes=420 * 2, flops=1600)
    # Dilation 2 with 3x3: effective 5x5 -> 4x4 again.
    assert mac.conv_output_hw(8, 8, (3, 3), (1, 1), (0, 0), (2, 2)) == (4, 4)


def test_depthwise_conv2d_backward() -> None:
    # Same as above (3x3 s2 p1, 8x8 -> 4x4, C=4): grad_output 64, relu_output 64,
    # grad_input: weight 36 + 256, grad_weight: input 256 + 36, grad_bias 4.
    cost = mac.depthwise_conv2d_backward_cost(
        (1, 4, 8, 8), (3, 3), 4, stride=(2, 2), padding=(1, 1), relu=True, output_mask=(True, True, True)
    )
    assert cost == mac.Cost(mac_bytes=(64 + 64 + 292 + 292 + 4) * 4, flops=2 * 576)
    only_weight = mac.depthwise_conv2d_backward_cost(
        (1, 4, 8, 8), (3, 3), 4, stride=(2, 2), padding=(1, 1), output_mask=(False, True, False)
    )
    assert only_weight == mac.Cost(mac_bytes=(64 + 292) * 4, flops=576)


def test_copy_cost() -> None:
    assert mac.copy_cost(1000) == mac.Cost(2000, 0)


def test_paper_forms() -> None:
    # 56x56, c1 = c2 = 128, g = 1: B = 3136*16384, MAC = 3136*256 + 16384.
    assert mac.conv1x1_flops(56, 56, 128, 128) == 3136 * 16384
    assert mac.conv1x1_mac(56, 56, 128, 128) == 3136 * 256 + 16384
    # Groups divide the weight term and the FLOPs only.
    assert mac.conv1x1_mac(56, 56, 128, 128, 4) == 3136 * 256 + 4096
    assert mac.conv1x1_flops(56, 56, 128, 128, 4) == 3136 * 4096


@pytest.mark.parametrize("c1,c2", [(128, 128), (90, 180), (52, 312), (36, 432)])
def test_g1_lower_bound(c1: int, c2: int) -> None:
    # The bound holds for every ratio of Table 1 and is tight at c1 = c2.
    b = mac.conv1x1_flops(56, 56, c1, c2)
    bound = mac.conv1x1_mac_lower_bound(56, 56, b)
    assert mac.conv1x1_mac(56, 56, c1, c2) >= bound - 1e-6
    if c1 == c2:
        assert math.isclose(mac.conv1x1_mac(56, 56, c1, c2), bound, rel_tol=1e-12)
    else:
        assert mac.conv1x1_mac(56, 56, c1, c2) > bound * 1.001


def test_g2_mac_grows_with_groups() -> None:
    # c1 = 128 fixed, B fixed: c2 = B*g/(h*w*c1); the closed form equals the general one.
    h = w = 56
    c1 = 128
    b = mac.conv1x1_flops(h, w, c1, 128)
    previous = 0.0
    for g in (1, 2, 4, 8):
        c2 = b * g / (h * w * c1)
        closed = mac.conv1x1_mac_groups(h, w, c1, b, g)
        # With c2 = B*g/(hw*c1): hw*(c1 + c2) + c1*c2/g = hw*c1 + B*g/c1 + B/(hw).
        assert math.isclose(closed, mac.conv1x1_mac(h, w, c1, c2, g), rel_tol=1e-12)
        assert closed > previous
        previous = closed


def test_arithmetic_intensity_and_sum() -> None:
    a = mac.Cost(100, 50)
    assert (a + mac.Cost(100, 0)) == mac.Cost(200, 50)
    assert a.arithmetic_intensity == 0.5
    assert mac.Cost(0, 0).arithmetic_intensity == 0.0


def test_v2_unit_stride1() -> None:
    # N=2, [2, 8, 5, 5] -> [2, 8, 5, 5], B = 4: input 400 read, output 400 written once;
    # weights 1x1 4*4 + dw 9*4 + 1x1 4*4 = 68, biases 4 + 4 + 4 = 12.
    # FLOPs: 2 * (25*4*4 + 25*(9*4 + 4*4)) = 2 * (400 + 1300) = 3400.
    cost = mac.v2_unit_cost((2, 8, 5, 5), 8, 1, 4)
    assert cost == mac.Cost(mac_bytes=(400 + 400 + 68 + 12) * 4, flops=3400)
    assert mac.v2_unit_cost((2, 8, 5, 5), 8, 1, 2, bias=False).mac_bytes == (400 + 400 + 68) * 2
    # The fused op moves less than the per-op path, which also writes and re-reads
    # the branch's three intermediate maps and copies the kept half through concat_shuffle.
    per_op = (
        mac.pointwise_conv_cost((2, 4, 5, 5), 4, 1, 4, bias=True)
        + mac.depthwise_conv2d_cost((2, 4, 5, 5), (3, 3), 4, padding=(1, 1), bias=True)
        + mac.pointwise_conv_cost((2, 4, 5, 5), 4, 1, 4, bias=True)
        + mac.concat_shuffle_cost((2, 4, 5, 5), (2, 4, 5, 5), 4)
    )
    assert per_op.flops == cost.flops
    assert per_op.mac_bytes - cost.mac_bytes == 3 * 2 * 200 * 4  # 3 maps of 200 written + read


def test_v2_unit_stride2() -> None:
    # [1, 6, 7, 7] -> [1, 10, 4, 4], B = 5, mid 3: input 294, output 160;
    # weights: 1x1 3*6 + dw 9*3 + 1x1 5*3 + proj dw 9*6 + proj 1x1 5*6 = 144; biases 3+3+5+6+5 = 22.
    # FLOPs: 49*6*3 + 16*(27 + 15) + 16*(54 + 30) = 882 + 672 + 1344 = 2898.
    cost = mac.v2_unit_cost((1, 6, 7, 7), 10, 2, 4, mid_channels=3)
    assert cost == mac.Cost(mac_bytes=(294 + 160 + 144 + 22) * 4, flops=2898)
    with pytest.raises(ValueError, match="stride"):
        mac.v2_unit_cost((1, 6, 7, 7), 10, 3, 4)
    with pytest.raises(ValueError, match="must equal"):
        mac.v2_unit_cost((1, 6, 7, 7), 10, 1, 4)


def test_conv3x3_relu_maxpool() -> None:
    # [2, 3, 224, 224] -> conv map [2, 24, 112, 112] (never stored) -> pooled [2, 24, 56, 56].
    # MAC: input 301056 + output 150528 + weight 648 + bias 24; FLOPs 2*112*112*24*27.
    cost = mac.conv3x3_relu_maxpool_cost((2, 3, 224, 224), 24, 4)
    assert cost == mac.Cost(mac_bytes=(301056 + 150528 + 648 + 24) * 4, flops=2 * 112 * 112 * 24 * 27)
    # Odd sizes round up: 7 -> 4 -> 2; 1 -> 1 -> 1.
    assert mac.conv3x3_relu_maxpool_cost((1, 1, 7, 7), 2, 2, bias=False).mac_bytes == (49 + 2 * 4 + 18) * 2
    assert mac.conv3x3_relu_maxpool_cost((1, 1, 1, 1), 2, 4).flops == 18
    with pytest.raises(ValueError, match="out_channels"):
        mac.conv3x3_relu_maxpool_cost((1, 3, 8, 8), 0, 4)
