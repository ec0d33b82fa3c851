// Grouped 1x1 convolution with the channel shuffle fused, on CPU.
//
// Three routes; `forward` picks one per case (SHUFFLENET_CPU_POINTWISE=gemm,
// =onednn or =tile forces one):
// * tiles (pointwise_tile.cpp), channels_last float32 with groups > 1: every
//   group's GEMM, bias, ReLU and the shuffle in one pass per tile of pixels on
//   register-blocked micro-kernels.
// * oneDNN (pointwise_onednn.cpp): one oneDNN convolution with bias and ReLU
//   fused. groups == 1: the shuffle permutes output channels only, so it is
//   moved into the weight rows and bias; groups > 1: the grouped convolution,
//   then the channels_last channel shuffle. Taken for channels_last when the
//   work outweighs its fixed cost per call, for NCHW 7x7 planes at batch > 1
//   with two or more threads (ATen's convolution; the ReLU then in place or in
//   the shuffle's pass), and for half types (which it computes natively,
//   rounding once).
// * GEMM: BLAS through ATen (at::mm_out on strided views, so nothing is
//   copied); what is ours is where each group's output lands:
//   - NCHW: conv channel oc goes to plane shuffle_dest_channel(oc). Inside one
//     shuffle block consecutive conv channels land shuffle_groups planes apart,
//     so a run of a group's rows that stays in one block is a GEMM whose output
//     has leading dimension shuffle_groups*H*W. Bias and ReLU are applied to the
//     run right after its GEMM, while it is in cache.
//   - channels_last, groups == 1: shuffle in the weight rows, the whole batch is
//     one GEMM.
//   - channels_last, groups > 1: output columns of one group are interleaved
//     with the other groups', which BLAS cannot store; a chunk of pixels is
//     computed per group into a buffer in conv-channel order, then
//     channel-shuffled into the output, and bias and ReLU follow on the output
//     rows.
//   Half types with a bias (and float16 always) run it in float32 and round once.
// Backward: grad_output is brought to conv channel order with the ReLU mask
// applied in one pass (gather_channels), then either oneDNN's convolution
// backward through ATen (float32 with two or more threads where BLAS's per-group
// GEMMs lose, see backward_uses_conv_backward; all of it when
// SHUFFLENET_CPU_POINTWISE=onednn) or the GEMMs. GEMMs with groups == 1:
// grad_output stays in output order and the weight rows are permuted instead of
// un-shuffling grad_output; grad_weight and grad_bias rows are permuted back at
// the end.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/util/strides.h>
#include <torch/library.h>

#include <algorithm>
#include <initializer_list>
#include <tuple>
#include <vector>

#include "common/checks.h"
#include "common/index.h"
#include "cpu/cpu_kernels.h"
#include "cpu/output_cache.h"
#include "cpu/pointwise_onednn.h"
#include "cpu/pointwise_tile.h"

namespace shufflenet::cpu {
namespace {

// Elements of the channels_last grouped path's buffer (pixels x output channels),
// 4 MiB of float: larger chunks mean fewer, larger GEMMs, which measured faster
// than keeping the buffer in L2 with many small ones.
constexpr int64_t kChunkElements = 1 << 20;

struct PointwiseShape {
  int64_t n, c_in, c_out, s, groups, shuffle_groups;
  int64_t c_in_g() const { return c_in / groups; }
  int64_t c_out_g() const { return c_out / groups; }
};

// A run of conv output channels [begin, end) inside one group and one shuffle
// block: its rows land shuffle_groups planes apart.
struct Run {
  int64_t group, begin, end;
};

std::vector<Run> shuffle_runs(const PointwiseShape& p) {
  const int64_t block = p.c_out / p.shuffle_groups;
  std::vector<Run> runs;
  for (int64_t g = 0; g < p.groups; ++g) {
    int64_t oc = g * p.c_out_g();
    const int64_t end = oc + p.c_out_g();
    while (oc < end) {
      const int64_t stop = std::min(end, (oc / block + 1) * block);
      runs.push_back({g, oc, stop});
      oc = stop;
    }
  }
  return runs;
}

// [S, C] view of sample n of a channels_last-like tensor (rows = pixels).
at::Tensor pixels_by_channels(const at::Tensor& t, int64_t n) { return t.select(0, n).permute({1, 2, 0}).flatten(0, 1); }
// [C, S] view of sample n of an NCHW-like tensor.
at::Tensor channels_by_pixels(const at::Tensor& t, int64_t n) { return t.select(0, n).flatten(1); }

// Conv channel of each output channel (the shuffle's source), as an index.
at::Tensor shuffle_source_index(const PointwiseShape& p, const at::TensorOptions& options) {
  std::vector<int64_t> source(p.c_out);
  for (int64_t oc = 0; oc < p.c_out; ++oc) source[oc] = shuffle_source_channel(oc, p.c_out, p.shuffle_groups);
  return at::tensor(source, options.dtype(at::kLong));
}

// Output channel of each conv channel (the shuffle's destination), as an index:
// maps rows computed in output order back to conv order.
at::Tensor shuffle_dest_index(const PointwiseShape& p, const at::TensorOptions& options) {
  std::vector<int64_t> dest(p.c_out);
  for (int64_t oc = 0; oc < p.c_out; ++oc) dest[oc] = shuffle_dest_channel(oc, p.c_out, p.shuffle_groups);
  return at::tensor(dest, options.dtype(at::kLong));
}

// Bias in output-channel order, the shuffle applied (undefined stays undefined).
at::Tensor shuffled_bias(const at::Tensor& bias_acc, const PointwiseShape& p) {
  if (p.shuffle_groups == 1 || !bias_acc.defined()) return bias_acc;
  return bias_acc.index_select(0, shuffle_source_index(p, bias_acc.options()));
}

// groups == 1: weight rows and bias in output-channel order, the shuffle applied.
std::pair<at::Tensor, at::Tensor> shuffled_weights(const at::Tensor& w2, const at::Tensor& bias_acc,
                                                   const PointwiseShape& p) {
  if (p.shuffle_groups == 1) return {w2, bias_acc};
  return {w2.index_select(0, shuffle_source_index(p, w2.options())), shuffled_bias(bias_acc, p)};
}

template <typename scalar_t, typename acc_t>
SHUFFLENET_CPU_MULTIVERSION void bias_relu_rows(scalar_t* first_row, int64_t rows, int64_t row_stride, int64_t len,
                                                const acc_t* bias, bool relu) {
  for (int64_t r = 0; r < rows; ++r) {
    scalar_t* p = first_row + r * row_stride;
    const acc_t b = bias ? bias[r] : acc_t(0);
    for (int64_t i = 0; i < len; ++i) p[i] = static_cast<scalar_t>(relu_if(static_cast<acc_t>(p[i]) + b, relu));
  }
}

// NCHW, groups == 1: with the shuffle moved into the weight rows, the whole batch
// is one batched GEMM, out[n] = W @ x[n], bias and ReLU applied per plane after.
void forward_nchw_ungrouped(const at::Tensor& x, const at::Tensor& w2, const at::Tensor& bias_acc, bool relu,
                            at::Tensor& out, const PointwiseShape& p) {
  at::Tensor w, b;
  std::tie(w, b) = shuffled_weights(w2, bias_acc, p);
  at::Tensor o3 = out.view({p.n, p.c_out, p.s});
  at::bmm_out(o3, w.unsqueeze(0).expand({p.n, p.c_out, p.c_in}), x.flatten(2));
  if (!b.defined() && !relu) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "pointwise_conv_epilogue", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* bp = b.defined() ? b.const_data_ptr<acc_t>() : nullptr;
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, p.n * p.c_out, std::max<int64_t>(1, (1 << 15) / p.s), [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        bias_relu_rows<scalar_t, acc_t>(o + plane * p.s, 1, p.s, p.s, bp ? bp + plane % p.c_out : nullptr, relu);
      }
    });
  });
}

