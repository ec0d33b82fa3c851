// Index math shared by the CPU and CUDA kernels (C10_HOST_DEVICE), so the CPU
// tests exercise exactly the arithmetic the GPU kernels run. 64-bit unless a
// helper says otherwise.
#pragma once

#include <c10/macros/Macros.h>
#include <cstdint>

namespace shufflenet {

// channel_shuffle with `groups` over `channels`: output channel o = i*groups + g
// holds input channel g*(channels/groups) + i.
C10_HOST_DEVICE inline int64_t shuffle_source_channel(int64_t out_channel, int64_t channels, int64_t groups) {
  const int64_t per_group = channels / groups;
  return (out_channel % groups) * per_group + out_channel / groups;
}

// Inverse of shuffle_source_channel: where input channel c lands in the output.
C10_HOST_DEVICE inline int64_t shuffle_dest_channel(int64_t in_channel, int64_t channels, int64_t groups) {
  const int64_t per_group = channels / groups;
  return (in_channel % per_group) * groups + in_channel / per_group;
}

// concat_shuffle(a, b, groups): which operand (0 = a, 1 = b) and which of its
// channels output channel o reads. channels = channels_a + channels_b.
struct ChannelSource {
  int64_t operand;
  int64_t channel;
};

C10_HOST_DEVICE inline ChannelSource concat_shuffle_source(
    int64_t out_channel, int64_t channels_a, int64_t channels, int64_t groups) {
  const int64_t c = shuffle_source_channel(out_channel, channels, groups);
  return c < channels_a ? ChannelSource{0, c} : ChannelSource{1, c - channels_a};
}

// Output extent of a convolution along one dimension.
C10_HOST_DEVICE inline int64_t conv_output_size(
    int64_t in, int64_t kernel, int64_t stride, int64_t padding, int64_t dilation) {
  return (in + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1;
}

// Input coordinate read by output coordinate `out` at kernel tap `k`
// (may be out of range: the caller checks against [0, in)).
C10_HOST_DEVICE inline int64_t conv_input_index(
    int64_t out, int64_t k, int64_t stride, int64_t padding, int64_t dilation) {
  return out * stride - padding + k * dilation;
}

// Transposed view used by the input gradient: the output coordinate that reads
// input coordinate `in` through tap `k`, or -1 when no output does (not on the
// stride grid, or outside [0, out_size)). In the index type of the caller: the
// CUDA kernels' 32-bit instantiations divide in 32 bits (several times cheaper
// than a 64-bit division on the GPU).
template <typename index_t>
C10_HOST_DEVICE inline index_t conv_output_index_for_input(
    index_t in, index_t k, index_t stride, index_t padding, index_t dilation, index_t out_size) {
  const index_t num = in + padding - k * dilation;
  if (num < 0 || num % stride != 0) return -1;
  const index_t out = num / stride;
  return out < out_size ? out : -1;
}

// Range [begin, end) of output coordinates whose kernel tap `k` reads inside
// [0, in): the loops over a row need no bounds checks inside it.
C10_HOST_DEVICE inline int64_t conv_tap_output_begin(int64_t k, int64_t stride, int64_t padding, int64_t dilation) {
  const int64_t num = padding - k * dilation;  // need out*stride >= num
  return num <= 0 ? 0 : (num + stride - 1) / stride;
}
C10_HOST_DEVICE inline int64_t conv_tap_output_end(
    int64_t in, int64_t k, int64_t stride, int64_t padding, int64_t dilation, int64_t out_size) {
  const int64_t num = in - 1 + padding - k * dilation;  // need out*stride <= num
  if (num < 0) return 0;
  const int64_t end = num / stride + 1;
  return end < out_size ? end : out_size;
}

// Range of output coordinates whose whole window lies inside the input (the
// interior, where every tap is in range).
C10_HOST_DEVICE inline int64_t conv_interior_begin(int64_t stride, int64_t padding) {
  return conv_tap_output_begin(0, stride, padding, 1);
}
C10_HOST_DEVICE inline int64_t conv_interior_end(
    int64_t in, int64_t kernel, int64_t stride, int64_t padding, int64_t dilation, int64_t out_size) {
  return conv_tap_output_end(in, kernel - 1, stride, padding, dilation, out_size);
}

// Epilogue: optional ReLU after the bias add.
template <typename T>
C10_HOST_DEVICE inline T relu_if(T v, bool relu) {
  return (relu && v < T(0)) ? T(0) : v;
}

}  // namespace shufflenet
