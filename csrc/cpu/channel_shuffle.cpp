// Channel-gather family on CPU: channel_shuffle, concat_shuffle and
// concat_shuffle_backward are all "output channel c copies channel table[c] of
// one of the sources", one pass over the data.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>
#include <vector>

#include "common/checks.h"
#include "common/index.h"
#include "cpu/cpu_kernels.h"

namespace shufflenet::cpu {
namespace {

// Elements moved per parallel task; small planes are batched into one task.
constexpr int64_t kGatherGrain = 1 << 15;

template <typename scalar_t>
struct GatherSource {
  const scalar_t* data;
  ChannelView view;
};

// dst (a dense NCHW-like or NHWC-like tensor seen as [N, C, S]) gets, for each
// channel c, channel table[c].channel of source table[c].operand.
template <typename scalar_t>
void gather_channels(
    scalar_t* dst, const ChannelView& dv, const std::vector<GatherSource<scalar_t>>& srcs,
    const std::vector<ChannelSource>& table) {
  const int64_t n_size = dv.n, c_size = dv.c, s_size = dv.s;
  if (dv.stride_s == 1) {
    // Planar output: each output channel plane is one contiguous run copied
    // from one source plane (a memcpy when the source plane is contiguous too).
    const int64_t grain = std::max<int64_t>(1, kGatherGrain / std::max<int64_t>(s_size, 1));
    at::parallel_for(0, n_size * c_size, grain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t n = i / c_size, c = i % c_size;
        const auto& src = srcs[table[c].operand];
        const scalar_t* sp = src.data + n * src.view.stride_n + table[c].channel * src.view.stride_c;
        scalar_t* dp = dst + n * dv.stride_n + c * dv.stride_c;
        if (src.view.stride_s == 1) {
          std::memcpy(dp, sp, s_size * sizeof(scalar_t));
        } else {
          for (int64_t s = 0; s < s_size; ++s) dp[s] = sp[s * src.view.stride_s];
        }
      }
    });
    return;
  }
  // Channels-last output: per pixel, a permutation of C contiguous values.
  // Offsets of every output channel inside its source pixel, computed once.
  std::vector<int64_t> offset(c_size);
  std::vector<int64_t> operand(c_size);
  for (int64_t c = 0; c < c_size; ++c) {
    operand[c] = table[c].operand;
    offset[c] = table[c].channel * srcs[table[c].operand].view.stride_c;
  }
  const int64_t grain = std::max<int64_t>(1, kGatherGrain / std::max<int64_t>(c_size, 1));
  at::parallel_for(0, n_size * s_size, grain, [&](int64_t begin, int64_t end) {
    const scalar_t* base[2] = {nullptr, nullptr};
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = i / s_size, s = i % s_size;
      for (size_t k = 0; k < srcs.size(); ++k) {
        base[k] = srcs[k].data + n * srcs[k].view.stride_n + s * srcs[k].view.stride_s;
      }
      scalar_t* dp = dst + n * dv.stride_n + s * dv.stride_s;
      if (srcs.size() == 1) {
        const scalar_t* b0 = base[0];
        for (int64_t c = 0; c < c_size; ++c) dp[c] = b0[offset[c]];
      } else {
        for (int64_t c = 0; c < c_size; ++c) dp[c] = base[operand[c]][offset[c]];
      }
    }
  });
}

// Runs the gather from `sources` into `dst` (already allocated, dense).
void gather_into(at::Tensor& dst, const std::vector<at::Tensor>& sources, const std::vector<ChannelSource>& table) {
  if (dst.numel() == 0) return;
  const ChannelView dv = as_channel_view(dst).second;  // dense: never a copy
  std::vector<std::pair<at::Tensor, ChannelView>> views;
  views.reserve(sources.size());
  for (const auto& s : sources) views.push_back(as_channel_view(s));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dst.scalar_type(), "shufflenet_gather_channels", [&] {
    std::vector<GatherSource<scalar_t>> srcs;
    for (const auto& v : views) srcs.push_back({v.first.const_data_ptr<scalar_t>(), v.second});
    gather_channels<scalar_t>(dst.mutable_data_ptr<scalar_t>(), dv, srcs, table);
  });
}

at::Tensor concat_shuffle_cpu(const at::Tensor& a, const at::Tensor& b, int64_t groups) {
  check_concat_shuffle_args(a, b, groups);
  const int64_t channels_a = a.size(1), channels = a.size(1) + b.size(1);
  auto sizes = a.sizes().vec();
  sizes[1] = channels;
  at::Tensor out = empty_in_format(sizes, a, output_memory_format(a));
  std::vector<ChannelSource> table(channels);
  for (int64_t c = 0; c < channels; ++c) table[c] = concat_shuffle_source(c, channels_a, channels, groups);
  gather_into(out, {a, b}, table);
  return out;
}

std::tuple<at::Tensor, at::Tensor> concat_shuffle_backward_cpu(
    const at::Tensor& grad_output, int64_t groups, int64_t channels_a) {
  check_concat_shuffle_backward_args(grad_output, groups, channels_a);
  const int64_t channels = grad_output.size(1);
  const at::MemoryFormat fmt = output_memory_format(grad_output);
  auto sizes_a = grad_output.sizes().vec();
  auto sizes_b = grad_output.sizes().vec();
  sizes_a[1] = channels_a;
  sizes_b[1] = channels - channels_a;
  at::Tensor grad_a = empty_in_format(sizes_a, grad_output, fmt);
  at::Tensor grad_b = empty_in_format(sizes_b, grad_output, fmt);
  // Concatenated channel j sits at output channel shuffle_dest_channel(j).
  std::vector<ChannelSource> table_a(channels_a), table_b(channels - channels_a);
  for (int64_t j = 0; j < channels_a; ++j) table_a[j] = {0, shuffle_dest_channel(j, channels, groups)};
  for (int64_t j = channels_a; j < channels; ++j) {
    table_b[j - channels_a] = {0, shuffle_dest_channel(j, channels, groups)};
  }
  gather_into(grad_a, {grad_output}, table_a);
  gather_into(grad_b, {grad_output}, table_b);
  return {grad_a, grad_b};
}

}  // namespace

at::Tensor channel_shuffle_cpu(const at::Tensor& input, int64_t groups) {
  check_channel_shuffle_args(input, groups);
  const int64_t channels = input.size(1);
  at::Tensor out = empty_in_format(input.sizes(), input, output_memory_format(input));
  std::vector<ChannelSource> table(channels);
  for (int64_t c = 0; c < channels; ++c) table[c] = {0, shuffle_source_channel(c, channels, groups)};
  gather_into(out, {input}, table);
  return out;
}

TORCH_LIBRARY_IMPL(shufflenet, CPU, m) {
  m.impl("channel_shuffle", &channel_shuffle_cpu);
  m.impl("concat_shuffle", &concat_shuffle_cpu);
  m.impl("concat_shuffle_backward", &concat_shuffle_backward_cpu);
}

}  // namespace shufflenet::cpu