void forward_nchw(const at::Tensor& x, const at::Tensor& w2, const at::Tensor& bias_acc, bool relu, at::Tensor& out,
                  const PointwiseShape& p) {
  const std::vector<Run> runs = shuffle_runs(p);
  const int64_t num_runs = static_cast<int64_t>(runs.size());
  const int64_t ld = p.shuffle_groups * p.s;
  for_each_gemm_task(p.n * num_runs, [&](int64_t task) {
    const int64_t n = task / num_runs;
    const Run& run = runs[task % num_runs];
    const int64_t rows = run.end - run.begin;
    const int64_t first = shuffle_dest_channel(run.begin, p.c_out, p.shuffle_groups);
    at::Tensor dst = out.as_strided({rows, p.s}, {ld, 1}, out.storage_offset() + (n * p.c_out + first) * p.s);
    const at::Tensor xg = channels_by_pixels(x, n).narrow(0, run.group * p.c_in_g(), p.c_in_g());
    at::mm_out(dst, w2.narrow(0, run.begin, rows), xg);
    if (!bias_acc.defined() && !relu) return;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "pointwise_conv_epilogue", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const acc_t* b = bias_acc.defined() ? bias_acc.const_data_ptr<acc_t>() + run.begin : nullptr;
      bias_relu_rows<scalar_t, acc_t>(dst.mutable_data_ptr<scalar_t>(), rows, ld, p.s, b, relu);
    });
  });
}

// bias + ReLU over `rows` dense rows of `cols` channels (channels_last output).
template <typename scalar_t, typename acc_t>
SHUFFLENET_CPU_MULTIVERSION void bias_relu_pixels(scalar_t* out, int64_t rows, int64_t cols, const acc_t* bias,
                                                  bool relu) {
  for (int64_t r = 0; r < rows; ++r) {
    scalar_t* row = out + r * cols;
    if (bias) {
      for (int64_t c = 0; c < cols; ++c) row[c] = static_cast<scalar_t>(relu_if(static_cast<acc_t>(row[c]) + bias[c], relu));
    } else {
      for (int64_t c = 0; c < cols; ++c) row[c] = static_cast<scalar_t>(relu_if(static_cast<acc_t>(row[c]), relu));
    }
  }
}

// bias (op-math type, output-channel order; may be undefined) and ReLU over
// dense [pixels, C] rows of a channels_last output, in place.
void bias_relu_pixel_rows(const at::Tensor& rows, const at::Tensor& bias, bool relu) {
  if (!bias.defined() && !relu) return;
  const int64_t cols = rows.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rows.scalar_type(), "pointwise_conv_epilogue", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* b = bias.defined() ? bias.const_data_ptr<acc_t>() : nullptr;
    scalar_t* o = rows.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, rows.size(0), std::max<int64_t>(1, (1 << 15) / cols), [&](int64_t begin, int64_t end) {
      bias_relu_pixels<scalar_t, acc_t>(o + begin * cols, end - begin, cols, b, relu);
    });
  });
}

// [N*H*W, C] view of a channels_last-like tensor whose pixels are evenly spaced
// across the whole batch (dense, or a channel slice of a dense tensor); undefined
// when they are not.
at::Tensor all_pixels_by_channels(const at::Tensor& t) {
  const int64_t h = t.size(2), w = t.size(3), pixel = t.stride(3);
  const bool even = t.stride(1) == 1 && (h == 1 || t.stride(2) == w * pixel) && (t.size(0) == 1 || t.stride(0) == h * w * pixel);
  if (!even) return at::Tensor();
  return t.as_strided({t.size(0) * h * w, t.size(1)}, {pixel, 1});
}

