// oneDNN route of the CPU 1x1 convolution (pointwise_conv), reached through
// ATen's mkldnn operators, and the switch that picks between it and the GEMM
// route.
#pragma once

#include <ATen/core/Tensor.h>

namespace shufflenet::cpu {

// Which route pointwise_conv takes on CPU. kAuto picks per case (see
// pointwise_conv.cpp); SHUFFLENET_CPU_POINTWISE=gemm, =onednn or =tile in the
// environment forces one (read on each call, for benchmarks and tests; tile
// applies to channels_last float32, float16 and bfloat16 only).
enum class PointwiseRoute { kAuto, kGemm, kOneDnn, kTile };
PointwiseRoute requested_pointwise_route();

// Whether oneDNN's convolution runs `dtype` here: built in, enabled
// (torch.backends.mkldnn), a first tiny call in that dtype succeeded (bfloat16
// needs AVX-512, float16 AVX512-FP16 or AVX-NE-CONVERT; float64 never runs) and
// no call has failed since.
bool onednn_conv_usable(at::ScalarType dtype);

// act(conv2d(x, w, b, groups=groups)) for a 1x1 weight through oneDNN, bias and
// ReLU fused into the convolution (accumulated in float32, rounded once); for
// NCHW input ATen's convolution (oneDNN's in half types, bias fused) and an
// in-place ReLU.
// Output is dense in x's suggested memory format. Returns an undefined tensor
// when oneDNN rejects the call (the dtype is then marked unusable).
at::Tensor onednn_conv1x1(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t groups, bool relu);

}  // namespace shufflenet::cpu
