// Register-tiled route of the CPU 1x1 convolution (pointwise_conv) over
// channels_last pixel rows: every group's GEMM, bias, ReLU and the channel shuffle
// in one pass per tile of pixels (pointwise_tile.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace shufflenet::cpu {

// Whether the tile route computes `dtype` (float32, float16, bfloat16).
bool pointwise_tiles_dtype(at::ScalarType dtype);

// out_rows = channel_shuffle(act(conv1x1(x_rows, weight, bias, groups)), shuffle_groups)
// over pixel rows: x_rows [P, C_in] with channels 1 apart (any pixel stride), out_rows
// dense [P, C_out], weight [C_out, C_in/groups, 1, 1], bias [C_out] or undefined; all
// in one dtype. Accumulates in float32 and rounds once.
void pointwise_tiles_forward(const at::Tensor& x_rows, const at::Tensor& weight, const at::Tensor& bias,
                             int64_t groups, int64_t shuffle_groups, bool relu, at::Tensor& out_rows);

}  // namespace shufflenet::cpu
