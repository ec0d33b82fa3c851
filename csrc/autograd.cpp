// Autograd kernels of the four differentiable ops of namespace `shufflenet`
// (channel_shuffle, concat_shuffle, pointwise_conv, depthwise_conv2d), one
// registration on the Autograd key for every device the ops have kernels for.
//
// They are written in C++ rather than with torch.library.register_autograd because
// the Python path costs a few microseconds per call even when nothing needs a
// gradient, more than the whole shuffle of a late-stage feature map at batch 1.
// The rules are the ones the Python formulas had (shufflenet_kernels/ops.py keeps
// them for the Triton namespace, which shares the schemas):
//   * grad mode off, or no tensor argument requiring grad: the call goes straight to
//     the device kernel below autograd, no graph node;
//   * otherwise a torch::autograd::Function whose backward calls the ops through the
//     dispatcher (channel_shuffle, concat_shuffle_backward, pointwise_conv_backward,
//     depthwise_conv2d_backward), so torch.compile traces the backward and a backward
//     that is itself differentiable (channel_shuffle's) supports double backward;
//   * saved for backward: the input and weight of the convolutions and their output
//     when it went through ReLU, nothing else; a gradient is computed only for the
//     inputs that need one.
// Sizes saved for backward stay symbolic (SymInt) while torch.compile traces with
// dynamic shapes; they become plain ints only where an `int` argument needs one.
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <array>
#include <tuple>
#include <vector>

namespace shufflenet {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = c10::optional<at::Tensor>;
using Grads3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// ---- op handles (looked up once) ---------------------------------------------

using ChannelShuffleSig = at::Tensor(const at::Tensor&, int64_t);
using ConcatShuffleSig = at::Tensor(const at::Tensor&, const at::Tensor&, int64_t);
using ConcatShuffleBackwardSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t, int64_t);
using PointwiseConvSig = at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, int64_t, int64_t, bool);
using PointwiseConvBackwardSig = Grads3(const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptTensor&,
                                        int64_t, int64_t, std::array<bool, 3>);
using DepthwiseConvSig = at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, at::IntArrayRef,
                                    at::IntArrayRef, at::IntArrayRef, bool);
using DepthwiseConvBackwardSig = Grads3(const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptTensor&,
                                        at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, std::array<bool, 3>);

template <typename Sig>
using OpHandle = c10::TypedOperatorHandle<Sig>;

template <typename Sig>
OpHandle<Sig> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

struct Ops {
  OpHandle<ChannelShuffleSig> channel_shuffle = find_op<ChannelShuffleSig>("shufflenet::channel_shuffle");
  OpHandle<ConcatShuffleSig> concat_shuffle = find_op<ConcatShuffleSig>("shufflenet::concat_shuffle");
  OpHandle<ConcatShuffleBackwardSig> concat_shuffle_backward =
      find_op<ConcatShuffleBackwardSig>("shufflenet::concat_shuffle_backward");
  OpHandle<PointwiseConvSig> pointwise_conv = find_op<PointwiseConvSig>("shufflenet::pointwise_conv");
  OpHandle<PointwiseConvBackwardSig> pointwise_conv_backward =
      find_op<PointwiseConvBackwardSig>("shufflenet::pointwise_conv_backward");
  OpHandle<DepthwiseConvSig> depthwise_conv2d = find_op<DepthwiseConvSig>("shufflenet::depthwise_conv2d");
  OpHandle<DepthwiseConvBackwardSig> depthwise_conv2d_backward =
      find_op<DepthwiseConvBackwardSig>("shufflenet::depthwise_conv2d_backward");
};

// Looked up on first use (every schema is defined by then: importing _C ran the
// registrations).
const Ops& ops() {
  static const Ops handles;
  return handles;
}

// ---- helpers ------------------------------------------------------------------

bool requires_grad(const at::Tensor& t) { return t.defined() && t.requires_grad(); }
bool requires_grad(const OptTensor& t) { return t.has_value() && requires_grad(*t); }

// Whether the call records a graph node: grad mode on and some tensor argument
// requires grad (torch.library.register_autograd's rule).
template <typename... Ts>
bool records_graph(const Ts&... tensors) {
  return at::GradMode::is_enabled() && (requires_grad(tensors) || ...);
}

// A size saved as SymInt, as the plain int an `int` schema argument takes (a guard
// on its value while tracing with dynamic shapes, as Python's int() would add).
int64_t saved_int(AutogradContext* ctx, const char* key) {
  return ctx->saved_data.at(key).toSymInt().guard_int(__FILE__, __LINE__);
}

at::Tensor grad_if(bool wanted, const at::Tensor& grad) { return wanted ? grad : at::Tensor(); }

// ---- channel_shuffle ----------------------------------------------------------

at::Tensor channel_shuffle_below_autograd(const at::Tensor& input, int64_t groups) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return ops().channel_shuffle.call(input, groups);
}

struct ChannelShuffleFunction : public torch::autograd::Function<ChannelShuffleFunction> {
  static constexpr bool is_traceable = true;

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, int64_t groups) {
    at::Tensor out = channel_shuffle_below_autograd(input, groups);
    // After the kernel checked the arguments (groups > 0, C % groups == 0).
    ctx->saved_data["inverse_groups"] = input.sym_size(1) / groups;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {ops().channel_shuffle.call(grads[0], saved_int(ctx, "inverse_groups")), at::Tensor()};
  }
};

at::Tensor channel_shuffle_autograd(const at::Tensor& input, int64_t groups) {
  if (!records_graph(input)) return channel_shuffle_below_autograd(input, groups);
  return ChannelShuffleFunction::apply(input, groups);
}

// ---- concat_shuffle -----------------------------------------------------------