// channels_last, groups == 1: the shuffle is a permutation of the output
// channels, so it is moved into the weight rows (and bias), and the whole batch
// is one GEMM writing the output in place; bias and ReLU follow in one pass.
void forward_nhwc_ungrouped(const at::Tensor& x, const at::Tensor& w2, const at::Tensor& bias_acc, bool relu,
                            at::Tensor& out, const PointwiseShape& p) {
  at::Tensor w, b;
  std::tie(w, b) = shuffled_weights(w2, bias_acc, p);
  const at::Tensor wt = w.t();  // [C_in, C_out]
  const at::Tensor x2 = all_pixels_by_channels(x);
  at::Tensor o2 = out.as_strided({p.n * p.s, p.c_out}, {p.c_out, 1});  // dense channels_last output
  if (x2.defined()) {
    at::mm_out(o2, x2, wt);
  } else {
    for (int64_t n = 0; n < p.n; ++n) {
      at::Tensor o = pixels_by_channels(out, n);
      at::mm_out(o, pixels_by_channels(x, n), wt);
    }
  }
  bias_relu_pixel_rows(o2, b, relu);
}



// Rows of pixels of a channels_last-like tensor that one GEMM can take: the
// whole batch when pixels are evenly spaced across it, else one sample each;
// cut into chunks of at most `max_rows` pixels. Each chunk: its [rows, C] view
// and the index of its first pixel in the batch.
std::vector<std::pair<at::Tensor, int64_t>> pixel_chunks(const at::Tensor& t, int64_t max_rows) {
  std::vector<std::pair<at::Tensor, int64_t>> chunks;
  const int64_t s = t.size(2) * t.size(3);
  const at::Tensor all = all_pixels_by_channels(t);
  const int64_t parts = all.defined() ? 1 : t.size(0);
  for (int64_t part = 0; part < parts; ++part) {
    const at::Tensor rows = all.defined() ? all : pixels_by_channels(t, part);
    for (int64_t r0 = 0; r0 < rows.size(0); r0 += max_rows) {
      chunks.emplace_back(rows.narrow(0, r0, std::min(max_rows, rows.size(0) - r0)), part * s + r0);
    }
  }
  return chunks;
}

// channels_last, groups > 1: one GEMM per group over a chunk of pixels, each
// writing its group's columns of a buffer in conv-channel order (BLAS takes the
// row stride as a leading dimension), then the channel shuffle of the buffer
// into the output, and bias and ReLU (in output order) on the output rows. The
// GEMMs of a chunk are few and large. Without a shuffle the GEMMs write the
// output.
void forward_nhwc_grouped(const at::Tensor& x, const at::Tensor& w2, const at::Tensor& bias_acc, bool relu,
                          at::Tensor& out, const PointwiseShape& p) {
  const int64_t max_rows = std::max<int64_t>(64, kChunkElements / p.c_out);
  const at::Tensor w2t = w2.t();  // [C_in/groups, C_out]
  const at::Tensor bias = shuffled_bias(bias_acc, p);
  at::Tensor out2 = out.as_strided({p.n * p.s, p.c_out}, {p.c_out, 1});  // dense channels_last output
  const bool shuffled = p.shuffle_groups > 1;
  at::Tensor buffer = shuffled ? at::empty({std::min(max_rows, p.n * p.s), p.c_out}, out.options()) : at::Tensor();
  for (const auto& [x_rows, first_pixel] : pixel_chunks(x, max_rows)) {
    const int64_t rows = x_rows.size(0);
    at::Tensor o_rows = out2.narrow(0, first_pixel, rows);
    at::Tensor gemm_out = shuffled ? buffer.narrow(0, 0, rows) : o_rows;
    for (int64_t g = 0; g < p.groups; ++g) {
      at::Tensor dst = gemm_out.narrow(1, g * p.c_out_g(), p.c_out_g());
      at::mm_out(dst, x_rows.narrow(1, g * p.c_in_g(), p.c_in_g()), w2t.narrow(1, g * p.c_out_g(), p.c_out_g()));
    }
    if (shuffled) channel_shuffle_rows_into(gemm_out, o_rows, p.shuffle_groups);
    bias_relu_pixel_rows(o_rows, bias, relu);
  }
}

// A channel permutation as two nested runs: for a < outer, b < inner, output
// channel a*dst_outer + b*dst_inner reads channel a*src_outer + b*src_inner. The
// channel shuffle (outer = groups, inner = C/groups; src (C/groups, 1), dst (1,
// groups)), its inverse (src (1, groups), dst (C/groups, 1)) and the identity
// (outer 1) all have this form, which keeps the loops below plain strided ones.
struct ChannelMap {
  int64_t outer, inner, src_outer, src_inner, dst_outer, dst_inner;
};

ChannelMap identity_map(int64_t c) { return {1, c, 0, 1, 0, 1}; }

// The shuffle with `groups` groups over `c` channels, or (`inverse`) the map that
// takes a shuffled tensor back to conv channel order.
ChannelMap shuffle_map(int64_t c, int64_t groups, bool inverse) {
  if (groups == 1) return identity_map(c);
  const int64_t per_group = c / groups;
  return inverse ? ChannelMap{groups, per_group, 1, groups, per_group, 1}
                 : ChannelMap{groups, per_group, per_group, 1, 1, groups};
}

