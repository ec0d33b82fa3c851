// Argument checks and layout helpers shared by every backend, so each kernel
// validates its input the same way and no check is pasted into a kernel file.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Optional.h>

#include <array>
#include <utility>

namespace shufflenet {

// ---- argument checks (TORCH_CHECK with messages naming the argument) ------

// float32/float16/bfloat16 everywhere; float64 on CPU only.
void check_dtype(const at::Tensor& t, const char* op, const char* name);
// rank in [min_rank, max_rank]
void check_rank(const at::Tensor& t, const char* op, const char* name, int64_t min_rank, int64_t max_rank);
// `other` has the dtype and device of `input`
void check_same_dtype_device(const at::Tensor& input, const at::Tensor& other, const char* op, const char* name);
// groups > 0 and channels % groups == 0
void check_groups(int64_t groups, int64_t channels, const char* op, const char* name, const char* what);

void check_channel_shuffle_args(const at::Tensor& input, int64_t groups);
void check_concat_shuffle_args(const at::Tensor& a, const at::Tensor& b, int64_t groups);
void check_concat_shuffle_backward_args(const at::Tensor& grad_output, int64_t groups, int64_t channels_a);
void check_pointwise_conv_args(
    const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias, int64_t groups,
    int64_t shuffle_groups);
// Returns the output's spatial size {H_out, W_out}.
std::array<int64_t, 2> check_depthwise_conv2d_args(
    const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation);
// Sizes of a v2_unit call, from its checked arguments.
struct V2UnitShape {
  int64_t n, h, w, h_out, w_out, stride;
  int64_t c_branch;  // channels entering the branch's first 1x1 conv (and the projection, stride 2)
  int64_t c_mid;     // first 1x1 conv's outputs = depthwise channels
  int64_t c_half;    // second 1x1 conv's outputs = half the output channels
};
V2UnitShape check_v2_unit_args(
    const at::Tensor& input, const c10::optional<at::Tensor>& proj_dw_weight,
    const c10::optional<at::Tensor>& proj_dw_bias, const c10::optional<at::Tensor>& proj_pw_weight,
    const c10::optional<at::Tensor>& proj_pw_bias, const at::Tensor& pw1_weight,
    const c10::optional<at::Tensor>& pw1_bias, const at::Tensor& dw_weight, const c10::optional<at::Tensor>& dw_bias,
    const at::Tensor& pw2_weight, const c10::optional<at::Tensor>& pw2_bias, int64_t stride);
// Sizes of a conv3x3_relu_maxpool call: conv 3x3 stride 2 padding 1 (h_conv, w_conv),
// then max pool 3x3 stride 2 padding 1 (h_out, w_out).
struct StemShape {
  int64_t n, c_in, h, w, c_out, h_conv, w_conv, h_out, w_out;
};
StemShape check_conv3x3_relu_maxpool_args(const at::Tensor& input, const at::Tensor& weight,
                                          const c10::optional<at::Tensor>& bias);
// Sizes of a v2_unit_ (in-place stride-1 unit) call, from its checked arguments.
struct V2UnitInplaceShape {
  int64_t n, c, h, w;
  int64_t c_branch;  // branch channels (branch_channels.numel(), pw1's inputs, pw2's outputs)
  int64_t c_mid;     // first 1x1 conv's outputs = depthwise channels
};
// Shapes, dtypes and devices only; the values of branch_channels (distinct, in
// [0, C)) are checked by the kernel, which reads them anyway.
V2UnitInplaceShape check_v2_unit_inplace_args(
    const at::Tensor& buffer, const at::Tensor& branch_channels, const at::Tensor& pw1_weight,
    const c10::optional<at::Tensor>& pw1_bias, const at::Tensor& dw_weight, const c10::optional<at::Tensor>& dw_bias,
    const at::Tensor& pw2_weight, const c10::optional<at::Tensor>& pw2_bias);
// grad_output has the given sizes and the dtype/device of `like`.
void check_grad_output(const at::Tensor& grad_output, at::IntArrayRef sizes, const at::Tensor& like, const char* op);
// relu_output, when given, has the given sizes and the dtype/device of `like`.
void check_relu_output(const c10::optional<at::Tensor>& relu_output, at::IntArrayRef sizes, const at::Tensor& like,
                       const char* op);

// Largest supported depthwise kernel extent (per dimension).
constexpr int64_t kMaxDepthwiseKernel = 7;

// ---- layout ----------------------------------------------------------------

// The memory format an op's output takes: the input's suggested format
// (channels_last in, channels_last out; a channel slice keeps its parent's format).
at::MemoryFormat output_memory_format(const at::Tensor& input);

// A tensor seen as [N, C, S] with all spatial dims collapsed into S.
struct ChannelView {
  int64_t n, c, s;
  int64_t stride_n, stride_c, stride_s;
};

// Returns `t` itself when its spatial dims collapse into one strided dim (NCHW,
// channels_last and channel slices of either); otherwise a copy in the output
// format (exotic strides: correct, not fast).
std::pair<at::Tensor, ChannelView> as_channel_view(const at::Tensor& t);

// `t` if its (N, C, H, W) strides are those of a dense NCHW or NHWC tensor or a
// channel slice of one (inner-most dim stride 1); else a copy in `format`.
at::Tensor with_plain_strides(const at::Tensor& t, at::MemoryFormat format);

// A new tensor of `sizes` like `like` in `format`.
at::Tensor empty_in_format(at::IntArrayRef sizes, const at::Tensor& like, at::MemoryFormat format);

}  // namespace shufflenet
