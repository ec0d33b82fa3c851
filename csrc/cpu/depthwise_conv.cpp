// Depthwise 2-D convolution on CPU, forward and backward, NCHW and channels_last.
//
// NCHW: one task per (n, c) plane; each output row is accumulated in a float row
// buffer tap by tap over the range of outputs whose tap is inside the input
// (conv_tap_output_begin/end), so the inner loop has no bounds checks and
// vectorises (contiguous for stride 1).
// channels_last: one task per output row; every tap is a multiply-add over C
// contiguous channels, with the weights transposed to [taps, C].
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/checks.h"
#include "common/index.h"

namespace shufflenet::cpu {
namespace {

// Multiply-adds per parallel task, to batch small planes/rows into one task.
constexpr int64_t kDepthwiseGrain = 1 << 15;
// The channels_last weight gradient is reduced over at most this many row
// chunks; the split depends only on the shape, so results do not depend on the
// thread count.
constexpr int64_t kWeightGradChunks = 64;

struct Geometry {
  int64_t n, c, h, w, ho, wo, kh, kw, sh, sw, ph, pw, dh, dw;
  int64_t taps() const { return kh * kw; }
};

// Strides of an input read in place: (n, c, h, w).
struct Strides4 {
  int64_t n, c, h, w;
};

Strides4 strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

int64_t grain_for(int64_t work_per_item) { return std::max<int64_t>(1, kDepthwiseGrain / std::max<int64_t>(1, work_per_item)); }

template <typename scalar_t, typename acc_t>
inline void store_row(scalar_t* dst, const acc_t* src, int64_t count, bool relu) {
  for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<scalar_t>(relu_if(src[i], relu));
}

// ---- forward -------------------------------------------------------------------

template <typename scalar_t, typename acc_t>
void forward_nchw(const scalar_t* in, Strides4 is, const acc_t* weight /*[C, taps]*/, const acc_t* bias,
                  scalar_t* out /*dense NCHW*/, const Geometry& g, bool relu) {
  at::parallel_for(0, g.n * g.c, grain_for(g.ho * g.wo * g.taps()), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> row(g.wo);
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / g.c, c = plane % g.c;
      const scalar_t* ip = in + n * is.n + c * is.c;
      const acc_t* wp = weight + c * g.taps();
      scalar_t* op = out + plane * g.ho * g.wo;
      for (int64_t oh = 0; oh < g.ho; ++oh) {
        std::fill(row.begin(), row.end(), bias ? bias[c] : acc_t(0));
        for (int64_t kh = 0; kh < g.kh; ++kh) {
          const int64_t ih = conv_input_index(oh, kh, g.sh, g.ph, g.dh);
          if (ih < 0 || ih >= g.h) continue;
          const scalar_t* irow = ip + ih * is.h;
          for (int64_t kw = 0; kw < g.kw; ++kw) {
            const acc_t wv = wp[kh * g.kw + kw];
            const int64_t lo = conv_tap_output_begin(kw, g.sw, g.pw, g.dw);
            const int64_t hi = conv_tap_output_end(g.w, kw, g.sw, g.pw, g.dw, g.wo);
            const int64_t off = kw * g.dw - g.pw;
            if (g.sw == 1) {
              for (int64_t ow = lo; ow < hi; ++ow) row[ow] += wv * static_cast<acc_t>(irow[ow + off]);
            } else {
              for (int64_t ow = lo; ow < hi; ++ow) row[ow] += wv * static_cast<acc_t>(irow[ow * g.sw + off]);
            }
          }
        }
        store_row(op + oh * g.wo, row.data(), g.wo, relu);
      }
    }
  });
}

template <typename scalar_t, typename acc_t>
void forward_nhwc(const scalar_t* in, Strides4 is, const acc_t* weight_t /*[taps, C]*/, const acc_t* bias,
                  scalar_t* out /*dense NHWC*/, const Geometry& g, bool relu) {
  at::parallel_for(0, g.n * g.ho, grain_for(g.wo * g.c * g.taps()), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(g.c);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / g.ho, oh = r % g.ho;
      for (int64_t ow = 0; ow < g.wo; ++ow) {
        if (bias) {
          std::copy(bias, bias + g.c, acc.begin());
        } else {
          std::fill(acc.begin(), acc.end(), acc_t(0));
        }
        for (int64_t kh = 0; kh < g.kh; ++kh) {
          const int64_t ih = conv_input_index(oh, kh, g.sh, g.ph, g.dh);
          if (ih < 0 || ih >= g.h) continue;
          for (int64_t kw = 0; kw < g.kw; ++kw) {
            const int64_t iw = conv_input_index(ow, kw, g.sw, g.pw, g.dw);
            if (iw < 0 || iw >= g.w) continue;
            const scalar_t* px = in + n * is.n + ih * is.h + iw * is.w;
            const acc_t* wt = weight_t + (kh * g.kw + kw) * g.c;
            for (int64_t c = 0; c < g.c; ++c) acc[c] += wt[c] * static_cast<acc_t>(px[c]);
          }
        }
        store_row(out + ((r * g.wo) + ow) * g.c, acc.data(), g.c, relu);
      }
    }
  });
}

