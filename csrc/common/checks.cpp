#include "common/checks.h"

#include <ATen/ATen.h>

#include "common/index.h"

namespace shufflenet {

void check_dtype(const at::Tensor& t, const char* op, const char* name) {
  const auto dt = t.scalar_type();
  const bool ok = dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16 ||
                  (dt == at::kDouble && t.device().is_cpu());
  TORCH_CHECK(
      ok, op, ": ", name, " has dtype ", dt, ", expected float32, float16 or bfloat16",
      t.device().is_cpu() ? " (or float64)" : " (float64 is supported on CPU only)");
}

void check_rank(const at::Tensor& t, const char* op, const char* name, int64_t min_rank, int64_t max_rank) {
  if (min_rank == max_rank) {
    TORCH_CHECK(t.dim() == min_rank, op, ": ", name, " must be ", min_rank, "-D, got ", t.dim(), "-D tensor of shape ",
                t.sizes());
  } else {
    TORCH_CHECK(t.dim() >= min_rank && t.dim() <= max_rank, op, ": ", name, " must have rank ", min_rank, " to ",
                max_rank, " ([N, C, *spatial]), got ", t.dim(), "-D tensor of shape ", t.sizes());
  }
}

void check_same_dtype_device(const at::Tensor& input, const at::Tensor& other, const char* op, const char* name) {
  TORCH_CHECK(other.device() == input.device(), op, ": ", name, " is on ", other.device(), " but input is on ",
              input.device(), "; expected both on the same device");
  TORCH_CHECK(other.scalar_type() == input.scalar_type(), op, ": ", name, " has dtype ", other.scalar_type(),
              " but input has dtype ", input.scalar_type(), "; expected the same dtype");
}

void check_groups(int64_t groups, int64_t channels, const char* op, const char* name, const char* what) {
  TORCH_CHECK(groups > 0, op, ": ", name, " must be positive, got ", groups);
  TORCH_CHECK(channels % groups == 0, op, ": ", what, " (", channels, ") must be divisible by ", name, " (", groups,
              ")");
}

void check_channel_shuffle_args(const at::Tensor& input, int64_t groups) {
  constexpr const char* op = "channel_shuffle";
  check_rank(input, op, "input", 3, 5);
  check_dtype(input, op, "input");
  check_groups(groups, input.size(1), op, "groups", "number of channels of input");
}

void check_concat_shuffle_args(const at::Tensor& a, const at::Tensor& b, int64_t groups) {
  constexpr const char* op = "concat_shuffle";
  check_rank(a, op, "a", 3, 5);
  check_dtype(a, op, "a");
  check_same_dtype_device(a, b, op, "b");
  TORCH_CHECK(b.dim() == a.dim(), op, ": b must have the rank of a (", a.dim(), "), got ", b.dim());
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (d == 1) continue;
    TORCH_CHECK(a.size(d) == b.size(d), op, ": a and b must match in every dim but 1, got a of shape ", a.sizes(),
                " and b of shape ", b.sizes());
  }
  check_groups(groups, a.size(1) + b.size(1), op, "groups", "total channels of a and b");
}

void check_concat_shuffle_backward_args(const at::Tensor& grad_output, int64_t groups, int64_t channels_a) {
  constexpr const char* op = "concat_shuffle_backward";
  check_rank(grad_output, op, "grad_output", 3, 5);
  check_dtype(grad_output, op, "grad_output");
  const int64_t channels = grad_output.size(1);
  check_groups(groups, channels, op, "groups", "channels of grad_output");
  TORCH_CHECK(channels_a >= 0 && channels_a <= channels, op, ": channels_a must be in [0, ", channels,
              "] (channels of grad_output), got ", channels_a);
}