// out = f(src) on one run of `len` values, src and mask `src_step` apart, out
// `dst_step` apart: f the ReLU when `relu`, else the ReLU mask of `mask` (zero where
// mask <= 0, NaN passing, as threshold_backward) when it is given, else the identity.
// kSrc / kDst: the steps as compile-time constants (0: read them at run time); a
// constant step lets the compiler vectorise the strided loads or stores.
template <typename scalar_t, int64_t kSrc, int64_t kDst>
C10_ALWAYS_INLINE void map_run_steps(const scalar_t* __restrict src, const scalar_t* __restrict mask,
                                     scalar_t* __restrict out, int64_t len, int64_t src_step, int64_t dst_step,
                                     bool relu) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t ss = kSrc > 0 ? kSrc : src_step, ds = kDst > 0 ? kDst : dst_step;
  if (mask != nullptr) {
    for (int64_t i = 0; i < len; ++i) {
      const scalar_t v = src[i * ss];
      out[i * ds] = static_cast<acc_t>(mask[i * ss]) <= acc_t(0) ? scalar_t(0) : v;
    }
  } else if (relu) {
    for (int64_t i = 0; i < len; ++i) out[i * ds] = static_cast<scalar_t>(relu_if(static_cast<acc_t>(src[i * ss]), true));
  } else {
    for (int64_t i = 0; i < len; ++i) out[i * ds] = src[i * ss];
  }
}

template <typename scalar_t>
SHUFFLENET_CPU_MULTIVERSION void map_run(const scalar_t* src, const scalar_t* mask, scalar_t* out, int64_t len,
                                         int64_t src_step, int64_t dst_step, bool relu) {
  // The steps of the shuffles of ShuffleNet (groups 2, 3, 4, 8) and contiguous runs.
#define SHUFFLENET_MAP_RUN_CASE(S, D) \
  if (src_step == (S) && dst_step == (D)) return map_run_steps<scalar_t, S, D>(src, mask, out, len, S, D, relu);
  SHUFFLENET_MAP_RUN_CASE(1, 1)
  SHUFFLENET_MAP_RUN_CASE(2, 1)
  SHUFFLENET_MAP_RUN_CASE(3, 1)
  SHUFFLENET_MAP_RUN_CASE(4, 1)
  SHUFFLENET_MAP_RUN_CASE(8, 1)
  SHUFFLENET_MAP_RUN_CASE(1, 2)
  SHUFFLENET_MAP_RUN_CASE(1, 3)
  SHUFFLENET_MAP_RUN_CASE(1, 4)
  SHUFFLENET_MAP_RUN_CASE(1, 8)
#undef SHUFFLENET_MAP_RUN_CASE
  map_run_steps<scalar_t, 0, 0>(src, mask, out, len, src_step, dst_step, relu);
}

// One pass over a tensor's channels: out (dense in `fmt`) = the channels of `src`
// permuted by `map`, with f of map_run applied. The channel shuffle or its
// inverse and the ReLU or its mask in one pass instead of two.
at::Tensor gather_channels(const at::Tensor& src_in, const at::Tensor& mask_in, const ChannelMap& map, bool relu,
                           at::MemoryFormat fmt) {
  const at::Tensor src = src_in.contiguous(fmt);
  const at::Tensor mask = mask_in.defined() ? mask_in.contiguous(fmt) : mask_in;
  at::Tensor out = at::empty(src.sizes(), src.options().memory_format(fmt));
  const int64_t n = src.size(0), c = src.size(1), s = src.size(2) * src.size(3);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "pointwise_conv_gather", [&] {
    const scalar_t* sp = src.const_data_ptr<scalar_t>();
    const scalar_t* mp = mask.defined() ? mask.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    if (fmt == at::MemoryFormat::ChannelsLast) {
      // Per pixel: `outer` strided runs of `inner` channels (without a
      // permutation: one run over all the pixels of the task).
      at::parallel_for(0, n * s, std::max<int64_t>(1, (1 << 14) / c), [&](int64_t begin, int64_t end) {
        if (map.outer == 1 && map.src_inner == 1 && map.dst_inner == 1) {
          map_run<scalar_t>(sp + begin * c, mp ? mp + begin * c : nullptr, op + begin * c, (end - begin) * c, 1, 1,
                            relu);
          return;
        }
        for (int64_t px = begin; px < end; ++px) {
          for (int64_t a = 0; a < map.outer; ++a) {
            const int64_t from = px * c + a * map.src_outer;
            map_run<scalar_t>(sp + from, mp ? mp + from : nullptr, op + px * c + a * map.dst_outer, map.inner,
                              map.src_inner, map.dst_inner, relu);
          }
        }
      });
    } else {
      // Per plane: one contiguous run of S pixels; task k of a sample is the pair
      // (a, b) = (k / inner, k % inner).
      at::parallel_for(0, n * c, std::max<int64_t>(1, (1 << 14) / s), [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          const int64_t sample = t / c, a = t % c / map.inner, b = t % c % map.inner;
          const int64_t from = (sample * c + a * map.src_outer + b * map.src_inner) * s;
          const int64_t to = (sample * c + a * map.dst_outer + b * map.dst_inner) * s;
          map_run<scalar_t>(sp + from, mp ? mp + from : nullptr, op + to, s, 1, 1, relu);
        }
      });
    }
  });
  return out;
}

PointwiseShape make_shape(const at::Tensor& input, const at::Tensor& weight, int64_t groups, int64_t shuffle_groups) {
  return {input.size(0), input.size(1), weight.size(0), input.size(2) * input.size(3), groups, shuffle_groups};
}

// `y` with the strides of a dense tensor of its sizes in `fmt` (what the fake
// kernel promises); copied only when they differ.
at::Tensor with_output_strides(const at::Tensor& y, at::MemoryFormat fmt) {
  const c10::DimVector strides = fmt == at::MemoryFormat::ChannelsLast
                                     ? c10::DimVector(c10::get_channels_last_strides_2d(y.sizes()))
                                     : c10::contiguous_strides(y.sizes());
  if (y.strides() == at::IntArrayRef(strides)) return y;
  at::Tensor out = at::empty_strided(y.sizes(), strides, y.options());
  out.copy_(y);
  return out;
}

