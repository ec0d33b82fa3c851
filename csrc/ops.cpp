// The op schemas of namespace `shufflenet` (listed once, in schemas.h). Backends add only
// TORCH_LIBRARY_IMPL blocks (csrc/cpu, csrc/cuda); the Autograd kernels of the
// differentiable ops are in csrc/autograd.cpp, those of the inference-only v2_unit,
// v2_unit_ and conv3x3_relu_maxpool are below; fake kernels are registered in Python
// (shufflenet_kernels/ops.py).
#include <Python.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

#include "schemas.h"
#include "cpu/output_cache.h"
#include "cpu/pack_cache.h"

extern "C" {
// Importing _C runs the static registrations below; it exports no functions, so
// the module builds against the limited API (abi3).
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "shufflenet_kernels native ops (reached through torch.ops)", -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(shufflenet, m) {
  shufflenet::define_schemas(m);
  shufflenet::define_fused_schemas(m);
  // Internal: marks weights whose owner changes them only by version-bumping writes (the
  // nn modules' cached folded weights), so the CPU kernels' packed copies of them are
  // validated without re-reading them (PinnedTensors in cpu/pack_cache.h). No outputs,
  // any device; one kernel for every dispatch key.
  m.def("_pin_weights(Tensor[] weights) -> ()", [](at::TensorList weights) {
    for (const at::Tensor& w : weights) shufflenet::cpu::pinned_tensors().pin(w);
  });
  // Internal: the CPU kernels' output cache (cpu/output_cache.cpp): the bytes it holds
  // for reuse and its limit; and returning what it holds.
  m.def("_output_cache_info() -> int[]", [] {
    return std::vector<int64_t>{shufflenet::cpu::output_cache_bytes(), shufflenet::cpu::output_cache_limit()};
  });
  m.def("_output_cache_clear() -> ()", [] { shufflenet::cpu::output_cache_clear(); });
}

namespace {

using OptTensor = c10::optional<at::Tensor>;

// v2_unit has no derivative. With grad mode on, a tensor argument that requires grad
// is refused here, before any kernel runs, rather than giving an output that silently
// drops out of the autograd graph; otherwise the call goes on to the device kernel.
at::Tensor v2_unit_autograd(const at::Tensor& input, const OptTensor& proj_dw_weight, const OptTensor& proj_dw_bias,
                            const OptTensor& proj_pw_weight, const OptTensor& proj_pw_bias,
                            const at::Tensor& pw1_weight, const OptTensor& pw1_bias, const at::Tensor& dw_weight,
                            const OptTensor& dw_bias, const at::Tensor& pw2_weight, const OptTensor& pw2_bias,
                            int64_t stride) {
  if (at::GradMode::is_enabled()) {
    const std::pair<const at::Tensor*, const char*> required[] = {
        {&input, "input"}, {&pw1_weight, "pw1_weight"}, {&dw_weight, "dw_weight"}, {&pw2_weight, "pw2_weight"}};
    for (const auto& [t, name] : required) {
      TORCH_CHECK(!(t->defined() && t->requires_grad()), "v2_unit: ", name,
                  " requires grad, but v2_unit is an inference-only op with no derivative; call it under "
                  "torch.no_grad() / torch.inference_mode(), or use the per-op path (pointwise_conv, "
                  "depthwise_conv2d, concat_shuffle) for training");
    }
    const std::pair<const OptTensor*, const char*> optional[] = {
        {&proj_dw_weight, "proj_dw_weight"}, {&proj_dw_bias, "proj_dw_bias"}, {&proj_pw_weight, "proj_pw_weight"},
        {&proj_pw_bias, "proj_pw_bias"},     {&pw1_bias, "pw1_bias"},         {&dw_bias, "dw_bias"},
        {&pw2_bias, "pw2_bias"}};
    for (const auto& [t, name] : optional) {
      TORCH_CHECK(!(t->has_value() && (*t)->defined() && (*t)->requires_grad()), "v2_unit: ", name,
                  " requires grad, but v2_unit is an inference-only op with no derivative; call it under "
                  "torch.no_grad() / torch.inference_mode(), or use the per-op path for training");
    }
  }
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("shufflenet::v2_unit", "")
                             .typed<decltype(v2_unit_autograd)>();
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op.call(input, proj_dw_weight, proj_dw_bias, proj_pw_weight, proj_pw_bias, pw1_weight, pw1_bias, dw_weight,
                 dw_bias, pw2_weight, pw2_bias, stride);
}

// conv3x3_relu_maxpool has no derivative either: the same refusal as v2_unit's.
at::Tensor conv3x3_relu_maxpool_autograd(const at::Tensor& input, const at::Tensor& weight, const OptTensor& bias) {
  if (at::GradMode::is_enabled()) {
    const std::pair<const at::Tensor*, const char*> args[] = {
        {&input, "input"}, {&weight, "weight"}, {bias.has_value() ? &*bias : nullptr, "bias"}};
    for (const auto& [t, name] : args) {
      TORCH_CHECK(!(t && t->defined() && t->requires_grad()), "conv3x3_relu_maxpool: ", name,
                  " requires grad, but conv3x3_relu_maxpool is an inference-only op with no derivative; call it "
                  "under torch.no_grad() / torch.inference_mode(), or use conv2d, relu and max_pool2d for training");
    }
  }
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("shufflenet::conv3x3_relu_maxpool", "")
                             .typed<decltype(conv3x3_relu_maxpool_autograd)>();
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op.call(input, weight, bias);
}

// v2_unit_ likewise refuses tensors that require grad, and bumps the buffer's version
// counter (it writes the buffer), so a stale saved copy is detected as for any in-place op.
void v2_unit_inplace_autograd(const at::Tensor& buffer, const at::Tensor& branch_channels,
                              const at::Tensor& pw1_weight, const OptTensor& pw1_bias, const at::Tensor& dw_weight,
                              const OptTensor& dw_bias, const at::Tensor& pw2_weight, const OptTensor& pw2_bias) {
  if (at::GradMode::is_enabled()) {
    const std::pair<const at::Tensor*, const char*> required[] = {
        {&buffer, "buffer"}, {&pw1_weight, "pw1_weight"}, {&dw_weight, "dw_weight"}, {&pw2_weight, "pw2_weight"}};
    for (const auto& [t, name] : required) {
      TORCH_CHECK(!(t->defined() && t->requires_grad()), "v2_unit_: ", name,
                  " requires grad, but v2_unit_ is an inference-only op with no derivative; call it under "
                  "torch.no_grad() / torch.inference_mode()");
    }
    const std::pair<const OptTensor*, const char*> optional[] = {
        {&pw1_bias, "pw1_bias"}, {&dw_bias, "dw_bias"}, {&pw2_bias, "pw2_bias"}};
    for (const auto& [t, name] : optional) {
      TORCH_CHECK(!(t->has_value() && (*t)->defined() && (*t)->requires_grad()), "v2_unit_: ", name,
                  " requires grad, but v2_unit_ is an inference-only op with no derivative; call it under "
                  "torch.no_grad() / torch.inference_mode()");
    }
  }
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("shufflenet::v2_unit_", "")
                             .typed<decltype(v2_unit_inplace_autograd)>();
  {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    op.call(buffer, branch_channels, pw1_weight, pw1_bias, dw_weight, dw_bias, pw2_weight, pw2_bias);
  }
  if (!buffer.is_inference()) buffer.unsafeGetTensorImpl()->bump_version();
}

}  // namespace

TORCH_LIBRARY_IMPL(shufflenet, Autograd, m) {
  m.impl("v2_unit", &v2_unit_autograd);
  m.impl("conv3x3_relu_maxpool", &conv3x3_relu_maxpool_autograd);
  m.impl("v2_unit_", &v2_unit_inplace_autograd);
}