void check_pointwise_conv_args(
    const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias, int64_t groups,
    int64_t shuffle_groups) {
  constexpr const char* op = "pointwise_conv";
  check_rank(input, op, "input", 4, 4);
  check_dtype(input, op, "input");
  check_rank(weight, op, "weight", 4, 4);
  check_same_dtype_device(input, weight, op, "weight");
  check_groups(groups, input.size(1), op, "groups", "input channels");
  const int64_t c_out = weight.size(0);
  TORCH_CHECK(c_out > 0, op, ": weight must have at least one output channel, got shape ", weight.sizes());
  check_groups(groups, c_out, op, "groups", "weight.size(0) (output channels)");
  TORCH_CHECK(weight.size(1) == input.size(1) / groups && weight.size(2) == 1 && weight.size(3) == 1, op,
              ": weight must have shape [C_out, C_in/groups, 1, 1] = [", c_out, ", ", input.size(1) / groups,
              ", 1, 1], got ", weight.sizes());
  check_groups(shuffle_groups, c_out, op, "shuffle_groups", "output channels");
  if (bias.has_value() && bias->defined()) {
    check_same_dtype_device(input, *bias, op, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == c_out, op, ": bias must have shape [", c_out, "], got ",
                bias->sizes());
  }
}

std::array<int64_t, 2> check_depthwise_conv2d_args(
    const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  constexpr const char* op = "depthwise_conv2d";
  check_rank(input, op, "input", 4, 4);
  check_dtype(input, op, "input");
  check_rank(weight, op, "weight", 4, 4);
  check_same_dtype_device(input, weight, op, "weight");
  const int64_t channels = input.size(1);
  TORCH_CHECK(weight.size(0) == channels && weight.size(1) == 1, op, ": weight must have shape [C, 1, kH, kW] with C = ",
              channels, ", got ", weight.sizes());
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2, op,
              ": stride, padding and dilation must have 2 elements each");
  std::array<int64_t, 2> out{};
  for (int d = 0; d < 2; ++d) {
    const int64_t k = weight.size(2 + d);
    TORCH_CHECK(k >= 1 && k <= kMaxDepthwiseKernel, op, ": unsupported kernel size ", weight.size(2), "x",
                weight.size(3), " (weight), each extent must be in [1, ", kMaxDepthwiseKernel, "]");
    TORCH_CHECK(stride[d] > 0, op, ": stride must be positive, got ", stride);
    TORCH_CHECK(padding[d] >= 0, op, ": padding must be non-negative, got ", padding);
    TORCH_CHECK(dilation[d] > 0, op, ": dilation must be positive, got ", dilation);
    // The padded input must hold at least one whole dilated window. Checked before
    // conv_output_size, whose integer division truncates toward zero and would turn
    // a negative numerator (input smaller than the window) into one output.
    const int64_t padded = input.size(2 + d) + 2 * padding[d];
    const int64_t window = dilation[d] * (k - 1) + 1;
    TORCH_CHECK(padded >= window, op, ": input spatial size ", input.sizes().slice(2), " is too small for kernel ",
                weight.sizes().slice(2), " with padding ", padding, " and dilation ", dilation, " (dim ", d,
                ": padded input extent ", padded, " < dilated kernel extent ", window, ")");
    out[d] = conv_output_size(input.size(2 + d), k, stride[d], padding[d], dilation[d]);
  }
  if (bias.has_value() && bias->defined()) {
    check_same_dtype_device(input, *bias, op, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == channels, op, ": bias must have shape [", channels, "], got ",
                bias->sizes());
  }
  return out;
}