// grad_output (output channel order) back in conv channel order, dense in `fmt`,
// with the ReLU mask of relu_out (when defined) applied: the inverse of a shuffle
// with `groups` groups. One pass, except for channels_last with short runs per
// group (fewer than 16 channels, V1 g=8 at 96 channels), where the gather's strided
// runs measured slower than the mask and then our channel shuffle.
at::Tensor conv_order_grad(const at::Tensor& grad_output, const at::Tensor& relu_out, int64_t groups,
                           at::MemoryFormat fmt) {
  const int64_t c = grad_output.size(1);
  if (!relu_out.defined() && groups == 1) return grad_output.contiguous(fmt);
  if (fmt == at::MemoryFormat::ChannelsLast && groups > 1 && c / groups < 16) {
    const at::Tensor go = relu_out.defined() ? at::threshold_backward(grad_output, relu_out, 0) : grad_output;
    return with_output_strides(channel_shuffle_cpu(go, c / groups), fmt);
  }
  return gather_channels(grad_output, relu_out, shuffle_map(c, groups, true), false, fmt);
}

// oneDNN route: one oneDNN convolution with bias and ReLU fused (the shuffle
// moved into the weight rows when groups == 1), or for groups > 1 the grouped
// convolution followed by the channel shuffle. Undefined when oneDNN rejects it.
at::Tensor forward_onednn(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias, bool relu,
                          const PointwiseShape& p, at::MemoryFormat fmt) {
  at::Tensor w = weight, b = bias;
  if (p.groups == 1 && p.shuffle_groups > 1) {
    const at::Tensor source = shuffle_source_index(p, weight.options());
    w = weight.index_select(0, source);
    if (b.defined()) b = b.index_select(0, source);
  }
  const bool shuffled = p.groups > 1 && p.shuffle_groups > 1;
  // NCHW: ATen's convolution has no fused ReLU; it then goes into the shuffle's pass.
  const bool relu_in_shuffle = shuffled && fmt != at::MemoryFormat::ChannelsLast;
  at::Tensor y = onednn_conv1x1(input, w, b, p.groups, relu && !relu_in_shuffle);
  if (!y.defined()) return y;
  if (relu_in_shuffle) return gather_channels(y, at::Tensor(), shuffle_map(p.c_out, p.shuffle_groups, false), relu, fmt);
  if (shuffled) y = channel_shuffle_cpu(y, p.shuffle_groups);
  return with_output_strides(y, fmt);
}