// ---- backward: input ---------------------------------------------------------------

// Transposed conv, per plane: every output row scatters into a private float
// copy of the input plane, so no two tasks write the same memory.
template <typename scalar_t, typename acc_t>
void grad_input_nchw(const scalar_t* go /*dense NCHW*/, const acc_t* weight, scalar_t* gi /*dense NCHW*/,
                     const Geometry& g) {
  at::parallel_for(0, g.n * g.c, grain_for(g.ho * g.wo * g.taps()), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> plane_acc(g.h * g.w);
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t c = plane % g.c;
      const scalar_t* gp = go + plane * g.ho * g.wo;
      const acc_t* wp = weight + c * g.taps();
      std::fill(plane_acc.begin(), plane_acc.end(), acc_t(0));
      for (int64_t oh = 0; oh < g.ho; ++oh) {
        const scalar_t* grow = gp + oh * g.wo;
        for (int64_t kh = 0; kh < g.kh; ++kh) {
          const int64_t ih = conv_input_index(oh, kh, g.sh, g.ph, g.dh);
          if (ih < 0 || ih >= g.h) continue;
          acc_t* arow = plane_acc.data() + ih * g.w;
          for (int64_t kw = 0; kw < g.kw; ++kw) {
            const acc_t wv = wp[kh * g.kw + kw];
            const int64_t lo = conv_tap_output_begin(kw, g.sw, g.pw, g.dw);
            const int64_t hi = conv_tap_output_end(g.w, kw, g.sw, g.pw, g.dw, g.wo);
            const int64_t off = kw * g.dw - g.pw;
            for (int64_t ow = lo; ow < hi; ++ow) arow[ow * g.sw + off] += wv * static_cast<acc_t>(grow[ow]);
          }
        }
      }
      store_row(gi + plane * g.h * g.w, plane_acc.data(), g.h * g.w, false);
    }
  });
}

// Transposed conv as a gather, per input row: each input pixel sums the output
// pixels that read it (conv_output_index_for_input).
template <typename scalar_t, typename acc_t>
void grad_input_nhwc(const scalar_t* go /*dense NHWC*/, const acc_t* weight_t, scalar_t* gi /*dense NHWC*/,
                     const Geometry& g) {
  at::parallel_for(0, g.n * g.h, grain_for(g.w * g.c * g.taps()), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(g.c);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / g.h, ih = r % g.h;
      for (int64_t iw = 0; iw < g.w; ++iw) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t kh = 0; kh < g.kh; ++kh) {
          const int64_t oh = conv_output_index_for_input(ih, kh, g.sh, g.ph, g.dh, g.ho);
          if (oh < 0) continue;
          for (int64_t kw = 0; kw < g.kw; ++kw) {
            const int64_t ow = conv_output_index_for_input(iw, kw, g.sw, g.pw, g.dw, g.wo);
            if (ow < 0) continue;
            const scalar_t* gp = go + ((n * g.ho + oh) * g.wo + ow) * g.c;
            const acc_t* wt = weight_t + (kh * g.kw + kw) * g.c;
            for (int64_t c = 0; c < g.c; ++c) acc[c] += wt[c] * static_cast<acc_t>(gp[c]);
          }
        }
        store_row(gi + (r * g.w + iw) * g.c, acc.data(), g.c, false);
      }
    }
  });
}

// ---- backward: weight and bias -------------------------------------------------------