at::Tensor concat_shuffle_below_autograd(const at::Tensor& a, const at::Tensor& b, int64_t groups) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return ops().concat_shuffle.call(a, b, groups);
}

struct ConcatShuffleFunction : public torch::autograd::Function<ConcatShuffleFunction> {
  static constexpr bool is_traceable = true;

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& a, const at::Tensor& b, int64_t groups) {
    at::Tensor out = concat_shuffle_below_autograd(a, b, groups);
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["channels_a"] = a.sym_size(1);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const int64_t groups = ctx->saved_data.at("groups").toInt();
    auto [grad_a, grad_b] = ops().concat_shuffle_backward.call(grads[0], groups, saved_int(ctx, "channels_a"));
    return {grad_a, grad_b, at::Tensor()};
  }
};

at::Tensor concat_shuffle_autograd(const at::Tensor& a, const at::Tensor& b, int64_t groups) {
  if (!records_graph(a, b)) return concat_shuffle_below_autograd(a, b, groups);
  return ConcatShuffleFunction::apply(a, b, groups);
}

// ---- pointwise_conv -----------------------------------------------------------

at::Tensor pointwise_conv_below_autograd(const at::Tensor& input, const at::Tensor& weight, const OptTensor& bias,
                                         int64_t groups, int64_t shuffle_groups, bool relu) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return ops().pointwise_conv.call(input, weight, bias, groups, shuffle_groups, relu);
}

// The output mask of a convolution backward: input, weight, and bias when there is one.
std::array<bool, 3> conv_grad_mask(AutogradContext* ctx) {
  return {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
          ctx->saved_data.at("has_bias").toBool() && ctx->needs_input_grad(2)};
}

struct PointwiseConvFunction : public torch::autograd::Function<PointwiseConvFunction> {
  static constexpr bool is_traceable = true;

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const OptTensor& bias, int64_t groups, int64_t shuffle_groups, bool relu) {
    at::Tensor out = pointwise_conv_below_autograd(input, weight, bias, groups, shuffle_groups, relu);
    ctx->save_for_backward({input, weight, relu ? out : at::Tensor()});
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["shuffle_groups"] = shuffle_groups;
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const std::array<bool, 3> mask = conv_grad_mask(ctx);
    const OptTensor relu_output = saved[2].defined() ? OptTensor(saved[2]) : c10::nullopt;
    const int64_t groups = ctx->saved_data.at("groups").toInt();
    const int64_t shuffle_groups = ctx->saved_data.at("shuffle_groups").toInt();
    auto [gi, gw, gb] =
        ops().pointwise_conv_backward.call(grads[0], saved[0], saved[1], relu_output, groups, shuffle_groups, mask);
    return {grad_if(mask[0], gi), grad_if(mask[1], gw), grad_if(mask[2], gb), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

at::Tensor pointwise_conv_autograd(const at::Tensor& input, const at::Tensor& weight, const OptTensor& bias,
                                   int64_t groups, int64_t shuffle_groups, bool relu) {
  if (!records_graph(input, weight, bias)) {
    return pointwise_conv_below_autograd(input, weight, bias, groups, shuffle_groups, relu);
  }
  return PointwiseConvFunction::apply(input, weight, bias, groups, shuffle_groups, relu);
}

// ---- depthwise_conv2d ---------------------------------------------------------

at::Tensor depthwise_conv2d_below_autograd(const at::Tensor& input, const at::Tensor& weight, const OptTensor& bias,
                                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                           bool relu) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return ops().depthwise_conv2d.call(input, weight, bias, stride, padding, dilation, relu);
}

struct DepthwiseConv2dFunction : public torch::autograd::Function<DepthwiseConv2dFunction> {
  static constexpr bool is_traceable = true;

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const OptTensor& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, bool relu) {
    at::Tensor out = depthwise_conv2d_below_autograd(input, weight, bias, stride, padding, dilation, relu);
    ctx->save_for_backward({input, weight, relu ? out : at::Tensor()});
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["dilation"] = dilation;
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const std::array<bool, 3> mask = conv_grad_mask(ctx);
    const OptTensor relu_output = saved[2].defined() ? OptTensor(saved[2]) : c10::nullopt;
    const std::vector<int64_t> stride = ctx->saved_data.at("stride").toIntVector();
    const std::vector<int64_t> padding = ctx->saved_data.at("padding").toIntVector();
    const std::vector<int64_t> dilation = ctx->saved_data.at("dilation").toIntVector();
    auto [gi, gw, gb] = ops().depthwise_conv2d_backward.call(grads[0], saved[0], saved[1], relu_output, stride,
                                                             padding, dilation, mask);
    return {grad_if(mask[0], gi), grad_if(mask[1], gw), grad_if(mask[2], gb), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

at::Tensor depthwise_conv2d_autograd(const at::Tensor& input, const at::Tensor& weight, const OptTensor& bias,
                                     at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                     bool relu) {
  if (!records_graph(input, weight, bias)) {
    return depthwise_conv2d_below_autograd(input, weight, bias, stride, padding, dilation, relu);
  }
  return DepthwiseConv2dFunction::apply(input, weight, bias, stride, padding, dilation, relu);
}

}  // namespace
}  // namespace shufflenet

TORCH_LIBRARY_IMPL(shufflenet, Autograd, m) {
  m.impl("channel_shuffle", &shufflenet::channel_shuffle_autograd);
  m.impl("concat_shuffle", &shufflenet::concat_shuffle_autograd);
  m.impl("pointwise_conv", &shufflenet::pointwise_conv_autograd);
  m.impl("depthwise_conv2d", &shufflenet::depthwise_conv2d_autograd);
}