// The GEMM route: BLAS GEMMs on strided views, the shuffle fused into where
// they write, bias and ReLU in a second pass over the output (still in cache
// for the NCHW grouped path).
at::Tensor forward_gemm(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias, bool relu,
                        const PointwiseShape& p, at::MemoryFormat fmt) {
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  at::Tensor out = empty_cached({p.n, p.c_out, input.size(2), input.size(3)}, input, fmt);
  const at::Tensor x = with_plain_strides(input, cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  const at::Tensor w2 = weight.reshape({p.c_out, p.c_in_g()}).contiguous();
  at::Tensor bias_acc;
  if (bias.defined()) bias_acc = bias.to(at::toOpMathType(input.scalar_type())).contiguous();
  if (cl && p.groups == 1) {
    forward_nhwc_ungrouped(x, w2, bias_acc, relu, out, p);
  } else if (cl) {
    forward_nhwc_grouped(x, w2, bias_acc, relu, out, p);
  } else if (p.groups == 1) {
    forward_nchw_ungrouped(x, w2, bias_acc, relu, out, p);
  } else {
    forward_nchw(x, w2, bias_acc, relu, out, p);
  }
  return out;
}

// Multiply-adds per thread below which the GEMM route wins: a oneDNN call has a
// fixed cost (primitive lookup, weight reorder) of some 30-40 us, and on these
// shapes its kernels are 0-45% faster than BLAS in float32 (AMD EPYC, one
// thread, channels_last, measured interleaved: at batch 1, 2.6-3.8M
// multiply-adds, BLAS was 0-35% faster; at batch 8, 21-30M, oneDNN 0-45%
// faster). Half types with a bias compare against the float32 GEMMs.
constexpr int64_t kOneDnnMinMacsPerThread = int64_t{8} << 20;

int64_t multiply_adds(const PointwiseShape& p) { return p.n * p.s * p.c_in_g() * p.c_out; }

bool large_for_onednn(const PointwiseShape& p) {
  return multiply_adds(p) >= kOneDnnMinMacsPerThread * std::max(1, at::get_num_threads());
}

bool forward_uses_onednn(const PointwiseShape& p, at::ScalarType dtype, bool cl, bool has_bias, bool relu) {
  const PointwiseRoute route = requested_pointwise_route();
  if (route == PointwiseRoute::kGemm || !onednn_conv_usable(dtype)) return false;
  if (route == PointwiseRoute::kOneDnn) return true;
  // NCHW: oneDNN reorders input and output to channels_last around its kernel;
  // ATen's convolution (what onednn_conv1x1 runs for NCHW) is taken at batch > 1 on
  // 7x7 planes with two or more threads, where the per-sample GEMMs have 49 columns
  // and PyTorch was up to 1.17x faster (ReLU convs, and g=8 with 64 small GEMMs);
  // the ReLU then runs in place, or inside the shuffle's pass.
  if (dtype == at::kFloat) {
    if (cl) return large_for_onednn(p);
    return p.n > 1 && p.s <= 49 && at::get_num_threads() > 1 && (relu || p.groups >= 8);
  }
  // Half types: oneDNN computes them natively, accumulating in float32 and
  // rounding once after bias and ReLU; the GEMM route needs a float32 copy when
  // there is a bias (see below).
  return cl || (has_bias && large_for_onednn(p));
}

// Whether channels_last input takes the tile route (pointwise_tile.cpp): grouped
// float32 convs, where BLAS runs one small GEMM per group and both BLAS and oneDNN
// need a second pass for the shuffle. Measured (AMD EPYC, one thread, V1 g=3 and
// g=8 shapes at 28x28/14x14/7x7, batch 1 and 8, best of 20 interleaved rounds):
// 1.3-3.8x faster than oneDNN's grouped conv + channel_shuffle. Half types stay on
// oneDNN, which computes bfloat16 natively here and was 1.1-2.5x faster than the
// tiles (which convert to float32).
bool forward_uses_tiles(const PointwiseShape& p, at::ScalarType dtype) {
  if (!pointwise_tiles_dtype(dtype)) return false;
  const PointwiseRoute route = requested_pointwise_route();
  if (route == PointwiseRoute::kTile) return true;
  if (route != PointwiseRoute::kAuto) return false;
  if (dtype != at::kFloat) return false;
  // Ungrouped: few pixels (batch 1 up to 28x28), where the tiles read weights packed
  // once while oneDNN reorders its weight on every call and BLAS packs per call
  // (V2 branch convs at batch 1, one thread: 1.1-1.6x faster than PyTorch, against
  // 0.9-1.1x for oneDNN and BLAS); with few pixels and many output channels (464 ->
  // 1024 at 7x7) the tiles also split the output channels over the threads.
  return p.groups > 1 || (p.shuffle_groups == 1 && p.n * p.s <= 784);
}

// The tile route over every pixel of the batch as one set of rows.
at::Tensor forward_tiles(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias, bool relu,
                         const PointwiseShape& p) {
  at::Tensor out = empty_cached({p.n, p.c_out, input.size(2), input.size(3)}, input, at::MemoryFormat::ChannelsLast);
  const at::Tensor x = with_plain_strides(input, at::MemoryFormat::ChannelsLast);
  at::Tensor rows = all_pixels_by_channels(x);
  if (!rows.defined()) {
    // Samples not evenly spaced (a strided batch): one dense copy.
    at::Tensor dense = at::empty_like(x, at::MemoryFormat::ChannelsLast);
    dense.copy_(x);
    rows = all_pixels_by_channels(dense);
  }
  at::Tensor out_rows = out.as_strided({p.n * p.s, p.c_out}, {p.c_out, 1});
  pointwise_tiles_forward(rows, weight, bias, p.groups, p.shuffle_groups, relu, out_rows);
  return out;
}

at::Tensor forward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& b, bool relu,
                   const PointwiseShape& p, at::MemoryFormat fmt) {
  const at::ScalarType dtype = input.scalar_type();
  // No input channels (an empty reduction: the output is act(bias)): the GEMM route
  // handles it; the tiles and oneDNN's convolution do not.
  const bool empty_reduction = p.c_in_g() == 0;
  if (!empty_reduction && fmt == at::MemoryFormat::ChannelsLast && forward_uses_tiles(p, dtype)) {
    return forward_tiles(input, weight, b, relu, p);
  }
  if (!empty_reduction && forward_uses_onednn(p, dtype, fmt == at::MemoryFormat::ChannelsLast, b.defined(), relu)) {
    at::Tensor y = forward_onednn(input, weight, b, relu, p, fmt);
    if (y.defined()) return y;
  }
  // Half types on the GEMM route: a half-type GEMM rounds its result, and a bias
  // added after would round it again, so with a bias the op runs in float32 and
  // rounds once at the end. float16 always does: ATen's float16 GEMM on a CPU
  // without AVX512-FP16 measured 20x slower than converting to float32.
  if (dtype == at::kHalf || (dtype == at::kBFloat16 && b.defined())) {
    const at::Tensor bf = b.defined() ? b.to(at::kFloat) : b;
    return forward(input.to(at::kFloat), weight.to(at::kFloat), bf, relu, p, fmt).to(dtype);
  }
  return forward_gemm(input, weight, b, relu, p, fmt);
}

// One pixel per sample (a 1x1 map, e.g. after global pooling) and N > 1, in NCHW:
// NCHW and channels_last are then the same [N, C] rows, and the channels_last routes
// take the whole batch as one GEMM, where the NCHW routes ran one product per sample.
// Forward, 1024 -> 1000 channels, batch 8 (AMD EPYC): 9.4 ms -> 0.28 ms on one thread,
// 4.7 -> 0.21 ms on two; backward 3.5-4.1 ms at batch 2 and 8 on two threads. A
// single sample stays on the NCHW route, whose matrix-vector product was 1.6-2x
// faster than a one-row tile. True when that applies to `tensors`, which must all
// have dense channels (stride 1).
bool one_pixel_rows(const PointwiseShape& p, at::MemoryFormat fmt, std::initializer_list<const at::Tensor*> tensors) {
  if (p.s != 1 || p.n < 2 || fmt == at::MemoryFormat::ChannelsLast) return false;
  return std::all_of(tensors.begin(), tensors.end(),
                     [](const at::Tensor* t) { return !t->defined() || t->stride(1) == 1; });
}

// A [N, C, 1, 1] tensor with dense channels seen with channels_last strides (the same memory).
at::Tensor as_pixel_rows(const at::Tensor& t) {
  if (!t.defined()) return t;
  const int64_t pixel = t.stride(0);
  return t.as_strided(t.sizes(), {pixel, 1, pixel, pixel});
}