// One task per channel: the reduction over (n, oh, ow) runs in a fixed order.
// Row partial sums are in acc_t, the running totals in double.
template <typename scalar_t, typename acc_t>
void grad_weight_nchw(const scalar_t* go /*dense NCHW*/, const scalar_t* in, Strides4 is, acc_t* gw /*[C, taps]*/,
                      acc_t* gb /*[C] or null*/, const Geometry& g) {
  at::parallel_for(0, g.c, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> total(g.taps());
    for (int64_t c = begin; c < end; ++c) {
      std::fill(total.begin(), total.end(), 0.0);
      double bias_total = 0.0;
      for (int64_t n = 0; n < g.n; ++n) {
        const scalar_t* ip = in + n * is.n + c * is.c;
        const scalar_t* gp = go + (n * g.c + c) * g.ho * g.wo;
        for (int64_t oh = 0; oh < g.ho; ++oh) {
          const scalar_t* grow = gp + oh * g.wo;
          if (gb) {
            acc_t s = 0;
            for (int64_t ow = 0; ow < g.wo; ++ow) s += static_cast<acc_t>(grow[ow]);
            bias_total += s;
          }
          for (int64_t kh = 0; kh < g.kh; ++kh) {
            const int64_t ih = conv_input_index(oh, kh, g.sh, g.ph, g.dh);
            if (ih < 0 || ih >= g.h) continue;
            const scalar_t* irow = ip + ih * is.h;
            for (int64_t kw = 0; kw < g.kw; ++kw) {
              const int64_t lo = conv_tap_output_begin(kw, g.sw, g.pw, g.dw);
              const int64_t hi = conv_tap_output_end(g.w, kw, g.sw, g.pw, g.dw, g.wo);
              const int64_t off = kw * g.dw - g.pw;
              acc_t s = 0;
              for (int64_t ow = lo; ow < hi; ++ow) {
                s += static_cast<acc_t>(grow[ow]) * static_cast<acc_t>(irow[ow * g.sw + off]);
              }
              total[kh * g.kw + kw] += s;
            }
          }
        }
      }
      for (int64_t t = 0; t < g.taps(); ++t) gw[c * g.taps() + t] = static_cast<acc_t>(total[t]);
      if (gb) gb[c] = static_cast<acc_t>(bias_total);
    }
  });
}

// Split reduction: fixed chunks of output rows each produce [taps + 1, C]
// partial sums (the last row is the bias), then the partials are added in
// chunk order.
template <typename scalar_t, typename acc_t>
void grad_weight_nhwc(const scalar_t* go /*dense NHWC*/, const scalar_t* in, Strides4 is, acc_t* gw /*[C, taps]*/,
                      acc_t* gb /*[C] or null*/, const Geometry& g) {
  const int64_t rows = g.n * g.ho;
  const int64_t chunks = std::min(rows, kWeightGradChunks);
  const int64_t rows_per_chunk = (rows + chunks - 1) / chunks;
  const int64_t width = (g.taps() + 1) * g.c;
  std::vector<acc_t> partial(chunks * width, acc_t(0));
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      acc_t* p = partial.data() + chunk * width;
      const int64_t r_end = std::min(rows, (chunk + 1) * rows_per_chunk);
      for (int64_t r = chunk * rows_per_chunk; r < r_end; ++r) {
        const int64_t n = r / g.ho, oh = r % g.ho;
        for (int64_t ow = 0; ow < g.wo; ++ow) {
          const scalar_t* gp = go + (r * g.wo + ow) * g.c;
          acc_t* pb = p + g.taps() * g.c;
          for (int64_t c = 0; c < g.c; ++c) pb[c] += static_cast<acc_t>(gp[c]);
          for (int64_t kh = 0; kh < g.kh; ++kh) {
            const int64_t ih = conv_input_index(oh, kh, g.sh, g.ph, g.dh);
            if (ih < 0 || ih >= g.h) continue;
            for (int64_t kw = 0; kw < g.kw; ++kw) {
              const int64_t iw = conv_input_index(ow, kw, g.sw, g.pw, g.dw);
              if (iw < 0 || iw >= g.w) continue;
              const scalar_t* px = in + n * is.n + ih * is.h + iw * is.w;
              acc_t* pt = p + (kh * g.kw + kw) * g.c;
              for (int64_t c = 0; c < g.c; ++c) pt[c] += static_cast<acc_t>(gp[c]) * static_cast<acc_t>(px[c]);
            }
          }
        }
      }
    }
  });
  for (int64_t t = 0; t <= g.taps(); ++t) {
    for (int64_t c = 0; c < g.c; ++c) {
      double s = 0.0;
      for (int64_t chunk = 0; chunk < chunks; ++chunk) s += partial[chunk * width + t * g.c + c];
      if (t < g.taps()) {
        gw[c * g.taps() + t] = static_cast<acc_t>(s);
      } else if (gb) {
        gb[c] = static_cast<acc_t>(s);
      }
    }
  }
}

// ---- op entry points ---------------------------------------------------------------

Geometry make_geometry(const at::Tensor& input, const at::Tensor& weight, std::array<int64_t, 2> out,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  return {input.size(0), input.size(1), input.size(2), input.size(3), out[0], out[1], weight.size(2),
          weight.size(3), stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1]};
}

// Weights in the accumulation type: [C, taps] for NCHW, [taps, C] for NHWC.
at::Tensor prepared_weight(const at::Tensor& weight, bool channels_last) {
  const auto acc = at::toOpMathType(weight.scalar_type());
  at::Tensor w = weight.reshape({weight.size(0), weight.size(2) * weight.size(3)}).to(acc);
  return channels_last ? w.t().contiguous() : w.contiguous();
}

