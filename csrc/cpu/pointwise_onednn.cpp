// oneDNN route of the CPU 1x1 convolution.
//
// oneDNN is not linked into the extension directly (libtorch_cpu does not export
// its symbols); ATen's mkldnn::_convolution_pointwise operator, found once in the
// dispatcher, runs a oneDNN convolution with bias and an eltwise ReLU post-op.
#include "cpu/pointwise_onednn.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string_view>

namespace shufflenet::cpu {
namespace {

using ConvPointwiseFn = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                   c10::IntArrayRef, c10::IntArrayRef, c10::IntArrayRef, int64_t, c10::string_view,
                                   c10::List<std::optional<at::Scalar>>, std::optional<c10::string_view>);

// Per dtype: oneDNN has not rejected it yet.
std::atomic<bool> g_float_ok{true}, g_bfloat16_ok{true}, g_half_ok{true};

std::atomic<bool>* usable_flag(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return &g_float_ok;
    case at::kBFloat16:
      return &g_bfloat16_ok;
    case at::kHalf:
      return &g_half_ok;
    default:
      return nullptr;
  }
}

}  // namespace

PointwiseRoute requested_pointwise_route() {
  const char* v = std::getenv("SHUFFLENET_CPU_POINTWISE");
  if (v == nullptr) return PointwiseRoute::kAuto;
  if (std::strcmp(v, "gemm") == 0) return PointwiseRoute::kGemm;
  if (std::strcmp(v, "onednn") == 0) return PointwiseRoute::kOneDnn;
  if (std::strcmp(v, "tile") == 0) return PointwiseRoute::kTile;
  return PointwiseRoute::kAuto;
}

namespace {

const c10::TypedOperatorHandle<ConvPointwiseFn>& conv_pointwise_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("mkldnn::_convolution_pointwise", "")
                             .typed<ConvPointwiseFn>();
  return op;
}

at::Tensor call_conv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t groups, bool relu) {
  const int64_t zero[2] = {0, 0}, one[2] = {1, 1};
  std::optional<at::Tensor> bias;
  if (b.defined()) bias = b;
  return conv_pointwise_op().call(x, w, bias, zero, one, one, groups, relu ? "relu" : "none",
                                  c10::List<std::optional<at::Scalar>>(), std::optional<c10::string_view>(""));
}

// One tiny convolution in `dtype`: oneDNN's float16 and bfloat16 convolutions
// raise on CPUs without the ISA they need.
bool probe(at::ScalarType dtype) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  try {
    const auto options = at::TensorOptions().dtype(dtype);
    call_conv(at::ones({1, 16, 1, 1}, options), at::ones({16, 16, 1, 1}, options), at::ones({16}, options), 1, true);
    return true;
  } catch (const c10::Error&) {
    return false;
  }
}

}  // namespace

bool onednn_conv_usable(at::ScalarType dtype) {
  static const bool built = at::hasMKLDNN() &&
                            c10::Dispatcher::singleton().findSchema({"mkldnn::_convolution_pointwise", ""}).has_value();
  if (!built || !at::globalContext().userEnabledMkldnn()) return false;
  const std::atomic<bool>* flag = usable_flag(dtype);
  if (flag == nullptr || !flag->load(std::memory_order_relaxed)) return false;
  switch (dtype) {
    case at::kFloat: {
      static const bool ok = probe(at::kFloat);
      return ok;
    }
    case at::kBFloat16: {
      static const bool ok = probe(at::kBFloat16);
      return ok;
    }
    default: {
      static const bool ok = probe(at::kHalf);
      return ok;
    }
  }
}

at::Tensor onednn_conv1x1(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t groups, bool relu) {
  try {
    if (x.suggest_memory_format() != at::MemoryFormat::ChannelsLast) {
      // NCHW: _convolution_pointwise reorders input and output to channels_last
      // around its kernel; ATen's convolution (oneDNN's for half types, and for
      // float32 where ATen picks it) keeps NCHW and measured faster, 0.53 vs
      // 0.70 ms (bfloat16, 58 channels at 28x28, batch 8, one thread), with the
      // ReLU in place after it (exact: ReLU commutes with the one rounding).
      const int64_t zero[2] = {0, 0}, one[2] = {1, 1};
      at::Tensor y = at::convolution(x, w, b.defined() ? c10::optional<at::Tensor>(b) : c10::nullopt, one, zero, one,
                                     false, zero, groups);
      return relu ? y.relu_() : y;
    }
    return call_conv(x, w, b, groups, relu);
  } catch (const c10::Error&) {
    // oneDNN rejected the call: use the GEMM route for this dtype from now on.
    if (std::atomic<bool>* flag = usable_flag(x.scalar_type())) flag->store(false, std::memory_order_relaxed);
    return at::Tensor();
  }
}

}  // namespace shufflenet::cpu