// A dense [N, C, 1, 1] result given NCHW strides (the same memory).
at::Tensor as_nchw(const at::Tensor& t) {
  if (!t.defined() || t.numel() == 0) return t;
  return t.as_strided(t.sizes(), {t.size(1), 1, 1, 1});
}

at::Tensor pointwise_conv_cpu(const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                              int64_t groups, int64_t shuffle_groups, bool relu) {
  // Helper ATen calls below are implementation details, not part of any autograd graph.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_pointwise_conv_args(input, weight, bias, groups, shuffle_groups);
  const PointwiseShape p = make_shape(input, weight, groups, shuffle_groups);
  const at::MemoryFormat fmt = output_memory_format(input);
  if (p.n * p.s == 0) return empty_in_format({p.n, p.c_out, input.size(2), input.size(3)}, input, fmt);
  const at::Tensor b = bias.has_value() && bias->defined() ? *bias : at::Tensor();
  if (one_pixel_rows(p, fmt, {&input})) {
    const at::Tensor out = forward(as_pixel_rows(input), weight, b, relu, p, at::MemoryFormat::ChannelsLast);
    return as_nchw(out);
  }
  return forward(input, weight, b, relu, p, fmt);
}

// Whether the backward takes oneDNN's convolution backward (through ATen's
// convolution_backward, as PyTorch's autograd does) instead of the GEMMs.
bool backward_uses_conv_backward(const PointwiseShape& p, at::ScalarType dtype, bool cl) {
  const PointwiseRoute route = requested_pointwise_route();
  if (route == PointwiseRoute::kGemm || !onednn_conv_usable(dtype)) return false;
  if (route == PointwiseRoute::kOneDnn) return true;
  const int64_t threads = at::get_num_threads();
  if (dtype != at::kFloat || threads < 2) return false;
  const int64_t pixels = p.n * p.s;
  if (cl) {
    // Without a shuffle (nothing for the GEMM route to fuse) and thin per-group
    // GEMMs over many pixels, oneDNN's blocked kernels split across the threads
    // better than one BLAS call per group: PyTorch was 1.05-1.65x faster at batch 8
    // (V2 28x28 ungrouped, V1 g=3/g=8 expand convs at 14x14 and 28x28).
    const double pixels_per_weight = static_cast<double>(pixels) / static_cast<double>(p.c_in_g() * p.c_out_g());
    return p.shuffle_groups == 1 && ((pixels >= 1568 && pixels_per_weight >= 0.2) || pixels_per_weight >= 1.0);
  }
  // NCHW on 7x7 planes at batch > 1: one small GEMM per sample and group (g=8: 64
  // of them), where oneDNN's convolution over the whole batch was up to 1.15x faster.
  return p.n > 1 && p.s <= 49 && (p.groups >= 8 || p.c_in_g() * p.c_out_g() >= (int64_t{1} << 17));
}