at::Tensor depthwise_conv2d_cpu(const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool relu) {
  // Helper ATen calls below are implementation details, not part of any autograd graph.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const auto out_hw = check_depthwise_conv2d_args(input, weight, bias, stride, padding, dilation);
  const Geometry g = make_geometry(input, weight, out_hw, stride, padding, dilation);
  const at::MemoryFormat fmt = output_memory_format(input);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  at::Tensor out = empty_in_format({g.n, g.c, g.ho, g.wo}, input, fmt);
  if (out.numel() == 0) return out;
  const at::Tensor x = with_plain_strides(input, cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  const at::Tensor w = prepared_weight(weight, cl);
  const bool has_bias = bias.has_value() && bias->defined();
  const at::Tensor b = has_bias ? bias->to(w.scalar_type()).contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "depthwise_conv2d_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* bp = has_bias ? b.const_data_ptr<acc_t>() : nullptr;
    if (cl) {
      forward_nhwc<scalar_t, acc_t>(x.const_data_ptr<scalar_t>(), strides_of(x), w.const_data_ptr<acc_t>(), bp,
                                    out.mutable_data_ptr<scalar_t>(), g, relu);
    } else {
      forward_nchw<scalar_t, acc_t>(x.const_data_ptr<scalar_t>(), strides_of(x), w.const_data_ptr<acc_t>(), bp,
                                    out.mutable_data_ptr<scalar_t>(), g, relu);
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> depthwise_conv2d_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const c10::optional<at::Tensor>& relu_output, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, std::array<bool, 3> output_mask) {
  // Helper ATen calls below are implementation details, not part of any autograd graph.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  constexpr const char* op = "depthwise_conv2d_backward";
  const auto out_hw = check_depthwise_conv2d_args(input, weight, c10::nullopt, stride, padding, dilation);
  const Geometry g = make_geometry(input, weight, out_hw, stride, padding, dilation);
  const std::vector<int64_t> out_sizes = {g.n, g.c, g.ho, g.wo};
  check_grad_output(grad_output, out_sizes, input, op);
  const at::MemoryFormat fmt = output_memory_format(input);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;

  at::Tensor go = grad_output;
  if (relu_output.has_value() && relu_output->defined()) {
    check_grad_output(*relu_output, out_sizes, input, op);
    go = at::threshold_backward(go, *relu_output, 0);
  }
  go = go.contiguous(fmt);

  const auto empty = [&] { return at::empty({0}, weight.options()); };
  at::Tensor grad_input = output_mask[0] ? empty_in_format(input.sizes(), input, fmt) : empty();
  at::Tensor grad_weight = output_mask[1] ? at::empty(weight.sizes(), weight.options()) : empty();
  at::Tensor grad_bias = output_mask[2] ? at::empty({g.c}, weight.options()) : empty();
  if (!output_mask[0] && !output_mask[1] && !output_mask[2]) return {grad_input, grad_weight, grad_bias};

  const at::Tensor x = with_plain_strides(input, cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  const at::Tensor w = prepared_weight(weight, cl);
  const auto acc = w.scalar_type();
  at::Tensor gw_acc = at::zeros({g.c, g.taps()}, weight.options().dtype(acc));
  at::Tensor gb_acc = at::zeros({g.c}, weight.options().dtype(acc));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "depthwise_conv2d_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gop = go.const_data_ptr<scalar_t>();
    if (output_mask[0] && grad_input.numel() > 0) {
      if (cl) {
        grad_input_nhwc<scalar_t, acc_t>(gop, w.const_data_ptr<acc_t>(), grad_input.mutable_data_ptr<scalar_t>(), g);
      } else {
        grad_input_nchw<scalar_t, acc_t>(gop, w.const_data_ptr<acc_t>(), grad_input.mutable_data_ptr<scalar_t>(), g);
      }
    }
    if ((output_mask[1] || output_mask[2]) && go.numel() > 0) {
      acc_t* gb = output_mask[2] ? gb_acc.mutable_data_ptr<acc_t>() : nullptr;
      if (cl) {
        grad_weight_nhwc<scalar_t, acc_t>(gop, x.const_data_ptr<scalar_t>(), strides_of(x),
                                          gw_acc.mutable_data_ptr<acc_t>(), gb, g);
      } else {
        grad_weight_nchw<scalar_t, acc_t>(gop, x.const_data_ptr<scalar_t>(), strides_of(x),
                                          gw_acc.mutable_data_ptr<acc_t>(), gb, g);
      }
    }
  });
  if (output_mask[1]) grad_weight.copy_(gw_acc.view(weight.sizes()));
  if (output_mask[2]) grad_bias.copy_(gb_acc);
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(shufflenet, CPU, m) {
  m.impl("depthwise_conv2d", &depthwise_conv2d_cpu);
  m.impl("depthwise_conv2d_backward", &depthwise_conv2d_backward_cpu);
}

}  // namespace shufflenet::cpu
