// The op schemas, written once: namespace `shufflenet` (csrc/ops.cpp) and the
// CUDA-on-CPU emulation build's `shufflenet_simt` (csrc/simt/module.cpp) declare
// the same ops from this list.
#pragma once

#include <torch/library.h>

namespace shufflenet {

inline void define_schemas(torch::Library& m) {
  m.def("channel_shuffle(Tensor input, int groups) -> Tensor");
  m.def(
      "pointwise_conv(Tensor input, Tensor weight, Tensor? bias, int groups, int shuffle_groups, "
      "bool relu) -> Tensor");
  // relu_output: the forward's output when it applied ReLU (the gradient is masked
  // where it is <= 0), None otherwise. Outputs not asked for by output_mask are
  // returned as empty tensors of shape [0].
  m.def(
      "pointwise_conv_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor? relu_output, "
      "int groups, int shuffle_groups, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  m.def(
      "depthwise_conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
      "int[2] dilation, bool relu) -> Tensor");
  m.def(
      "depthwise_conv2d_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor? relu_output, "
      "int[2] stride, int[2] padding, int[2] dilation, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  m.def("concat_shuffle(Tensor a, Tensor b, int groups) -> Tensor");
  // Gradient of concat_shuffle: un-shuffles grad_output and splits it at channels_a.
  m.def("concat_shuffle_backward(Tensor grad_output, int groups, int channels_a) -> (Tensor, Tensor)");
}

// Fused inference ops: whole units in one call, forward only (no derivative), so not
// part of the CUDA-on-CPU emulation build's list above.
inline void define_fused_schemas(torch::Library& m) {
  // One ShuffleNet V2 unit in eval mode with BN folded (DESIGN.md, "Fused inference op").
  m.def(
      "v2_unit(Tensor input, Tensor? proj_dw_weight, Tensor? proj_dw_bias, Tensor? proj_pw_weight, "
      "Tensor? proj_pw_bias, Tensor pw1_weight, Tensor? pw1_bias, Tensor dw_weight, Tensor? dw_bias, "
      "Tensor pw2_weight, Tensor? pw2_bias, int stride) -> Tensor");
  // The ShuffleNet stem: max_pool2d(relu(conv2d(input, weight, bias, stride 2, padding 1)),
  // 3, stride 2, padding 1), without writing the conv map; output in channels_last.
  m.def("conv3x3_relu_maxpool(Tensor input, Tensor weight, Tensor? bias) -> Tensor");
  // A stride-1 V2 unit in place on the channels `branch_channels` of `buffer`
  // (README, "v2_unit_"): the building block of zero-copy stages.
  m.def(
      "v2_unit_(Tensor(a!) buffer, Tensor branch_channels, Tensor pw1_weight, Tensor? pw1_bias, "
      "Tensor dw_weight, Tensor? dw_bias, Tensor pw2_weight, Tensor? pw2_bias) -> ()");
}

}  // namespace shufflenet