namespace {

bool given(const c10::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

// A v2_unit weight: 4-D of the expected shape, the input's dtype and device.
void check_v2_weight(const at::Tensor& input, const at::Tensor& weight, const char* name,
                     std::array<int64_t, 4> expected, const char* what) {
  constexpr const char* op = "v2_unit";
  check_rank(weight, op, name, 4, 4);
  check_same_dtype_device(input, weight, op, name);
  TORCH_CHECK(weight.sizes() == at::IntArrayRef(expected), op, ": ", name, " must have shape ", at::IntArrayRef(expected),
              " (", what, "), got ", weight.sizes());
}

void check_v2_bias(const at::Tensor& input, const c10::optional<at::Tensor>& bias, const char* name, int64_t size) {
  if (!given(bias)) return;
  constexpr const char* op = "v2_unit";
  check_same_dtype_device(input, *bias, op, name);
  TORCH_CHECK(bias->dim() == 1 && bias->size(0) == size, op, ": ", name, " must have shape [", size, "], got ",
              bias->sizes());
}

}  // namespace

V2UnitShape check_v2_unit_args(
    const at::Tensor& input, const c10::optional<at::Tensor>& proj_dw_weight,
    const c10::optional<at::Tensor>& proj_dw_bias, const c10::optional<at::Tensor>& proj_pw_weight,
    const c10::optional<at::Tensor>& proj_pw_bias, const at::Tensor& pw1_weight,
    const c10::optional<at::Tensor>& pw1_bias, const at::Tensor& dw_weight, const c10::optional<at::Tensor>& dw_bias,
    const at::Tensor& pw2_weight, const c10::optional<at::Tensor>& pw2_bias, int64_t stride) {
  constexpr const char* op = "v2_unit";
  check_rank(input, op, "input", 4, 4);
  check_dtype(input, op, "input");
  TORCH_CHECK(stride == 1 || stride == 2, op, ": stride must be 1 or 2, got ", stride);
  const int64_t channels = input.size(1);
  TORCH_CHECK(input.size(2) >= 1 && input.size(3) >= 1, op, ": input spatial size ", input.sizes().slice(2),
              " must be at least 1x1");
  const bool projection = stride == 2;
  const std::pair<const c10::optional<at::Tensor>*, const char*> proj[] = {
      {&proj_dw_weight, "proj_dw_weight"}, {&proj_dw_bias, "proj_dw_bias"},
      {&proj_pw_weight, "proj_pw_weight"}, {&proj_pw_bias, "proj_pw_bias"}};
  if (!projection) {
    for (const auto& [t, name] : proj) {
      TORCH_CHECK(!given(*t), op, ": ", name, " must be None with stride 1 (the unit has no projection branch)");
    }
    TORCH_CHECK(channels % 2 == 0, op, ": with stride 1 the input channels (", channels,
                ") must be even (the unit splits them in two halves)");
  } else {
    TORCH_CHECK(given(proj_dw_weight), op, ": proj_dw_weight must be given with stride 2");
    TORCH_CHECK(given(proj_pw_weight), op, ": proj_pw_weight must be given with stride 2");
  }
  const int64_t c_branch = projection ? channels : channels / 2;
  TORCH_CHECK(c_branch > 0, op, ": input must have at least ", projection ? 1 : 2, " channels, got ", channels);
  check_rank(pw1_weight, op, "pw1_weight", 4, 4);
  const int64_t c_mid = pw1_weight.size(0);
  TORCH_CHECK(c_mid > 0, op, ": pw1_weight must have at least one output channel, got shape ", pw1_weight.sizes());
  check_v2_weight(input, pw1_weight, "pw1_weight", {c_mid, c_branch, 1, 1},
                  projection ? "[C_mid, C_in, 1, 1], C_in = input channels"
                             : "[C_mid, C_in/2, 1, 1], C_in/2 = half the input channels");
  check_v2_bias(input, pw1_bias, "pw1_bias", c_mid);
  check_v2_weight(input, dw_weight, "dw_weight", {c_mid, 1, 3, 3},
                  "[C_mid, 1, 3, 3]: a 3x3 depthwise weight over pw1_weight's outputs");
  check_v2_bias(input, dw_bias, "dw_bias", c_mid);
  check_rank(pw2_weight, op, "pw2_weight", 4, 4);
  const int64_t c_half = projection ? pw2_weight.size(0) : c_branch;
  TORCH_CHECK(c_half > 0, op, ": pw2_weight must have at least one output channel, got shape ", pw2_weight.sizes());
  check_v2_weight(input, pw2_weight, "pw2_weight", {c_half, c_mid, 1, 1},
                  projection ? "[C_out/2, C_mid, 1, 1]" : "[C_in/2, C_mid, 1, 1]: as many outputs as the kept half");
  check_v2_bias(input, pw2_bias, "pw2_bias", c_half);
  if (projection) {
    check_v2_weight(input, *proj_dw_weight, "proj_dw_weight", {c_branch, 1, 3, 3},
                    "[C_in, 1, 3, 3]: a 3x3 depthwise weight over the input");
    check_v2_bias(input, proj_dw_bias, "proj_dw_bias", c_branch);
    check_v2_weight(input, *proj_pw_weight, "proj_pw_weight", {c_half, c_branch, 1, 1},
                    "[C_out/2, C_in, 1, 1], C_out/2 = pw2_weight.size(0)");
    check_v2_bias(input, proj_pw_bias, "proj_pw_bias", c_half);
  }
  const int64_t h = input.size(2), w = input.size(3);
  return V2UnitShape{input.size(0), h, w, conv_output_size(h, 3, stride, 1, 1), conv_output_size(w, 3, stride, 1, 1),
                     stride, c_branch, c_mid, c_half};
}

StemShape check_conv3x3_relu_maxpool_args(const at::Tensor& input, const at::Tensor& weight,
                                          const c10::optional<at::Tensor>& bias) {
  constexpr const char* op = "conv3x3_relu_maxpool";
  check_rank(input, op, "input", 4, 4);
  check_dtype(input, op, "input");
  const int64_t c_in = input.size(1), h = input.size(2), w = input.size(3);
  TORCH_CHECK(c_in >= 1, op, ": input must have at least one channel, got shape ", input.sizes());
  TORCH_CHECK(h >= 1 && w >= 1, op, ": input spatial size ", input.sizes().slice(2), " must be at least 1x1");
  check_rank(weight, op, "weight", 4, 4);
  check_same_dtype_device(input, weight, op, "weight");
  const int64_t c_out = weight.size(0);
  TORCH_CHECK(c_out >= 1, op, ": weight must have at least one output channel, got shape ", weight.sizes());
  TORCH_CHECK(weight.size(1) == c_in && weight.size(2) == 3 && weight.size(3) == 3, op, ": weight must have shape [",
              c_out, ", ", c_in, ", 3, 3] ([C_out, C_in, 3, 3], C_in = input channels), got ", weight.sizes());
  if (given(bias)) {
    check_same_dtype_device(input, *bias, op, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == c_out, op, ": bias must have shape [", c_out, "], got ",
                bias->sizes());
  }
  const int64_t h_conv = conv_output_size(h, 3, 2, 1, 1), w_conv = conv_output_size(w, 3, 2, 1, 1);
  return StemShape{input.size(0), c_in, h, w, c_out, h_conv, w_conv, conv_output_size(h_conv, 3, 2, 1, 1),
                   conv_output_size(w_conv, 3, 2, 1, 1)};
}

V2UnitInplaceShape check_v2_unit_inplace_args(
    const at::Tensor& buffer, const at::Tensor& branch_channels, const at::Tensor& pw1_weight,
    const c10::optional<at::Tensor>& pw1_bias, const at::Tensor& dw_weight, const c10::optional<at::Tensor>& dw_bias,
    const at::Tensor& pw2_weight, const c10::optional<at::Tensor>& pw2_bias) {
  constexpr const char* op = "v2_unit_";
  check_rank(buffer, op, "buffer", 4, 4);
  check_dtype(buffer, op, "buffer");
  TORCH_CHECK(buffer.size(2) >= 1 && buffer.size(3) >= 1, op, ": buffer spatial size ", buffer.sizes().slice(2),
              " must be at least 1x1");
  TORCH_CHECK(branch_channels.dim() == 1 && branch_channels.scalar_type() == at::kLong, op,
              ": branch_channels must be a 1-D int64 tensor, got ", branch_channels.dim(), "-D ",
              branch_channels.scalar_type());
  TORCH_CHECK(branch_channels.device().is_cpu(), op, ": branch_channels must be a CPU tensor, got ",
              branch_channels.device());
  const int64_t channels = buffer.size(1), c_branch = branch_channels.size(0);
  TORCH_CHECK(c_branch >= 1 && c_branch <= channels, op, ": branch_channels must hold between 1 and ", channels,
              " (the buffer's channels) indices, got ", c_branch);
  const auto weight = [&](const at::Tensor& t, const char* name, std::array<int64_t, 4> expected, const char* what) {
    check_rank(t, op, name, 4, 4);
    check_same_dtype_device(buffer, t, op, name);
    TORCH_CHECK(t.sizes() == at::IntArrayRef(expected), op, ": ", name, " must have shape ",
                at::IntArrayRef(expected), " (", what, "), got ", t.sizes());
  };
  const auto bias = [&](const c10::optional<at::Tensor>& b, const char* name, int64_t size) {
    if (!given(b)) return;
    check_same_dtype_device(buffer, *b, op, name);
    TORCH_CHECK(b->dim() == 1 && b->size(0) == size, op, ": ", name, " must have shape [", size, "], got ",
                b->sizes());
  };
  check_rank(pw1_weight, op, "pw1_weight", 4, 4);
  const int64_t c_mid = pw1_weight.size(0);
  TORCH_CHECK(c_mid > 0, op, ": pw1_weight must have at least one output channel, got shape ", pw1_weight.sizes());
  weight(pw1_weight, "pw1_weight", {c_mid, c_branch, 1, 1}, "[C_mid, B, 1, 1], B = branch_channels.numel()");
  bias(pw1_bias, "pw1_bias", c_mid);
  weight(dw_weight, "dw_weight", {c_mid, 1, 3, 3}, "[C_mid, 1, 3, 3]: a 3x3 depthwise weight over pw1_weight's outputs");
  bias(dw_bias, "dw_bias", c_mid);
  weight(pw2_weight, "pw2_weight", {c_branch, c_mid, 1, 1}, "[B, C_mid, 1, 1]: one output per branch channel");
  bias(pw2_bias, "pw2_bias", c_branch);
  return V2UnitInplaceShape{buffer.size(0), channels, buffer.size(2), buffer.size(3), c_branch, c_mid};
}

void check_grad_output(const at::Tensor& grad_output, at::IntArrayRef sizes, const at::Tensor& like, const char* op) {
  TORCH_CHECK(grad_output.sizes() == sizes, op, ": grad_output must have shape ", sizes, ", got ",
              grad_output.sizes());
  check_same_dtype_device(like, grad_output, op, "grad_output");
}

void check_relu_output(const c10::optional<at::Tensor>& relu_output, at::IntArrayRef sizes, const at::Tensor& like,
                       const char* op) {
  if (!relu_output.has_value() || !relu_output->defined()) return;
  TORCH_CHECK(relu_output->sizes() == sizes, op, ": relu_output must have shape ", sizes, ", got ",
              relu_output->sizes());
  check_same_dtype_device(like, *relu_output, op, "relu_output");
}

at::MemoryFormat output_memory_format(const at::Tensor& input) {
  // Rank 3 has no channels_last; suggest_memory_format answers Contiguous there.
  return input.suggest_memory_format();
}

std::pair<at::Tensor, ChannelView> as_channel_view(const at::Tensor& t) {
  const int64_t rank = t.dim();
  int64_t s = 1;
  int64_t stride_s = 1;
  bool collapsible = true;
  bool seen = false;
  // Walk spatial dims from inner-most out; size-1 dims carry no stride constraint.
  for (int64_t d = rank - 1; d >= 2; --d) {
    const int64_t size = t.size(d);
    if (size == 1) continue;
    if (!seen) {
      stride_s = t.stride(d);
      seen = true;
    } else if (t.stride(d) != stride_s * s) {
      collapsible = false;
    }
    s *= size;
  }
  if (!seen) {
    for (int64_t d = 2; d < rank; ++d) s *= t.size(d);
  }
  if (!collapsible) {
    at::Tensor copy = t.contiguous(output_memory_format(t));
    return as_channel_view(copy);
  }
  return {t, ChannelView{t.size(0), t.size(1), s, t.stride(0), t.stride(1), stride_s}};
}

at::Tensor with_plain_strides(const at::Tensor& t, at::MemoryFormat format) {
  // NCHW-like: stride(3) == 1 and stride(2) == W; NHWC-like: stride(1) == 1 and
  // stride(2) == W*stride(3). Either may be a channel slice (any stride(0)).
  const bool nchw = t.stride(3) == 1 && (t.size(2) == 1 || t.stride(2) == t.size(3));
  const bool nhwc = t.stride(1) == 1 && (t.size(2) == 1 || t.stride(2) == t.size(3) * t.stride(3));
  if ((format == at::MemoryFormat::ChannelsLast && nhwc) || (format != at::MemoryFormat::ChannelsLast && nchw)) {
    return t;
  }
  return t.contiguous(format);
}

at::Tensor empty_in_format(at::IntArrayRef sizes, const at::Tensor& like, at::MemoryFormat format) {
  return at::empty(sizes, like.options().memory_format(format));
}

}  // namespace shufflenet