// grad_weight[group rows] += a @ b, accumulated in the op-math type (float for
// half types) whatever the input dtype.
void accumulate_gemm(at::Tensor& acc, const at::Tensor& a, const at::Tensor& b) {
  if (acc.scalar_type() == a.scalar_type()) {
    acc.addmm_(a, b);
  } else {
    acc.add_(at::mm(a, b));
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(const at::Tensor& grad_output, const at::Tensor& input,
                                                        const at::Tensor& weight, const at::Tensor& relu_out,
                                                        const PointwiseShape& p, at::MemoryFormat fmt,
                                                        std::array<bool, 3> output_mask);

std::tuple<at::Tensor, at::Tensor, at::Tensor> pointwise_conv_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const c10::optional<at::Tensor>& relu_output, int64_t groups, int64_t shuffle_groups,
    std::array<bool, 3> output_mask) {
  // Helper ATen calls below are implementation details, not part of any autograd graph.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  constexpr const char* op = "pointwise_conv_backward";
  check_pointwise_conv_args(input, weight, c10::nullopt, groups, shuffle_groups);
  const PointwiseShape p = make_shape(input, weight, groups, shuffle_groups);
  const std::vector<int64_t> out_sizes = {p.n, p.c_out, input.size(2), input.size(3)};
  check_grad_output(grad_output, out_sizes, input, op);
  check_relu_output(relu_output, out_sizes, input, op);
  const at::MemoryFormat fmt = output_memory_format(input);
  const at::Tensor relu_out = relu_output.has_value() && relu_output->defined() ? *relu_output : at::Tensor();
  if (one_pixel_rows(p, fmt, {&grad_output, &input, &relu_out})) {
    auto [gi, gw, gb] = backward(as_pixel_rows(grad_output), as_pixel_rows(input), weight, as_pixel_rows(relu_out), p,
                                 at::MemoryFormat::ChannelsLast, output_mask);
    return {as_nchw(gi), gw, gb};
  }
  return backward(grad_output, input, weight, relu_out, p, fmt, output_mask);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(const at::Tensor& grad_output, const at::Tensor& input,
                                                        const at::Tensor& weight, const at::Tensor& relu_out,
                                                        const PointwiseShape& p, at::MemoryFormat fmt,
                                                        std::array<bool, 3> output_mask) {
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  if (input.scalar_type() == at::kHalf && !onednn_conv_usable(at::kHalf)) {
    // float16 GEMMs are slow without AVX512-FP16 (see forward): run in float32.
    const at::Tensor relu_f = relu_out.defined() ? relu_out.to(at::kFloat) : relu_out;
    auto [gi, gw, gb] = backward(grad_output.to(at::kFloat), input.to(at::kFloat), weight.to(at::kFloat), relu_f, p,
                                 fmt, output_mask);
    return {gi.to(at::kHalf), gw.to(at::kHalf), gb.to(at::kHalf)};
  }

  const auto empty = [&] { return at::empty({0}, weight.options()); };
  if (p.n * p.s > 0 && backward_uses_conv_backward(p, input.scalar_type(), cl)) {
    // grad_output in conv channel order with the ReLU mask applied (one pass;
    // none when there is neither), then oneDNN's convolution backward.
    const at::Tensor go = relu_out.defined() || p.shuffle_groups > 1
                              ? conv_order_grad(grad_output, relu_out, p.shuffle_groups, fmt)
                              : grad_output;
    const int64_t zero[2] = {0, 0}, one[2] = {1, 1};
    auto [gi, gw, gb] = at::convolution_backward(go, input, weight, at::IntArrayRef(p.c_out), one, zero, one, false,
                                                 zero, p.groups, output_mask);
    return {gi.defined() ? with_output_strides(gi, fmt) : empty(),
            gw.defined() ? gw.reshape({p.c_out, p.c_in_g()}).view(weight.sizes()) : empty(),
            gb.defined() ? gb : empty()};
  }

  at::Tensor w2 = weight.reshape({p.c_out, p.c_in_g()});
  // Rows of grad_weight and grad_bias computed in output order go back to conv
  // order through this index (undefined: already in conv order).
  at::Tensor to_conv_order;
  int64_t unshuffle_groups = p.shuffle_groups;
  if (p.shuffle_groups > 1 && p.groups == 1) {
    // The shuffle is a permutation of the output channels: keep grad_output in
    // output order and permute the weight rows instead.
    w2 = w2.index_select(0, shuffle_source_index(p, weight.options()));
    to_conv_order = shuffle_dest_index(p, weight.options());
    unshuffle_groups = 1;
  }
  // grad_output dense in conv order (groups > 1: the inverse shuffle) with the
  // ReLU mask applied, in one pass.
  const at::Tensor go = conv_order_grad(grad_output, relu_out, unshuffle_groups, fmt);

  at::Tensor grad_input = empty();
  at::Tensor grad_weight = empty();
  at::Tensor grad_bias = empty();
  const at::Tensor x = with_plain_strides(input, cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  const int64_t cin_g = p.c_in_g(), cout_g = p.c_out_g();

  if (output_mask[0]) grad_input = empty_in_format(input.sizes(), input, fmt);
  if (output_mask[0] && grad_input.numel() > 0) {
    if (cl) {
      // [N*S, C_in/groups] column block of grad_input = [N*S, C_out/groups] @ W_g.
      const at::Tensor go_rows = go.permute({0, 2, 3, 1}).reshape({p.n * p.s, p.c_out});  // dense: a view
      at::Tensor gi_rows = grad_input.permute({0, 2, 3, 1}).reshape({p.n * p.s, p.c_in});
      for_each_gemm_task(p.groups, [&](int64_t g) {
        at::Tensor dst = gi_rows.narrow(1, g * cin_g, cin_g);
        at::mm_out(dst, go_rows.narrow(1, g * cout_g, cout_g), w2.narrow(0, g * cout_g, cout_g));
      });
    } else {
      for_each_gemm_task(p.n * p.groups, [&](int64_t task) {
        const int64_t n = task / p.groups, g = task % p.groups;
        at::Tensor dst = channels_by_pixels(grad_input, n).narrow(0, g * cin_g, cin_g);
        at::mm_out(dst, w2.narrow(0, g * cout_g, cout_g).t(), channels_by_pixels(go, n).narrow(0, g * cout_g, cout_g));
      });
    }
  }
  if (output_mask[1]) {
    at::Tensor gw_acc = at::zeros({p.c_out, cin_g}, weight.options().dtype(at::toOpMathType(weight.scalar_type())));
    // channels_last with pixels evenly spaced over the batch: one GEMM per group
    // over every pixel ([C_out/g, N*S] @ [N*S, C_in/g]); 4-23% faster than one
    // accumulating GEMM per sample (batch 8, V1/V2 shapes, one thread).
    const at::Tensor go_all = cl ? all_pixels_by_channels(go) : at::Tensor();
    const at::Tensor x_all = cl ? all_pixels_by_channels(x) : at::Tensor();
    // One task per group, samples summed in order: deterministic.
    for_each_gemm_task(p.groups, [&](int64_t g) {
      at::Tensor acc = gw_acc.narrow(0, g * cout_g, cout_g);
      if (go_all.defined() && x_all.defined()) {
        accumulate_gemm(acc, go_all.narrow(1, g * cout_g, cout_g).t(), x_all.narrow(1, g * cin_g, cin_g));
        return;
      }
      for (int64_t n = 0; n < p.n; ++n) {
        if (cl) {
          accumulate_gemm(acc, pixels_by_channels(go, n).narrow(1, g * cout_g, cout_g).t(),
                          pixels_by_channels(x, n).narrow(1, g * cin_g, cin_g));
        } else {
          accumulate_gemm(acc, channels_by_pixels(go, n).narrow(0, g * cout_g, cout_g),
                          channels_by_pixels(x, n).narrow(0, g * cin_g, cin_g).t());
        }
      }
    });
    if (to_conv_order.defined()) gw_acc = gw_acc.index_select(0, to_conv_order);
    grad_weight = gw_acc.to(weight.scalar_type()).view(weight.sizes());
  }
  if (output_mask[2]) {
    at::Tensor gb = go.sum({0, 2, 3}, false, at::toOpMathType(go.scalar_type()));
    if (to_conv_order.defined()) gb = gb.index_select(0, to_conv_order);
    grad_bias = gb.to(weight.scalar_type());
  }
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(shufflenet, CPU, m) {
  m.impl("pointwise_conv", &pointwise_conv_cpu);
  m.impl("pointwise_conv_backward", &pointwise_conv_backward_cpu);
}

}  // namespace shufflenet::cpu
