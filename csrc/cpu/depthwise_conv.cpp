// Depthwise 2-D convolution on CPU, forward and backward, NCHW and channels_last.
//
// Every loop over a row is split into its interior, where all kernel taps read
// inside the input (no bounds checks, so it vectorises), and the few border
// outputs, which check each tap. The tap geometry of a row (which outputs each tap
// reaches) is computed once per call with the shared index helpers, so no
// division runs inside a loop. 3x3 kernels with stride 1 or 2 are compiled with
// the kernel extent and column stride as constants (unrolled taps, register
// accumulators); other shapes run the same code with run-time extents.
//
// NCHW: one task per (n, c) plane, each output row computed from up to K input
//   rows; rows outside the input point at a row of zeros. Planes too narrow to
//   fill a vector per row (7x7 and 14x14 outputs) run, in float, as "flat
//   phase planes": the padded plane split by stride phase so that the whole
//   plane is one 1-D convolution whose vectors span several rows.
// channels_last: one task per output row; per block of 16 channels (32 for
//   kernel shapes known only at run time; the last block overlaps the one before
//   when C is not a multiple of the block), the weights stay in registers while
//   the row streams through, interior pixels a few at a time (and, for 3x3
//   with row stride 1 where AVX-512 is there, two output rows at once) so that
//   each loaded input pixel serves several outputs. The
//   weights are read as a [taps, C] matrix: a tap-major weight (stride(0) == 1)
//   is that matrix already and is used without a copy.
// Backward input with stride 1 is the forward kernel applied to grad_output with
//   the kernel flipped (a stride-1 transposed convolution is a convolution).
//   Other strides: NCHW runs a stride-1 flat-plane pass over grad_output dilated
//   by the stride (float; double scatters rows into a per-plane accumulator),
//   NHWC gathers per input pixel (3x3 with column stride 2 in float: column
//   pairs with the weights in registers).
// Backward weight is deterministic: NCHW one task per channel with per-tap row
//   (or flat-plane) partial sums; NHWC fixed chunks of rows reduced in chunk order
//   (3x3 with column stride 1 or 2 in float: the chunk's sums in registers).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "common/index.h"
#include "cpu/cpu_kernels.h"
#include "cpu/float_vec.h"
#include "cpu/output_cache.h"

namespace shufflenet::cpu {
namespace {

// Multiply-adds per parallel task, to batch small planes/rows into one task.
constexpr int64_t kDepthwiseGrain = 1 << 15;
// The channels_last weight gradient is reduced over at most this many row
// chunks; the split depends only on the shape, so results do not depend on the
// thread count.
constexpr int64_t kWeightGradChunks = 64;
// Chunks of the vectorised 3x3 weight gradient: each sums its rows in
// registers, so few chunks keep the final reduction small; still several per
// thread for balance.
constexpr int64_t kWeightGradChunks3x3 = 16;
// The float weight-gradient kernels (NCHW) keep vector partial sums across
// images and add them into double totals after about this many products per lane
// (a whole number of images, at least one): the horizontal sums then run once
// per channel rather than once per image, and no lane sums more than this many
// products in float. Depends only on the shape, never on the thread count.
constexpr int64_t kWeightGradLaneProducts = 256;
// Channels accumulated together in registers (channels_last).
constexpr int64_t kChannelBlock = 16;
constexpr int64_t kMaxTaps = kMaxDepthwiseKernel * kMaxDepthwiseKernel;

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

// Columns of one output row: tap k reads input column ow*stride + off[k] for
// ow in [lo[k], hi[k]); in [interior_lo, interior_hi) every tap is in range.
struct RowTaps {
  std::array<int64_t, kMaxDepthwiseKernel> lo{}, hi{}, off{};
  int64_t interior_lo = 0, interior_hi = 0;
};

RowTaps row_taps(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, int64_t out) {
  RowTaps r;
  for (int64_t t = 0; t < k; ++t) {
    r.lo[t] = std::min(conv_tap_output_begin(t, s, p, d), out);
    r.hi[t] = conv_tap_output_end(in, t, s, p, d, out);
    r.off[t] = t * d - p;
  }
  r.interior_lo = std::min(conv_interior_begin(s, p), out);
  r.interior_hi = std::max(r.interior_lo, conv_interior_end(in, k, s, p, d, out));
  return r;
}

// Kernel extents and column stride as compile-time constants (0: read them from
// the geometry at run time).
template <int KH, int KW, int SW>
struct KernelShape {
  static int64_t kh(const Geometry& g) { return KH ? KH : g.kh; }
  static int64_t kw(const Geometry& g) { return KW ? KW : g.kw; }
  static int64_t sw(const Geometry& g) { return SW ? SW : g.sw; }
  // Upper bound of kh * kw, for register arrays sized at compile time.
  static constexpr int64_t kTapBound = KH && KW ? KH * KW : kMaxTaps;
  // Whether every extent is a constant (then kKW and kSW are the column ones).
  static constexpr bool kFixed = KH && KW && SW;
  static constexpr int64_t kKW = KW, kSW = SW;
};

// Calls fn(KernelShape<...>{}) with the specialisation matching `g`.
template <typename F>
void with_kernel_shape(const Geometry& g, const F& fn) {
  if (g.kh == 3 && g.kw == 3 && g.sw == 1) return fn(KernelShape<3, 3, 1>{});
  if (g.kh == 3 && g.kw == 3 && g.sw == 2) return fn(KernelShape<3, 3, 2>{});
  fn(KernelShape<0, 0, 0>{});
}

// A buffer of `size` values set to `fill`, owned by the calling thread and kept
// across calls (slot: one buffer per concurrent use within a pass). The planes
// and partial sums of a pass are allocated once per thread rather than on every
// call, so their pages are not faulted in again each time. A thread keeps the
// largest size it has needed.
template <typename T, int kSlot>
T* thread_scratch(int64_t size, T fill) {
  thread_local std::vector<T> buffer;
  if (static_cast<int64_t>(buffer.size()) < size) {
    buffer.clear();
    buffer.shrink_to_fit();
    buffer.resize(size);
  }
  std::fill(buffer.begin(), buffer.begin() + size, fill);
  return buffer.data();
}

template <typename scalar_t, typename acc_t>
C10_ALWAYS_INLINE void store_row(scalar_t* dst, const acc_t* src, int64_t count, bool relu) {
  for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<scalar_t>(relu_if(src[i], relu));
}

// The blocks of B that cover [lo, hi) (hi - lo >= B): full blocks from lo, then
// one block ending at hi that overlaps the previous one and rewrites the same
// values. Returns nothing; calls block(start) for each.
#define SHUFFLENET_FOR_OVERLAPPED_BLOCKS(B, lo, hi, start, ...)    \
  for (int64_t i_ = (lo);; i_ += (B)) {                            \
    const int64_t start = std::min<int64_t>(i_, (hi) - (B));       \
    __VA_ARGS__;                                                   \
    if (start + (B) >= (hi)) break;                                \
  }

// ---- forward -------------------------------------------------------------------

// One depthwise pass: out[n, c] = relu?(bias[c] + conv(in[n, c], weight[c])).
// Also the stride-1 input gradient (grad_output in, kernel flipped, no bias).
template <typename scalar_t, typename acc_t>
struct Pass {
  const scalar_t* in;
  Strides4 is;
  const acc_t* weight;  // [C, taps] (NCHW) or [taps, C] (NHWC)
  const acc_t* bias;    // [C] or null
  scalar_t* out;        // dense, in the pass's layout
  Geometry g;
  bool relu;
};

// Outputs [ow0, ow0 + V * kFloatLanes) of a row (those up to `count` stored),
// from padded input rows: output ow reads column ow * sw + kw * dw of rows[kh].
// Float accumulation runs on vectors; double on plain arrays.
template <int64_t V, typename Shape, typename scalar_t, typename acc_t>
C10_ALWAYS_INLINE void conv_row_block(const acc_t* const* rows, const acc_t* wk, const Geometry& g, int64_t ow0,
                                      int64_t count, acc_t b, bool relu, scalar_t* orow) {
  const int64_t kh_n = Shape::kh(g), kw_n = Shape::kw(g), sw = Shape::sw(g);
  constexpr int64_t B = V * kFloatLanes;
  acc_t result[B];
  if constexpr (std::is_same_v<acc_t, float>) {
    FloatVec acc[V];
    for (int64_t v = 0; v < V; ++v) acc[v] = FloatVec{} + b;
    for (int64_t kh = 0; kh < kh_n; ++kh) {
      for (int64_t kw = 0; kw < kw_n; ++kw) {
        const float w = wk[kh * kw_n + kw];
        const float* src = rows[kh] + ow0 * sw + kw * g.dw;
        for (int64_t v = 0; v < V; ++v) acc[v] += w * load_floats_strided(src + v * kFloatLanes * sw, sw);
      }
    }
    if (count >= B) {
      for (int64_t v = 0; v < V; ++v) store_floats(orow + ow0 + v * kFloatLanes, relu_vec(acc[v], relu));
      return;
    }
    for (int64_t v = 0; v < V; ++v) store_floats(result + v * kFloatLanes, relu_vec(acc[v], relu));
  } else {
    for (int64_t j = 0; j < B; ++j) result[j] = b;
    for (int64_t kh = 0; kh < kh_n; ++kh) {
      for (int64_t kw = 0; kw < kw_n; ++kw) {
        const acc_t w = wk[kh * kw_n + kw];
        const acc_t* src = rows[kh] + ow0 * sw + kw * g.dw;
        for (int64_t j = 0; j < B; ++j) result[j] += w * src[j * sw];
      }
    }
    for (int64_t j = 0; j < B; ++j) result[j] = relu_if(result[j], relu);
  }
  for (int64_t j = 0; j < std::min(count, B); ++j) orow[ow0 + j] = static_cast<scalar_t>(result[j]);
}

// Each plane is first copied (in acc_t) into a zero-padded buffer with
// kFloatLanes * stride columns of slack, so that every output of every row is
// computed by the same unchecked vector loop, whatever the padding and size.
template <typename scalar_t, typename acc_t, typename Shape>
SHUFFLENET_CPU_MULTIVERSION void forward_nchw_planes(const Pass<scalar_t, acc_t>& p, int64_t begin, int64_t end,
                                                     Shape) {
  const Geometry& g = p.g;
  const int64_t sw = Shape::sw(g);
  const int64_t pitch = g.w + 2 * g.pw + 2 * kFloatLanes * sw;
  acc_t* const padded = thread_scratch<acc_t, 0>((g.h + 2 * g.ph) * pitch, acc_t(0));
  std::array<const acc_t*, kMaxDepthwiseKernel> rows{};
  std::array<acc_t, kMaxTaps> wk{};
  for (int64_t plane = begin; plane < end; ++plane) {
    const int64_t n = plane / g.c, c = plane % g.c;
    const scalar_t* ip = p.in + n * p.is.n + c * p.is.c;
    for (int64_t ih = 0; ih < g.h; ++ih) {
      acc_t* dst = padded + (ih + g.ph) * pitch + g.pw;
      const scalar_t* src = ip + ih * p.is.h;
      for (int64_t iw = 0; iw < g.w; ++iw) dst[iw] = static_cast<acc_t>(src[iw]);
    }
    std::copy(p.weight + c * g.taps(), p.weight + (c + 1) * g.taps(), wk.begin());
    const acc_t b = p.bias ? p.bias[c] : acc_t(0);
    for (int64_t oh = 0; oh < g.ho; ++oh) {
      // Padded row oh*sh + kh*dh holds input row oh*sh - ph + kh*dh.
      for (int64_t kh = 0; kh < Shape::kh(g); ++kh) rows[kh] = padded + (oh * g.sh + kh * g.dh) * pitch;
      scalar_t* orow = p.out + (plane * g.ho + oh) * g.wo;
      if (g.wo > kFloatLanes) {
        for (int64_t ow0 = 0; ow0 < g.wo; ow0 += 2 * kFloatLanes) {
          conv_row_block<2, Shape>(rows.data(), wk.data(), g, ow0, g.wo - ow0, b, p.relu, orow);
        }
      } else {
        conv_row_block<1, Shape>(rows.data(), wk.data(), g, 0, g.wo, b, p.relu, orow);
      }
    }
  }
}

// ---- NCHW small planes: flat phase planes ------------------------------------------
//
// A plane narrower than a vector wastes most lanes when each output row is its own
// vector (a 7-wide row fills 7 of 16). Here a whole plane is one flat sequence: the
// zero-padded input plane is split into s*s phase planes of pitch q = ceil(padded
// width / s) (phase (a, b) holds padded rows a, a + s, ... and columns b, b + s,
// ...), so that output (oh, ow) reads element oh*q + ow + off[t] of the buffer for
// every tap t whatever the stride. The plane is then a 1-D convolution of
// (ho - 1)*q + wo flat outputs whose vectors span several rows; the q - wo columns
// past each row's end are computed and dropped. The buffer is zeroed once per task:
// refilling it for the next plane writes only input values and zeros, so its pad
// positions stay zero.

constexpr int64_t kFlatBlock = 4;  // vectors accumulated together
constexpr int64_t kFlatTail = 2;   // the vectors of a plane are a multiple of this

struct FlatPlan {
  int64_t s = 1;             // stride of the phase split
  int64_t q = 0;             // pitch of a phase plane (and of the flat outputs)
  int64_t phase_stride = 0;  // floats from one phase plane to the next
  int64_t length = 0;        // flat outputs: (output rows - 1) * q + output columns
  int64_t vecs = 0;          // vectors covering `length`, rounded up to kFlatTail
  int64_t buffer = 0;        // floats in the input buffer, with slack for reads past the end
  int64_t taps = 0;
  std::array<int64_t, kMaxTaps> off{};  // per tap: buffer offset of flat output 0's input
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// `rows` x q phase planes (rows of each), flat outputs of `out_rows` x `out_cols`.
FlatPlan flat_plan(int64_t s, int64_t q, int64_t rows, int64_t out_rows, int64_t out_cols, int64_t taps) {
  FlatPlan f;
  f.s = s;
  f.q = q;
  // A row is filled with whole vectors: up to kFloatLanes floats past a phase's end.
  f.phase_stride = rows * q + kFloatLanes;
  f.length = (out_rows - 1) * q + out_cols;
  f.vecs = ceil_div(ceil_div(f.length, kFloatLanes), kFlatTail) * kFlatTail;
  f.buffer = s * s * f.phase_stride + f.vecs * kFloatLanes + kFloatLanes;
  f.taps = taps;
  return f;
}

// The forward convolution of `g` (equal row and column strides).
FlatPlan forward_flat_plan(const Geometry& g) {
  const int64_t s = g.sh;
  FlatPlan f = flat_plan(s, ceil_div(g.w + 2 * g.pw, s), ceil_div(g.h + 2 * g.ph, s), g.ho, g.wo, g.taps());
  for (int64_t kh = 0; kh < g.kh; ++kh) {
    for (int64_t kw = 0; kw < g.kw; ++kw) {
      const int64_t dr = kh * g.dh, dc = kw * g.dw;
      f.off[kh * g.kw + kw] = ((dr % s) * s + dc % s) * f.phase_stride + (dr / s) * f.q + dc / s;
    }
  }
  return f;
}

// The input gradient of `g` as a stride-1 convolution, with the kernel flipped,
// of grad_output dilated by the stride (zeros between its values): one plane of
// (h + dh*(kh-1)) x (w + dw*(kw-1)), grad_output (oh, ow) at row
// oh*sh + dh*(kh-1) - ph and column ow*sw + dw*(kw-1) - pw (those outside are
// never read).
FlatPlan grad_input_flat_plan(const Geometry& g) {
  const int64_t span_h = g.dh * (g.kh - 1), span_w = g.dw * (g.kw - 1);
  FlatPlan f = flat_plan(1, g.w + span_w, g.h + span_h, g.h, g.w, g.taps());
  for (int64_t kh = 0; kh < g.kh; ++kh) {
    for (int64_t kw = 0; kw < g.kw; ++kw) {
      f.off[kh * g.kw + kw] = (span_h - kh * g.dh) * f.q + (span_w - kw * g.dw);
    }
  }
  return f;
}

// Whether the flat planes take fewer vectors than one vector block per output row
// (forward_nchw_planes), i.e. the plane is narrow; or as many, with rows of one
// vector each (14x14 outputs): there the flat planes' vector fill and pipelined
// stages outrun the per-row path at batch 1 and 8 alike. Equal strides only.
bool use_flat_planes(const Geometry& g) {
  if (g.sh != g.sw) return false;
  const int64_t per_row = g.wo > kFloatLanes ? 2 * ceil_div(g.wo, 2 * kFloatLanes) : 1;
  const int64_t q = ceil_div(g.w + 2 * g.pw, g.sw);
  const int64_t flat = ceil_div((g.ho - 1) * q + g.wo, kFloatLanes), rows = g.ho * per_row;
  return flat < rows || (g.wo <= kFloatLanes && flat == rows);
}

// src[0, count) as floats, zero in the other lanes (count in [1, kFloatLanes]);
// reads nothing at or past src + readable (readable >= count).
template <typename scalar_t>
C10_ALWAYS_INLINE FloatVec load_floats_upto(const scalar_t* src, int64_t count, int64_t readable) {
  if (readable >= kFloatLanes) {
    const FloatVec v = load_floats(src);
    return count >= kFloatLanes ? v : first_lanes(v, count);
  }
  float lanes[kFloatLanes] = {};
  for (int64_t j = 0; j < count; ++j) lanes[j] = static_cast<float>(src[j]);
  return load_floats(lanes);
}

// Stores lanes [0, count) of v at dst, and the other lanes too when
// writable >= kFloatLanes (writes nothing at or past dst + writable).
template <typename scalar_t>
C10_ALWAYS_INLINE void store_floats_upto(scalar_t* dst, FloatVec v, int64_t count, int64_t writable) {
  if (writable >= kFloatLanes) return store_floats(dst, v);
  float lanes[kFloatLanes];
  store_floats(lanes, v);
  for (int64_t j = 0; j < count; ++j) dst[j] = static_cast<scalar_t>(lanes[j]);
}

// Copies an h x w plane (rows row_stride apart, unit column stride) into the
// phase planes of f, its element (ih, iw) at padded position (ih + ph, iw + pw).
// Rows are read with whole vectors (lanes past the row's end masked to zero;
// `span` elements from ip may be read, the rest of the tensor, so that only its
// very end takes the slow path) and written in order with whole vectors: the
// zero lanes land on pad positions or on rows written later.
template <typename scalar_t>
C10_ALWAYS_INLINE void fill_flat(const scalar_t* ip, int64_t span, int64_t row_stride, int64_t h, int64_t w,
                                 int64_t ph, int64_t pw, const FlatPlan& f, float* buf) {
  // Rows of at most one vector (two with stride 2) with a whole vector readable
  // past every row's start: one unchecked masked load per vector.
  if (w <= f.s * kFloatLanes && f.s <= 2 && span >= (h - 1) * row_stride + 2 * kFloatLanes) {
    const I32Vec lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    const auto in0 = lane < static_cast<int32_t>(w);
    if (f.s == 1) {
      float* dst = buf + ph * f.q + pw;
      for (int64_t ih = 0; ih < h; ++ih) {
        store_floats(dst + ih * f.q, in0 ? load_floats(ip + ih * row_stride) : FloatVec{});
      }
      return;
    }
    const auto in1 = lane < static_cast<int32_t>(w - kFloatLanes);
    for (int64_t ih = 0; ih < h; ++ih) {
      const scalar_t* src = ip + ih * row_stride;
      const int64_t r = ih + ph;
      float* row = buf + (r % 2) * 2 * f.phase_stride + (r / 2) * f.q;
      const FloatVec x0 = in0 ? load_floats(src) : FloatVec{};
      const FloatVec x1 = in1 ? load_floats(src + kFloatLanes) : FloatVec{};
      store_floats(row + (pw % 2) * f.phase_stride + pw / 2,
                   __builtin_shufflevector(x0, x1, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30));
      store_floats(row + ((pw + 1) % 2) * f.phase_stride + (pw + 1) / 2,
                   __builtin_shufflevector(x0, x1, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31));
    }
    return;
  }
  for (int64_t ih = 0; ih < h; ++ih) {
    const scalar_t* src = ip + ih * row_stride;
    const int64_t readable = span - ih * row_stride;
    const int64_t r = ih + ph;
    if (f.s == 1) {
      float* dst = buf + r * f.q + pw;
      for (int64_t k = 0; k < w; k += kFloatLanes) {
        store_floats(dst + k, load_floats_upto(src + k, std::min(kFloatLanes, w - k), readable - k));
      }
    } else if (f.s == 2) {
      // Even input columns go to phase column pw % 2 from column pw / 2, odd ones
      // to phase column (pw + 1) % 2 from column (pw + 1) / 2.
      float* row = buf + (r % 2) * 2 * f.phase_stride + (r / 2) * f.q;
      float* even = row + (pw % 2) * f.phase_stride + pw / 2;
      float* odd = row + ((pw + 1) % 2) * f.phase_stride + (pw + 1) / 2;
      for (int64_t k = 0; k < w; k += 2 * kFloatLanes) {
        const FloatVec x0 = load_floats_upto(src + k, std::min(kFloatLanes, w - k), readable - k);
        const FloatVec x1 = w - k > kFloatLanes ? load_floats_upto(src + k + kFloatLanes,
                                                                   std::min(kFloatLanes, w - k - kFloatLanes),
                                                                   readable - k - kFloatLanes)
                                                : FloatVec{};
        store_floats(even + k / 2, __builtin_shufflevector(x0, x1, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                                           28, 30));
        store_floats(odd + k / 2, __builtin_shufflevector(x0, x1, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27,
                                                          29, 31));
      }
    } else {
      for (int64_t iw = 0; iw < w; ++iw) {
        const int64_t c = iw + pw;
        buf[((r % f.s) * f.s + c % f.s) * f.phase_stride + (r / f.s) * f.q + c / f.s] = static_cast<float>(src[iw]);
      }
    }
  }
}

// res[i] = bias + sum_t w[t] * buf[off[t] + i] for the B vectors of flat outputs
// from i0. With the taps known (kTaps > 0), two sets of accumulators (taps
// [0, half) and [half, taps)) so that twice as many independent multiply-add
// chains are in flight.
template <int64_t B, int64_t kTaps>
C10_ALWAYS_INLINE void flat_conv_block(const float* buf, const int64_t* off, int64_t taps, const float* w,
                                       float bias, float* res, int64_t i0) {
  constexpr int64_t half = kTaps >= 4 ? kTaps / 2 : 0;
  FloatVec acc[B], acc2[B];
  for (int64_t v = 0; v < B; ++v) acc[v] = FloatVec{} + bias;
  for (int64_t v = 0; v < B; ++v) acc2[v] = FloatVec{};
  for (int64_t t = 0; t < (half ? half : taps); ++t) {
    const float wt = w[t];
    const float* src = buf + off[t] + i0;
    for (int64_t v = 0; v < B; ++v) acc[v] += wt * load_floats(src + v * kFloatLanes);
  }
  for (int64_t t = half; half && t < taps; ++t) {
    const float wt = w[t];
    const float* src = buf + off[t] + i0;
    for (int64_t v = 0; v < B; ++v) acc2[v] += wt * load_floats(src + v * kFloatLanes);
  }
  for (int64_t v = 0; v < B; ++v) store_floats(res + i0 + v * kFloatLanes, half ? acc[v] + acc2[v] : acc[v]);
}

// The f.vecs vectors of flat outputs: blocks of kFlatBlock, then one of
// kFlatTail (kTaps: the tap count as a constant, 0 to read it from f).
template <int64_t kTaps>
C10_ALWAYS_INLINE void flat_conv(const float* buf, const FlatPlan& f, const float* w, float bias, float* res) {
  const int64_t taps = kTaps ? kTaps : f.taps;
  std::array<int64_t, kTaps ? kTaps : kMaxTaps> off;
  for (int64_t t = 0; t < taps; ++t) off[t] = f.off[t];
  const int64_t n = f.vecs * kFloatLanes;
  int64_t i0 = 0;
  for (; i0 + kFlatBlock * kFloatLanes <= n; i0 += kFlatBlock * kFloatLanes) {
    flat_conv_block<kFlatBlock, kTaps>(buf, off.data(), taps, w, bias, res, i0);
  }
  if (i0 < n) flat_conv_block<kFlatTail, kTaps>(buf, off.data(), taps, w, bias, res, i0);
}

// The ho x wo dense plane `out` from flat outputs of pitch q (ReLU optional). Rows
// are stored in order with whole vectors where `total` elements from out (the
// planes left in the task) have room: the lanes past a row's end are rewritten by
// the next row or plane.
template <typename scalar_t>
C10_ALWAYS_INLINE void store_flat(const float* res, int64_t q, int64_t ho, int64_t wo, bool relu, scalar_t* out,
                                  int64_t total) {
  if (wo <= kFloatLanes && total >= ho * wo + kFloatLanes) {
    // One unchecked vector per row.
    for (int64_t oh = 0; oh < ho; ++oh) store_floats(out + oh * wo, relu_vec(load_floats(res + oh * q), relu));
    return;
  }
  for (int64_t oh = 0; oh < ho; ++oh) {
    for (int64_t ow = 0; ow < wo; ow += kFloatLanes) {
      const int64_t at = oh * wo + ow;
      store_floats_upto(out + at, relu_vec(load_floats(res + oh * q + ow), relu), std::min(kFloatLanes, wo - ow),
                        total - at);
    }
  }
}

// Elements from an NCHW input's first element to the end of its last row.
int64_t span_of(Strides4 is, const Geometry& g) {
  return (g.n - 1) * is.n + (g.c - 1) * is.c + (g.h - 1) * is.h + g.w;
}

// The stages given to pipelined() are inlined into the multiversioned kernel that
// calls it (SHUFFLENET_INLINE_LAMBDA, cpu_kernels.h).

// Two of each scratch buffer (k: 0 or 1) for the pipelined() stages.
template <int kSlot>
float* flat_scratch(int k, int64_t size) {
  return k ? thread_scratch<float, kSlot + 1>(size, 0.f) : thread_scratch<float, kSlot>(size, 0.f);
}

// Runs fill(i, k), compute(i, k) and finish(i, k) for the items i in [begin, end),
// staggered by one item over two buffer sets k = 0, 1: each stage reads what the
// stage before wrote an item earlier, once those stores have left the store
// buffer (a load spanning two recent stores cannot take its data from them and
// waits until they are written).
template <typename Fill, typename Compute, typename Finish>
C10_ALWAYS_INLINE void pipelined(int64_t begin, int64_t end, const Fill& fill, const Compute& compute,
                                 const Finish& finish) {
  if (begin >= end) return;
  fill(begin, 0);
  for (int64_t i = begin; i < end; ++i) {
    const int k = static_cast<int>((i - begin) & 1);
    if (i + 1 < end) fill(i + 1, k ^ 1);
    compute(i, k);
    if (i > begin) finish(i - 1, k ^ 1);
  }
  finish(end - 1, static_cast<int>((end - 1 - begin) & 1));
}

template <typename scalar_t, int64_t kTaps>
SHUFFLENET_CPU_MULTIVERSION void forward_nchw_flat(const Pass<scalar_t, float>& p, const FlatPlan& f, int64_t begin,
                                                   int64_t end) {
  const Geometry& g = p.g;
  float* const buf[2] = {flat_scratch<0>(0, f.buffer), flat_scratch<0>(1, f.buffer)};
  float* const res[2] = {flat_scratch<2>(0, f.vecs * kFloatLanes + kFloatLanes),
                         flat_scratch<2>(1, f.vecs * kFloatLanes + kFloatLanes)};
  const int64_t in_span = span_of(p.is, g);
  pipelined(
      begin, end,
      [&](int64_t plane, int k) SHUFFLENET_INLINE_LAMBDA {
        const int64_t at = plane / g.c * p.is.n + plane % g.c * p.is.c;
        fill_flat(p.in + at, in_span - at, p.is.h, g.h, g.w, g.ph, g.pw, f, buf[k]);
      },
      [&](int64_t plane, int k) SHUFFLENET_INLINE_LAMBDA {
        const int64_t c = plane % g.c;
        flat_conv<kTaps>(buf[k], f, p.weight + c * f.taps, p.bias ? p.bias[c] : 0.f, res[k]);
      },
      [&](int64_t plane, int k) SHUFFLENET_INLINE_LAMBDA {
        store_flat(res[k], f.q, g.ho, g.wo, p.relu, p.out + plane * g.ho * g.wo, (end - plane) * g.ho * g.wo);
      });
}

// Calls fn(std::integral_constant<int64_t, taps>) with 9 for 3x3 kernels, 0 (run-time taps) otherwise.
template <typename F>
void with_flat_taps(const Geometry& g, const F& fn) {
  if (g.kh == 3 && g.kw == 3) return fn(std::integral_constant<int64_t, 9>{});
  fn(std::integral_constant<int64_t, 0>{});
}

// B channels of one channels_last pixel from `taps` source pixels, in registers
// (B is a multiple of kFloatLanes; float accumulation runs on vectors).
template <int64_t B, typename scalar_t, typename acc_t>
C10_ALWAYS_INLINE void accumulate_channel_block(const scalar_t* const* src, const acc_t* const* weight,
                                                int64_t taps, const acc_t* bias, int64_t c0, scalar_t* dst,
                                                bool relu) {
  if constexpr (std::is_same_v<acc_t, float>) {
    constexpr int64_t V = B / kFloatLanes;
    FloatVec acc[V];
    for (int64_t v = 0; v < V; ++v) acc[v] = bias ? load_floats(bias + c0 + v * kFloatLanes) : FloatVec{};
    for (int64_t t = 0; t < taps; ++t) {
      const scalar_t* s = src[t] + c0;
      const float* w = weight[t] + c0;
      for (int64_t v = 0; v < V; ++v) acc[v] += load_floats(w + v * kFloatLanes) * load_floats(s + v * kFloatLanes);
    }
    for (int64_t v = 0; v < V; ++v) store_floats(dst + c0 + v * kFloatLanes, relu_vec(acc[v], relu));
  } else {
    acc_t acc[B];
    for (int64_t j = 0; j < B; ++j) acc[j] = bias ? bias[c0 + j] : acc_t(0);
    for (int64_t t = 0; t < taps; ++t) {
      const scalar_t* s = src[t] + c0;
      const acc_t* w = weight[t] + c0;
      for (int64_t j = 0; j < B; ++j) acc[j] += w[j] * static_cast<acc_t>(s[j]);
    }
    for (int64_t j = 0; j < B; ++j) dst[c0 + j] = static_cast<scalar_t>(relu_if(acc[j], relu));
  }
}

// dst[c] = relu?(bias[c] + sum_t weight[t][c] * src[t][c]) for c in [0, channels):
// one channels_last pixel from `taps` source pixels.
template <typename scalar_t, typename acc_t>
C10_ALWAYS_INLINE void accumulate_pixel(const scalar_t* const* src, const acc_t* const* weight, int64_t taps,
                                        const acc_t* bias, int64_t channels, scalar_t* dst, bool relu) {
  if (channels >= 32) {
    SHUFFLENET_FOR_OVERLAPPED_BLOCKS(32, 0, channels, c0,
                                     accumulate_channel_block<32>(src, weight, taps, bias, c0, dst, relu))
  } else if (channels >= 16) {
    SHUFFLENET_FOR_OVERLAPPED_BLOCKS(16, 0, channels, c0,
                                     accumulate_channel_block<16>(src, weight, taps, bias, c0, dst, relu))
  } else {
    for (int64_t c = 0; c < channels; ++c) {
      acc_t a = bias ? bias[c] : acc_t(0);
      for (int64_t t = 0; t < taps; ++t) a += weight[t][c] * static_cast<acc_t>(src[t][c]);
      dst[c] = static_cast<scalar_t>(relu_if(a, relu));
    }
  }
}

// Output pixels computed together by the unchecked interior loop below, per
// column stride: enough to reuse each loaded input pixel across several outputs,
// few enough that accumulators, 3x3 weights and inputs stay in registers.
constexpr int64_t pixel_block(int64_t stride) { return stride == 1 ? 6 : 4; }

// Outputs [ow, ow + P) of a channels_last row, channels [c0, c0 + V * kFloatLanes),
// all inside the row's interior (every tap reads inside the input; rows[kh] is
// null outside it), for a KH x KW kernel with column stride SW and no column
// dilation: each input pixel of a kernel row is loaded once and feeds every
// output of the block that reads it (for 3x3 stride 1, (P + 2) / P loads per
// output and kernel row instead of 3).
// With R = 2, two consecutive output rows (row stride 1) from KH + 1 input rows,
// each input pixel feeding both.
template <int64_t R, int64_t P, int64_t V, int64_t KH, int64_t KW, int64_t SW, typename scalar_t>
C10_ALWAYS_INLINE void nhwc_pixel_block(const Pass<scalar_t, float>& p, const RowTaps& cols,
                                        const scalar_t* const* rows, const FloatVec (*wv)[V], const FloatVec* bv,
                                        int64_t ow, int64_t c0, scalar_t* const* orows) {
  constexpr int64_t kCols = (P - 1) * SW + KW;  // input columns the block reads
  FloatVec acc[R][P][V];
#pragma GCC unroll 8
  for (int64_t i = 0; i < R; ++i) {
#pragma GCC unroll 8
    for (int64_t q = 0; q < P; ++q) {
      for (int64_t v = 0; v < V; ++v) acc[i][q][v] = bv[v];
    }
  }
  const int64_t iw0 = ow * SW + cols.off[0];
#pragma GCC unroll 8
  for (int64_t kr = 0; kr < KH + R - 1; ++kr) {
    if (rows[kr] == nullptr) continue;
    const scalar_t* src = rows[kr] + iw0 * p.is.w + c0;
#pragma GCC unroll 16
    for (int64_t j = 0; j < kCols; ++j) {
      FloatVec x[V];
      for (int64_t v = 0; v < V; ++v) x[v] = load_floats(src + j * p.is.w + v * kFloatLanes);
#pragma GCC unroll 2
      for (int64_t i = 0; i < R; ++i) {
        const int64_t kh = kr - i;  // constant once unrolled
        if (kh < 0 || kh >= KH) continue;
#pragma GCC unroll 8
        for (int64_t q = 0; q < P; ++q) {
          const int64_t kw = j - q * SW;
          if (kw < 0 || kw >= KW) continue;
          for (int64_t v = 0; v < V; ++v) acc[i][q][v] += wv[kh * KW + kw][v] * x[v];
        }
      }
    }
  }
#pragma GCC unroll 2
  for (int64_t i = 0; i < R; ++i) {
#pragma GCC unroll 8
    for (int64_t q = 0; q < P; ++q) {
      for (int64_t v = 0; v < V; ++v) {
        store_floats(orows[i] + (ow + q) * p.g.c + c0 + v * kFloatLanes, relu_vec(acc[i][q][v], p.relu));
      }
    }
  }
}

// Channels [c0, c0 + V * kFloatLanes) of a whole channels_last output row: the
// block's weights stay in registers while the row's pixels stream through.
// rows[kh]: the input row read by kernel row kh, or null outside the input.
// Border pixels check each tap; with the kernel shape known at compile time and
// no column dilation, interior pixels go through nhwc_pixel_block,
// pixel_block(stride) at a time and the rest one by one.
template <int64_t V, typename Shape, int64_t R = 1, typename scalar_t>
C10_ALWAYS_INLINE void nhwc_row_channel_block(const Pass<scalar_t, float>& p, const RowTaps& cols,
                                              const scalar_t* const* rows, int64_t c0, scalar_t* const* orows) {
  const Geometry& g = p.g;
  const int64_t kh_n = Shape::kh(g), kw_n = Shape::kw(g), sw = Shape::sw(g);
  FloatVec wv[Shape::kTapBound][V];
  FloatVec bv[V];
  for (int64_t t = 0; t < kh_n * kw_n; ++t) {
    for (int64_t v = 0; v < V; ++v) wv[t][v] = load_floats(p.weight + t * g.c + c0 + v * kFloatLanes);
  }
  for (int64_t v = 0; v < V; ++v) bv[v] = p.bias ? load_floats(p.bias + c0 + v * kFloatLanes) : FloatVec{};
  // Output row i of the R reads rows[i .. i + kh_n).
  const auto checked_pixel = [&](int64_t i, int64_t ow) {
    FloatVec acc[V];
    for (int64_t v = 0; v < V; ++v) acc[v] = bv[v];
    for (int64_t kh = 0; kh < kh_n; ++kh) {
      if (rows[i + kh] == nullptr) continue;
      for (int64_t kw = 0; kw < kw_n; ++kw) {
        if (ow < cols.lo[kw] || ow >= cols.hi[kw]) continue;
        const scalar_t* s = rows[i + kh] + (ow * sw + cols.off[kw]) * p.is.w + c0;
        for (int64_t v = 0; v < V; ++v) acc[v] += wv[kh * kw_n + kw][v] * load_floats(s + v * kFloatLanes);
      }
    }
    for (int64_t v = 0; v < V; ++v) {
      store_floats(orows[i] + ow * g.c + c0 + v * kFloatLanes, relu_vec(acc[v], p.relu));
    }
  };
  const auto checked_pixels = [&](int64_t ow) {
    for (int64_t i = 0; i < R; ++i) checked_pixel(i, ow);
  };
  int64_t ow = 0;
  if constexpr (Shape::kFixed) {
    if (g.dw == 1) {
      constexpr int64_t KH = Shape::kTapBound / Shape::kKW, KW = Shape::kKW, SW = Shape::kSW;
      constexpr int64_t P = pixel_block(SW);
      for (; ow < cols.interior_lo; ++ow) checked_pixels(ow);
      for (; ow + P <= cols.interior_hi; ow += P) {
        nhwc_pixel_block<R, P, V, KH, KW, SW>(p, cols, rows, wv, bv, ow, c0, orows);
      }
      for (; ow < cols.interior_hi; ++ow) nhwc_pixel_block<R, 1, V, KH, KW, SW>(p, cols, rows, wv, bv, ow, c0, orows);
    }
  }
  for (; ow < g.wo; ++ow) checked_pixels(ow);
}

// Whether the channels_last kernels may compute two output rows at once: their
// accumulators, weights and inputs fill 22 of AVX-512's 32 vector registers,
// more than AVX2 has.
bool has_wide_vector_registers() {
#if defined(__GNUC__) && defined(__x86_64__)
  static const bool wide = __builtin_cpu_supports("avx512f");
  return wide;
#else
  return false;
#endif
}

template <typename scalar_t, typename acc_t, typename Shape>
SHUFFLENET_CPU_MULTIVERSION void forward_nhwc_rows(const Pass<scalar_t, acc_t>& p, const RowTaps& cols,
                                                   int64_t begin, int64_t end, Shape) {
  const Geometry& g = p.g;
  const int64_t kh_n = Shape::kh(g), kw_n = Shape::kw(g), sw = Shape::sw(g);
  std::array<const scalar_t*, kMaxDepthwiseKernel + 1> rows{};
  std::array<const scalar_t*, kMaxTaps> src{};
  std::array<const acc_t*, kMaxTaps> wsrc{};
  // Row pairs: a fixed kernel shape, float accumulation, row stride and dilation 1.
  bool pairs = false;
  if constexpr (Shape::kFixed && std::is_same_v<acc_t, float>) {
    pairs = g.sh == 1 && g.dh == 1 && g.c >= kFloatLanes && has_wide_vector_registers();
  }
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / g.ho, oh = r % g.ho;
    scalar_t* orow = p.out + r * g.wo * g.c;
    if constexpr (Shape::kFixed && std::is_same_v<acc_t, float>) {
      if (pairs && r + 1 < end && oh + 1 < g.ho) {
        // Output rows oh and oh + 1 read input rows oh - ph .. oh - ph + kh_n.
        for (int64_t kr = 0; kr <= kh_n; ++kr) {
          const int64_t ih = conv_input_index(oh, kr, 1, g.ph, 1);
          rows[kr] = (ih >= 0 && ih < g.h) ? p.in + n * p.is.n + ih * p.is.h : nullptr;
        }
        scalar_t* const orows[2] = {orow, orow + g.wo * g.c};
        SHUFFLENET_FOR_OVERLAPPED_BLOCKS(kFloatLanes, 0, g.c, c0,
                                         nhwc_row_channel_block<1, Shape, 2>(p, cols, rows.data(), c0, orows))
        ++r;
        continue;
      }
    }
    for (int64_t kh = 0; kh < kh_n; ++kh) {
      const int64_t ih = conv_input_index(oh, kh, g.sh, g.ph, g.dh);
      rows[kh] = (ih >= 0 && ih < g.h) ? p.in + n * p.is.n + ih * p.is.h : nullptr;
    }
    scalar_t* const orows[1] = {orow};
    if constexpr (std::is_same_v<acc_t, float>) {
      // Two vectors per block only for run-time kernel shapes: the fixed shapes'
      // pixel blocks fill the registers with one.
      if (!Shape::kFixed && g.c >= 2 * kFloatLanes) {
        SHUFFLENET_FOR_OVERLAPPED_BLOCKS(2 * kFloatLanes, 0, g.c, c0,
                                         nhwc_row_channel_block<2, Shape>(p, cols, rows.data(), c0, orows))
        continue;
      }
      if (g.c >= kFloatLanes) {
        SHUFFLENET_FOR_OVERLAPPED_BLOCKS(kFloatLanes, 0, g.c, c0,
                                         nhwc_row_channel_block<1, Shape>(p, cols, rows.data(), c0, orows))
        continue;
      }
    }
    for (int64_t ow = 0; ow < g.wo; ++ow) {
      int64_t taps = 0;
      for (int64_t kh = 0; kh < kh_n; ++kh) {
        if (rows[kh] == nullptr) continue;
        for (int64_t kw = 0; kw < kw_n; ++kw) {
          if (ow < cols.lo[kw] || ow >= cols.hi[kw]) continue;
          src[taps] = rows[kh] + (ow * sw + cols.off[kw]) * p.is.w;
          wsrc[taps++] = p.weight + (kh * kw_n + kw) * g.c;
        }
      }
      accumulate_pixel(src.data(), wsrc.data(), taps, p.bias, g.c, orow + ow * g.c, p.relu);
    }
  }
}

template <typename scalar_t, typename acc_t>
void run_pass(const Pass<scalar_t, acc_t>& p, bool channels_last) {
  const Geometry& g = p.g;
  if constexpr (std::is_same_v<acc_t, float>) {
    if (!channels_last && use_flat_planes(g)) {
      const FlatPlan f = forward_flat_plan(g);
      with_flat_taps(g, [&](auto taps) {
        at::parallel_for(0, g.n * g.c, grain_for(g.ho * g.wo * g.taps()), [&](int64_t begin, int64_t end) {
          forward_nchw_flat<scalar_t, decltype(taps)::value>(p, f, begin, end);
        });
      });
      return;
    }
  }
  with_kernel_shape(g, [&](auto shape) {
    using Shape = decltype(shape);
    if (channels_last) {
      const RowTaps cols = row_taps(g.w, Shape::kw(g), Shape::sw(g), g.pw, g.dw, g.wo);
      at::parallel_for(0, g.n * g.ho, grain_for(g.wo * g.c * g.taps()),
                       [&](int64_t begin, int64_t end) { forward_nhwc_rows(p, cols, begin, end, shape); });
    } else {
      at::parallel_for(0, g.n * g.c, grain_for(g.ho * g.wo * g.taps()),
                       [&](int64_t begin, int64_t end) { forward_nchw_planes(p, begin, end, shape); });
    }
  });
}

// ---- backward: input ---------------------------------------------------------------

// Geometry of the stride-1 input gradient seen as a forward convolution of
// grad_output with the flipped kernel (padding d*(k-1) - p), or false when that
// padding would be negative.
bool transposed_as_forward(const Geometry& g, Geometry* t) {
  if (g.sh != 1 || g.sw != 1) return false;
  const int64_t ph = g.dh * (g.kh - 1) - g.ph, pw = g.dw * (g.kw - 1) - g.pw;
  if (ph < 0 || pw < 0) return false;
  *t = {g.n, g.c, g.ho, g.wo, g.h, g.w, g.kh, g.kw, 1, 1, ph, pw, g.dh, g.dw};
  return true;
}

// Transposed conv, per plane: every output row scatters into a private float
// copy of the input plane, so no two tasks write the same memory.
template <typename scalar_t, typename acc_t>
SHUFFLENET_CPU_MULTIVERSION void grad_input_nchw_planes(const scalar_t* go /*dense NCHW*/, const acc_t* weight,
                                                        scalar_t* gi /*dense NCHW*/, const Geometry& g,
                                                        const RowTaps& cols, int64_t begin, int64_t end) {
  acc_t* const plane_acc = thread_scratch<acc_t, 0>(g.h * g.w, acc_t(0));
  for (int64_t plane = begin; plane < end; ++plane) {
    const int64_t c = plane % g.c;
    const scalar_t* gp = go + plane * g.ho * g.wo;
    const acc_t* wp = weight + c * g.taps();
    std::fill(plane_acc, plane_acc + g.h * g.w, acc_t(0));
    for (int64_t oh = 0; oh < g.ho; ++oh) {
      const scalar_t* grow = gp + oh * g.wo;
      for (int64_t kh = 0; kh < g.kh; ++kh) {
        const int64_t ih = conv_input_index(oh, kh, g.sh, g.ph, g.dh);
        if (ih < 0 || ih >= g.h) continue;
        acc_t* arow = plane_acc + ih * g.w;
        for (int64_t kw = 0; kw < g.kw; ++kw) {
          const acc_t wv = wp[kh * g.kw + kw];
          acc_t* dst = arow + cols.off[kw];
          for (int64_t ow = cols.lo[kw]; ow < cols.hi[kw]; ++ow) dst[ow * g.sw] += wv * static_cast<acc_t>(grow[ow]);
        }
      }
    }
    store_row(gi + plane * g.h * g.w, plane_acc, g.h * g.w, false);
  }
}

// Transposed conv as a gather, per input row: each input pixel sums the output
// pixels that read it (ow_of: conv_output_index_for_input per [iw][kw]).
template <typename scalar_t, typename acc_t>
SHUFFLENET_CPU_MULTIVERSION void grad_input_nhwc_rows(const scalar_t* go /*dense NHWC*/, const acc_t* weight_t,
                                                      scalar_t* gi /*dense NHWC*/, const Geometry& g,
                                                      const int64_t* ow_of, int64_t begin, int64_t end) {
  std::array<const scalar_t*, kMaxTaps> src{};
  std::array<const acc_t*, kMaxTaps> wsrc{};
  std::array<int64_t, kMaxDepthwiseKernel> oh_of{};
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / g.h, ih = r % g.h;
    for (int64_t kh = 0; kh < g.kh; ++kh) oh_of[kh] = conv_output_index_for_input(ih, kh, g.sh, g.ph, g.dh, g.ho);
    for (int64_t iw = 0; iw < g.w; ++iw) {
      int64_t taps = 0;
      for (int64_t kh = 0; kh < g.kh; ++kh) {
        if (oh_of[kh] < 0) continue;
        for (int64_t kw = 0; kw < g.kw; ++kw) {
          const int64_t ow = ow_of[iw * g.kw + kw];
          if (ow < 0) continue;
          src[taps] = go + ((n * g.ho + oh_of[kh]) * g.wo + ow) * g.c;
          wsrc[taps++] = weight_t + (kh * g.kw + kw) * g.c;
        }
      }
      accumulate_pixel<scalar_t, acc_t>(src.data(), wsrc.data(), taps, nullptr, g.c, gi + (r * g.w + iw) * g.c,
                                        false);
    }
  }
}

// Strided input gradient on flat planes (grad_input_flat_plan): grad_output is
// placed, dilated, into the zeroed buffer, whose other positions stay zero.
template <typename scalar_t, int64_t kTaps>
SHUFFLENET_CPU_MULTIVERSION void grad_input_nchw_flat(const scalar_t* go /*dense NCHW*/, const float* weight,
                                                      scalar_t* gi /*dense NCHW*/, const Geometry& g,
                                                      const FlatPlan& f, int64_t begin, int64_t end) {
  float* const buf[2] = {flat_scratch<0>(0, f.buffer), flat_scratch<0>(1, f.buffer)};
  float* const res[2] = {flat_scratch<2>(0, f.vecs * kFloatLanes + kFloatLanes),
                         flat_scratch<2>(1, f.vecs * kFloatLanes + kFloatLanes)};
  const int64_t rows = g.h + g.dh * (g.kh - 1);
  const int64_t top = g.dh * (g.kh - 1) - g.ph, left = g.dw * (g.kw - 1) - g.pw;
  // grad_output columns [ow_lo, ow_hi) land inside the buffer's columns.
  const int64_t ow_lo = left >= 0 ? 0 : ceil_div(-left, g.sw);
  const int64_t ow_hi = std::min(g.wo, ceil_div(f.q - left, g.sw));
  const int64_t go_span = g.n * g.c * g.ho * g.wo;
  constexpr int64_t kHalf = kFloatLanes / 2;
  pipelined(
      begin, end,
      [&](int64_t plane, int k) SHUFFLENET_INLINE_LAMBDA {
        const scalar_t* gp = go + plane * g.ho * g.wo;
        for (int64_t oh = 0; oh < g.ho; ++oh) {
          const int64_t r = oh * g.sh + top;
          if (r < 0 || r >= rows) continue;
          float* dst = buf[k] + r * f.q;
          if (g.sw == 2) {
            // Whole vectors of grad_output values interleaved with zeros. The zero
            // lanes past the row's last value land on positions that hold zero or
            // on later rows, which are written after this one.
            const int64_t at = plane * g.ho * g.wo + oh * g.wo + ow_lo;
            for (int64_t j = 0; j < ow_hi - ow_lo; j += kHalf) {
              const FloatVec x = load_floats_upto(go + at + j, std::min(kHalf, ow_hi - ow_lo - j), go_span - at - j);
              const FloatVec zero{};
              store_floats(dst + (ow_lo + j) * 2 + left,
                           __builtin_shufflevector(x, zero, 0, 16, 1, 16, 2, 16, 3, 16, 4, 16, 5, 16, 6, 16, 7, 16));
            }
            continue;
          }
          for (int64_t ow = ow_lo; ow < ow_hi; ++ow) dst[ow * g.sw + left] = static_cast<float>(gp[oh * g.wo + ow]);
        }
      },
      [&](int64_t plane, int k) SHUFFLENET_INLINE_LAMBDA { flat_conv<kTaps>(buf[k], f, weight + plane % g.c * f.taps, 0.f, res[k]); },
      [&](int64_t plane, int k) SHUFFLENET_INLINE_LAMBDA {
        store_flat(res[k], f.q, g.h, g.w, false, gi + plane * g.h * g.w, (end - plane) * g.h * g.w);
      });
}

// 3x3 input gradient with column stride 2 (column dilation 1), channels_last,
// float accumulation, per input row. With e = iw + pw, input column iw is read
// by output column (e - kw) / 2 for the taps kw of e's parity: an even e by
// kw = 0 and 2 (outputs e/2 and e/2 - 1), the odd column after it by kw = 1
// (output e/2). Interior column pairs (e even, both outputs in range) therefore
// run as a stride-1 pattern over grad_output: P pairs share P + 1 loaded
// grad_output pixels per kernel row. Border columns check each tap. Each group
// of columns runs through every channel block before the next, so that its
// pixels are written whole (the weights come from L1). Rows: grows[kh] is the
// grad_output row that reads input row ih through kernel row kh, or null.
template <int64_t P, typename scalar_t>
C10_ALWAYS_INLINE void grad_input_nhwc_s2_pairs(const scalar_t* const* grows, const float* wt /*[taps, C] at c0*/,
                                                int64_t c, int64_t b, int64_t c0, scalar_t* dst) {
  FloatVec wv[9];
#pragma GCC unroll 9
  for (int64_t t = 0; t < 9; ++t) wv[t] = load_floats(wt + t * c);
  FloatVec acc[2 * P];
#pragma GCC unroll 16
  for (int64_t i = 0; i < 2 * P; ++i) acc[i] = FloatVec{};
#pragma GCC unroll 3
  for (int64_t kh = 0; kh < 3; ++kh) {
    if (grows[kh] == nullptr) continue;
    const scalar_t* src = grows[kh] + (b - 1) * c + c0;
    FloatVec x[P + 1];
#pragma GCC unroll 16
    for (int64_t j = 0; j <= P; ++j) x[j] = load_floats(src + j * c);
#pragma GCC unroll 16
    for (int64_t q = 0; q < P; ++q) {
      acc[2 * q] += wv[kh * 3] * x[q + 1] + wv[kh * 3 + 2] * x[q];
      acc[2 * q + 1] += wv[kh * 3 + 1] * x[q + 1];
    }
  }
#pragma GCC unroll 16
  for (int64_t i = 0; i < 2 * P; ++i) store_floats(dst + i * c + c0, acc[i]);
}

template <typename scalar_t>
SHUFFLENET_CPU_MULTIVERSION void grad_input_nhwc_rows_3x3s2(const scalar_t* go /*dense NHWC*/,
                                                            const float* weight_t /*[taps, C]*/,
                                                            scalar_t* gi /*dense NHWC*/, const Geometry& g,
                                                            int64_t begin, int64_t end) {
  constexpr int64_t P = 4;
  const int64_t c = g.c;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / g.h, ih = r % g.h;
    const scalar_t* grows[3];
    for (int64_t kh = 0; kh < 3; ++kh) {
      const int64_t oh = conv_output_index_for_input(ih, kh, g.sh, g.ph, g.dh, g.ho);
      grows[kh] = oh >= 0 ? go + (n * g.ho + oh) * g.wo * c : nullptr;
    }
    scalar_t* const irow = gi + r * g.w * c;
    const auto checked_pixel = [&](int64_t iw, int64_t c0) SHUFFLENET_INLINE_LAMBDA {
      FloatVec acc{};
      for (int64_t kh = 0; kh < 3; ++kh) {
        if (grows[kh] == nullptr) continue;
        for (int64_t kw = 0; kw < 3; ++kw) {
          const int64_t ow = conv_output_index_for_input(iw, kw, int64_t{2}, g.pw, int64_t{1}, g.wo);
          if (ow >= 0) acc += load_floats(weight_t + (kh * 3 + kw) * c + c0) * load_floats(grows[kh] + ow * c + c0);
        }
      }
      store_floats(irow + iw * c + c0, acc);
    };
    int64_t iw = 0;
    while (iw < g.w) {
      const int64_t e = iw + g.pw, b = e / 2;  // interior pairs: outputs b - 1 and b
      scalar_t* const dst = irow + iw * c;
      if (e % 2 == 0 && e >= 2 && b + P <= g.wo && iw + 2 * P <= g.w) {
        SHUFFLENET_FOR_OVERLAPPED_BLOCKS(kFloatLanes, 0, c, c0,
                                         grad_input_nhwc_s2_pairs<P>(grows, weight_t + c0, c, b, c0, dst))
        iw += 2 * P;
      } else if (e % 2 == 0 && e >= 2 && b < g.wo && iw + 2 <= g.w) {
        SHUFFLENET_FOR_OVERLAPPED_BLOCKS(kFloatLanes, 0, c, c0,
                                         grad_input_nhwc_s2_pairs<1>(grows, weight_t + c0, c, b, c0, dst))
        iw += 2;
      } else {
        SHUFFLENET_FOR_OVERLAPPED_BLOCKS(kFloatLanes, 0, c, c0, checked_pixel(iw, c0))
        ++iw;
      }
    }
  }
}

// Input gradient with stride > 1 (stride 1 runs as a forward pass).
template <typename scalar_t, typename acc_t>
void grad_input_strided(const scalar_t* go, const acc_t* weight, scalar_t* gi, const Geometry& g, bool channels_last) {
  if (channels_last) {
    if constexpr (std::is_same_v<acc_t, float>) {
      if (g.kh == 3 && g.kw == 3 && g.sw == 2 && g.dw == 1 && g.c >= kFloatLanes) {
        at::parallel_for(0, g.n * g.h, grain_for(g.w * g.c * g.taps() / 4), [&](int64_t begin, int64_t end) {
          grad_input_nhwc_rows_3x3s2(go, weight, gi, g, begin, end);
        });
        return;
      }
    }
    std::vector<int64_t> ow_of(g.w * g.kw);
    for (int64_t iw = 0; iw < g.w; ++iw) {
      for (int64_t kw = 0; kw < g.kw; ++kw) {
        ow_of[iw * g.kw + kw] = conv_output_index_for_input(iw, kw, g.sw, g.pw, g.dw, g.wo);
      }
    }
    at::parallel_for(0, g.n * g.h, grain_for(g.w * g.c * g.taps()), [&](int64_t begin, int64_t end) {
      grad_input_nhwc_rows(go, weight, gi, g, ow_of.data(), begin, end);
    });
  } else {
    if constexpr (std::is_same_v<acc_t, float>) {
      const FlatPlan f = grad_input_flat_plan(g);
      with_flat_taps(g, [&](auto taps) {
        at::parallel_for(0, g.n * g.c, grain_for(g.ho * g.wo * g.taps()), [&](int64_t begin, int64_t end) {
          grad_input_nchw_flat<scalar_t, decltype(taps)::value>(go, weight, gi, g, f, begin, end);
        });
      });
      return;
    }
    const RowTaps cols = row_taps(g.w, g.kw, g.sw, g.pw, g.dw, g.wo);
    at::parallel_for(0, g.n * g.c, grain_for(g.ho * g.wo * g.taps()), [&](int64_t begin, int64_t end) {
      grad_input_nchw_planes(go, weight, gi, g, cols, begin, end);
    });
  }
}

// ---- backward: weight and bias -------------------------------------------------------

// One task per channel, reduced in a fixed order: per image, each tap accumulates
// elementwise row products into a row of partial sums (vectorisable); the rows are
// summed into double totals once per image.
template <typename scalar_t, typename acc_t, typename Shape>
SHUFFLENET_CPU_MULTIVERSION void grad_weight_nchw_channels(const scalar_t* go /*dense NCHW*/, const scalar_t* in,
                                                           Strides4 is, acc_t* gw /*[C, taps]*/,
                                                           acc_t* gb /*[C] or null*/, const Geometry& g,
                                                           const RowTaps& cols, int64_t begin, int64_t end, Shape) {
  const int64_t kh_n = Shape::kh(g), kw_n = Shape::kw(g), sw = Shape::sw(g);
  {
    std::vector<acc_t> part((g.taps() + 1) * g.wo);  // [taps + bias][wo]
    std::vector<double> total(g.taps() + 1);
    for (int64_t c = begin; c < end; ++c) {
      std::fill(total.begin(), total.end(), 0.0);
      for (int64_t n = 0; n < g.n; ++n) {
        std::fill(part.begin(), part.end(), acc_t(0));
        const scalar_t* ip = in + n * is.n + c * is.c;
        const scalar_t* gp = go + (n * g.c + c) * g.ho * g.wo;
        for (int64_t oh = 0; oh < g.ho; ++oh) {
          const scalar_t* grow = gp + oh * g.wo;
          if (gb) {
            acc_t* pb = part.data() + g.taps() * g.wo;
            for (int64_t ow = 0; ow < g.wo; ++ow) pb[ow] += static_cast<acc_t>(grow[ow]);
          }
          for (int64_t kh = 0; kh < kh_n; ++kh) {
            const int64_t ih = conv_input_index(oh, kh, g.sh, g.ph, g.dh);
            if (ih < 0 || ih >= g.h) continue;
            const scalar_t* irow = ip + ih * is.h;
            for (int64_t kw = 0; kw < kw_n; ++kw) {
              acc_t* pt = part.data() + (kh * kw_n + kw) * g.wo;
              const scalar_t* src = irow + cols.off[kw];
              for (int64_t ow = cols.lo[kw]; ow < cols.hi[kw]; ++ow) {
                pt[ow] += static_cast<acc_t>(grow[ow]) * static_cast<acc_t>(src[ow * sw]);
              }
            }
          }
        }
        for (int64_t t = 0; t <= g.taps(); ++t) {
          const acc_t* pt = part.data() + t * g.wo;
          double s = 0.0;
          for (int64_t ow = 0; ow < g.wo; ++ow) s += pt[ow];
          total[t] += s;
        }
      }
      for (int64_t t = 0; t < g.taps(); ++t) gw[c * g.taps() + t] = static_cast<acc_t>(total[t]);
      if (gb) gb[c] = static_cast<acc_t>(total[g.taps()]);
    }
  }
}

// Float accumulation on vectors: per image, the plane is copied into a zero-padded
// buffer (as in the forward pass) and each tap keeps a vector of partial sums of
// grad_output * input across a row block and several images
// (kWeightGradLaneProducts); the lanes are summed into double totals once per
// group of images, in a fixed order.
template <typename scalar_t, typename Shape>
SHUFFLENET_CPU_MULTIVERSION void grad_weight_nchw_channels_vec(const scalar_t* go /*dense NCHW*/, const scalar_t* in,
                                                               Strides4 is, float* gw /*[C, taps]*/,
                                                               float* gb /*[C] or null*/, const Geometry& g,
                                                               int64_t begin, int64_t end, Shape) {
  const int64_t kh_n = Shape::kh(g), kw_n = Shape::kw(g), sw = Shape::sw(g);
  const int64_t pitch = g.w + 2 * g.pw + 2 * kFloatLanes * sw;
  const int64_t wo_pad = (g.wo + kFloatLanes - 1) / kFloatLanes * kFloatLanes;
  float* const padded = thread_scratch<float, 0>((g.h + 2 * g.ph) * pitch, 0.f);
  float* const grow = thread_scratch<float, 1>(wo_pad, 0.f);  // one grad_output row; the tail stays zero
  std::vector<double> total(g.taps() + 1);
  const int64_t images_per_sum = std::max<int64_t>(1, kWeightGradLaneProducts / (g.ho * (wo_pad / kFloatLanes)));
  FloatVec acc[Shape::kTapBound] = {};
  FloatVec acc_bias{};
  for (int64_t c = begin; c < end; ++c) {
    std::fill(total.begin(), total.end(), 0.0);
    for (int64_t n = 0; n < g.n; ++n) {
      const scalar_t* ip = in + n * is.n + c * is.c;
      for (int64_t ih = 0; ih < g.h; ++ih) {
        float* dst = padded + (ih + g.ph) * pitch + g.pw;
        const scalar_t* src = ip + ih * is.h;
        for (int64_t iw = 0; iw < g.w; ++iw) dst[iw] = static_cast<float>(src[iw]);
      }
      if (n % images_per_sum == 0) {
        for (int64_t t = 0; t < kh_n * kw_n; ++t) acc[t] = FloatVec{};
        acc_bias = FloatVec{};
      }
      const scalar_t* gp = go + (n * g.c + c) * g.ho * g.wo;
      for (int64_t oh = 0; oh < g.ho; ++oh) {
        for (int64_t ow = 0; ow < g.wo; ++ow) grow[ow] = static_cast<float>(gp[oh * g.wo + ow]);
        for (int64_t ow0 = 0; ow0 < wo_pad; ow0 += kFloatLanes) {
          const FloatVec gv = load_floats(grow + ow0);
          const int64_t lanes = g.wo - ow0;  // < kFloatLanes in the last block only
          acc_bias += gv;
          for (int64_t kh = 0; kh < kh_n; ++kh) {
            const float* prow = padded + (oh * g.sh + kh * g.dh) * pitch + ow0 * sw;
            for (int64_t kw = 0; kw < kw_n; ++kw) {
              // Lanes past the row end read real input columns: masked out, so an
              // inf there cannot turn 0 * inf into NaN.
              const FloatVec prod = gv * load_floats_strided(prow + kw * g.dw, sw);
              acc[kh * kw_n + kw] += lanes >= kFloatLanes ? prod : first_lanes(prod, lanes);
            }
          }
        }
      }
      if ((n + 1) % images_per_sum != 0 && n + 1 < g.n) continue;
      for (int64_t t = 0; t < kh_n * kw_n; ++t) total[t] += sum_lanes(acc[t]);
      total[g.taps()] += sum_lanes(acc_bias);
    }
    for (int64_t t = 0; t < g.taps(); ++t) gw[c * g.taps() + t] = static_cast<float>(total[t]);
    if (gb) gb[c] = static_cast<float>(total[g.taps()]);
  }
}

// Flat planes (forward_flat_plan): per image, the input plane fills the phase
// buffer as in the forward pass and the grad_output plane a buffer of the flat
// outputs' pitch (zero past each row), and each tap keeps a vector of partial
// sums of grad_output * input across several images (kWeightGradLaneProducts);
// the lanes are summed into double totals once per group of images, in a fixed
// order.
template <typename scalar_t, int64_t kTaps>
SHUFFLENET_CPU_MULTIVERSION void grad_weight_nchw_flat(const scalar_t* go /*dense NCHW*/, const scalar_t* in,
                                                       Strides4 is, float* gw /*[C, taps]*/, float* gb /*[C] or null*/,
                                                       const Geometry& g, const FlatPlan& f, int64_t begin,
                                                       int64_t end) {
  const int64_t taps = kTaps ? kTaps : f.taps;
  const int64_t flat = f.vecs * kFloatLanes;
  const int64_t gsize = std::max(flat, g.ho * f.q) + kFloatLanes;
  float* const buf[2] = {flat_scratch<0>(0, f.buffer), flat_scratch<0>(1, f.buffer)};
  float* const gbuf[2] = {flat_scratch<2>(0, gsize), flat_scratch<2>(1, gsize)};
  // 1 where a flat output is a real one: the dropped columns may read input
  // values (an inf there must not turn 0 * inf into NaN).
  float* const valid = thread_scratch<float, 4>(flat, 0.f);
  for (int64_t i = 0; i < f.length; ++i) valid[i] = i % f.q < g.wo ? 1.f : 0.f;
  FlatPlan gplan = f;  // grad_output rows: one phase of pitch q
  gplan.s = 1;
  std::array<double, kMaxTaps + 1> total{};
  const int64_t images_per_sum = std::max<int64_t>(1, kWeightGradLaneProducts / f.vecs);
  FloatVec acc[kTaps ? kTaps : kMaxTaps] = {};
  FloatVec acc_bias{};
  const int64_t in_span = span_of(is, g), go_span = g.n * g.c * g.ho * g.wo;
  // Items: (channel, image) pairs, images innermost.
  pipelined(
      begin * g.n, end * g.n,
      [&](int64_t item, int k) SHUFFLENET_INLINE_LAMBDA {
        const int64_t c = item / g.n, n = item % g.n;
        const int64_t at = n * is.n + c * is.c, go_at = (n * g.c + c) * g.ho * g.wo;
        fill_flat(in + at, in_span - at, is.h, g.h, g.w, g.ph, g.pw, f, buf[k]);
        fill_flat(go + go_at, go_span - go_at, g.wo, g.ho, g.wo, 0, 0, gplan, gbuf[k]);
      },
      [&](int64_t item, int k) SHUFFLENET_INLINE_LAMBDA {
        const int64_t c = item / g.n, n = item % g.n;
        if (n == 0) std::fill(total.begin(), total.end(), 0.0);
        if (n % images_per_sum == 0) {
          for (int64_t t = 0; t < taps; ++t) acc[t] = FloatVec{};
          acc_bias = FloatVec{};
        }
        for (int64_t i0 = 0; i0 < flat; i0 += kFloatLanes) {
          const FloatVec gv = load_floats(gbuf[k] + i0);
          const auto real = load_floats(valid + i0) != 0.f;
          acc_bias += gv;
          for (int64_t t = 0; t < taps; ++t) acc[t] = real ? acc[t] + gv * load_floats(buf[k] + f.off[t] + i0) : acc[t];
        }
        if ((n + 1) % images_per_sum != 0 && n + 1 < g.n) return;
        for (int64_t t = 0; t < taps; ++t) total[t] += sum_lanes(acc[t]);
        total[taps] += sum_lanes(acc_bias);
        if (n + 1 < g.n) return;
        for (int64_t t = 0; t < taps; ++t) gw[c * taps + t] = static_cast<float>(total[t]);
        if (gb) gb[c] = static_cast<float>(total[taps]);
      },
      [](int64_t, int) SHUFFLENET_INLINE_LAMBDA {});
}

template <typename scalar_t, typename acc_t>
void grad_weight_nchw(const scalar_t* go, const scalar_t* in, Strides4 is, acc_t* gw, acc_t* gb, const Geometry& g) {
  if constexpr (std::is_same_v<acc_t, float>) {
    if (use_flat_planes(g)) {
      const FlatPlan f = forward_flat_plan(g);
      with_flat_taps(g, [&](auto taps) {
        at::parallel_for(0, g.c, 1, [&](int64_t begin, int64_t end) {
          grad_weight_nchw_flat<scalar_t, decltype(taps)::value>(go, in, is, gw, gb, g, f, begin, end);
        });
      });
      return;
    }
  }
  with_kernel_shape(g, [&](auto shape) {
    using Shape = decltype(shape);
    const RowTaps cols = row_taps(g.w, Shape::kw(g), Shape::sw(g), g.pw, g.dw, g.wo);
    at::parallel_for(0, g.c, 1, [&](int64_t begin, int64_t end) {
      if constexpr (std::is_same_v<acc_t, float>) {
        grad_weight_nchw_channels_vec(go, in, is, gw, gb, g, begin, end, shape);
      } else {
        grad_weight_nchw_channels(go, in, is, gw, gb, g, cols, begin, end, shape);
      }
    });
  });
}

// Partial sums of rows [r_begin, r_end) into p: [taps + 1, C] (the last row is the bias).
template <typename scalar_t, typename acc_t>
SHUFFLENET_CPU_MULTIVERSION void grad_weight_nhwc_rows(const scalar_t* go /*dense NHWC*/, const scalar_t* in,
                                                       Strides4 is, acc_t* p, const Geometry& g, int64_t r_begin,
                                                       int64_t r_end) {
  for (int64_t r = r_begin; r < r_end; ++r) {
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

// 3x3 weight gradient with column stride SW (1 or 2, column dilation 1),
// channels_last, float accumulation: partial sums of output rows
// [r_begin, r_end) into p ([taps + 1, C], the last row the bias). Per block of
// kFloatLanes channels the ten sums stay in registers across all the rows (a
// block that overlaps the previous one, when C is not a multiple of the block,
// stores the same sums again); interior pixels go P at a time so that each
// loaded input pixel serves every output of the block that reads it. Border
// pixels check each tap; rows[kh] is null outside the input.
template <int64_t P, int64_t SW, typename scalar_t>
C10_ALWAYS_INLINE void grad_weight_nhwc_3x3_pixels(const scalar_t* grow, const scalar_t* const* rows, int64_t c,
                                                   int64_t in_w, FloatVec* acc) {
  FloatVec gv[P];
#pragma GCC unroll 8
  for (int64_t q = 0; q < P; ++q) {
    gv[q] = load_floats(grow + q * c);
    acc[9] += gv[q];
  }
#pragma GCC unroll 3
  for (int64_t kh = 0; kh < 3; ++kh) {
    if (rows[kh] == nullptr) continue;
#pragma GCC unroll 16
    for (int64_t j = 0; j < (P - 1) * SW + 3; ++j) {
      const FloatVec x = load_floats(rows[kh] + j * in_w);
#pragma GCC unroll 8
      for (int64_t q = 0; q < P; ++q) {
        const int64_t kw = j - q * SW;  // constant once unrolled
        if (kw >= 0 && kw < 3) acc[kh * 3 + kw] += gv[q] * x;
      }
    }
  }
}

template <int64_t SW, typename scalar_t>
SHUFFLENET_CPU_MULTIVERSION void grad_weight_nhwc_rows_3x3(const scalar_t* go /*dense NHWC*/, const scalar_t* in,
                                                           Strides4 is, float* p, const Geometry& g,
                                                           const RowTaps& cols, int64_t r_begin, int64_t r_end) {
  constexpr int64_t P = SW == 1 ? 4 : 3;
  const int64_t c = g.c;
  const auto channel_block = [&](int64_t c0) SHUFFLENET_INLINE_LAMBDA {
    FloatVec acc[10];
    for (int64_t t = 0; t < 10; ++t) acc[t] = FloatVec{};
    for (int64_t r = r_begin; r < r_end; ++r) {
      const int64_t n = r / g.ho, oh = r % g.ho;
      const scalar_t* rows[3];
      for (int64_t kh = 0; kh < 3; ++kh) {
        const int64_t ih = conv_input_index(oh, kh, g.sh, g.ph, g.dh);
        rows[kh] = (ih >= 0 && ih < g.h) ? in + n * is.n + ih * is.h + c0 : nullptr;
      }
      const scalar_t* const grow = go + r * g.wo * c + c0;
      const auto checked_pixel = [&](int64_t ow) SHUFFLENET_INLINE_LAMBDA {
        const FloatVec gv = load_floats(grow + ow * c);
        acc[9] += gv;
        for (int64_t kh = 0; kh < 3; ++kh) {
          if (rows[kh] == nullptr) continue;
          for (int64_t kw = 0; kw < 3; ++kw) {
            if (ow < cols.lo[kw] || ow >= cols.hi[kw]) continue;
            acc[kh * 3 + kw] += gv * load_floats(rows[kh] + (ow * SW + cols.off[kw]) * is.w);
          }
        }
      };
      const auto block = [&](auto pixels, int64_t ow) SHUFFLENET_INLINE_LAMBDA {
        const int64_t shift = (ow * SW + cols.off[0]) * is.w;
        const scalar_t* const shifted[3] = {rows[0] ? rows[0] + shift : nullptr, rows[1] ? rows[1] + shift : nullptr,
                                            rows[2] ? rows[2] + shift : nullptr};
        grad_weight_nhwc_3x3_pixels<decltype(pixels)::value, SW>(grow + ow * c, shifted, c, is.w, acc);
      };
      int64_t ow = 0;
      for (; ow < cols.interior_lo; ++ow) checked_pixel(ow);
      for (; ow + P <= cols.interior_hi; ow += P) block(std::integral_constant<int64_t, P>{}, ow);
      for (; ow < cols.interior_hi; ++ow) block(std::integral_constant<int64_t, 1>{}, ow);
      for (; ow < g.wo; ++ow) checked_pixel(ow);
    }
    for (int64_t t = 0; t < 10; ++t) store_floats(p + t * c + c0, acc[t]);
  };
  SHUFFLENET_FOR_OVERLAPPED_BLOCKS(kFloatLanes, 0, c, c0, channel_block(c0))
}

// Split reduction: fixed chunks of output rows each produce [taps + 1, C]
// partial sums (the last row is the bias), then the partials are added in
// chunk order, in double. The chunks depend only on the shape (3x3 with column
// stride 1 or 2 in float: fewer, longer chunks, their sums kept in registers).
template <typename scalar_t, typename acc_t>
void grad_weight_nhwc(const scalar_t* go /*dense NHWC*/, const scalar_t* in, Strides4 is, acc_t* gw /*[C, taps]*/,
                      acc_t* gb /*[C] or null*/, const Geometry& g) {
  constexpr bool kFloat = std::is_same_v<acc_t, float>;
  const bool fixed_3x3 = kFloat && g.kh == 3 && g.kw == 3 && (g.sw == 1 || g.sw == 2) && g.dw == 1 &&
                         g.c >= kFloatLanes && is.c == 1;
  const int64_t rows = g.n * g.ho;
  const int64_t chunks = std::min(rows, fixed_3x3 ? kWeightGradChunks3x3 : kWeightGradChunks);
  const int64_t rows_per_chunk = (rows + chunks - 1) / chunks;
  const int64_t width = (g.taps() + 1) * g.c;
  acc_t* const partial = thread_scratch<acc_t, 0>(chunks * width, acc_t(0));
  const RowTaps cols = row_taps(g.w, g.kw, g.sw, g.pw, g.dw, g.wo);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t r_begin = std::min(rows, chunk * rows_per_chunk);
      const int64_t r_end = std::min(rows, (chunk + 1) * rows_per_chunk);
      acc_t* const p = partial + chunk * width;
      if constexpr (kFloat) {
        if (fixed_3x3) {
          if (g.sw == 1) {
            grad_weight_nhwc_rows_3x3<1>(go, in, is, p, g, cols, r_begin, r_end);
          } else {
            grad_weight_nhwc_rows_3x3<2>(go, in, is, p, g, cols, r_begin, r_end);
          }
          continue;
        }
      }
      grad_weight_nhwc_rows(go, in, is, p, g, r_begin, r_end);
    }
  });
  std::vector<double> sum(width, 0.0);
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const acc_t* const p = partial + chunk * width;
    for (int64_t i = 0; i < width; ++i) sum[i] += p[i];
  }
  for (int64_t t = 0; t < g.taps(); ++t) {
    for (int64_t c = 0; c < g.c; ++c) gw[c * g.taps() + t] = static_cast<acc_t>(sum[t * g.c + c]);
  }
  if (gb) {
    for (int64_t c = 0; c < g.c; ++c) gb[c] = static_cast<acc_t>(sum[g.taps() * g.c + c]);
  }
}

// ---- op entry points ---------------------------------------------------------------

// Strides of a dense [N, C, H, W] tensor in either layout.
Strides4 dense_strides(int64_t c, int64_t h, int64_t w, bool channels_last) {
  return channels_last ? Strides4{h * w * c, 1, w * c, c} : Strides4{c * h * w, h * w, w, 1};
}

Geometry make_geometry(const at::Tensor& input, const at::Tensor& weight, std::array<int64_t, 2> out,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  return {input.size(0), input.size(1), input.size(2), input.size(3), out[0], out[1], weight.size(2),
          weight.size(3), stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1]};
}

// Whether `weight` ([C, 1, kH, kW]) already holds element (c, t = kh*kW + kw) at
// offset t*C + c ("tap-major": stride(0) == 1), i.e. is the [taps, C] matrix the
// channels_last kernels read. Size-1 dims place no constraint.
bool is_tap_major(const at::Tensor& weight) {
  const int64_t c = weight.size(0), kh = weight.size(2), kw = weight.size(3);
  return (c == 1 || weight.stride(0) == 1) && (kh == 1 || weight.stride(2) == kw * c) &&
         (kw == 1 || weight.stride(3) == c);
}

// Whether the forward kernels can read `weight` as is: already in the
// accumulation type and laid out as the [C, taps] (NCHW: contiguous) or
// [taps, C] (NHWC: tap-major) matrix they expect. Tap-major is the layout the nn
// units cache for channels_last models
// (`w.permute(2, 3, 1, 0).contiguous().permute(3, 2, 0, 1)`).
bool weight_usable_as_is(const at::Tensor& weight, bool channels_last) {
  return weight.scalar_type() == at::toOpMathType(weight.scalar_type()) &&
         (channels_last ? is_tap_major(weight) : weight.is_contiguous());
}

// Weights in the accumulation type: [C, taps] for NCHW, [taps, C] for NHWC (a
// view, no copy, when weight_usable_as_is).
at::Tensor prepared_weight(const at::Tensor& weight, bool channels_last) {
  const auto acc = at::toOpMathType(weight.scalar_type());
  at::Tensor w = weight.reshape({weight.size(0), weight.size(2) * weight.size(3)}).to(acc);
  return channels_last ? w.t().contiguous() : w.contiguous();
}

// The bias in the accumulation type, dense; the tensor itself when it already is.
at::Tensor prepared_bias(const c10::optional<at::Tensor>& bias, at::ScalarType acc) {
  if (!bias.has_value() || !bias->defined()) return at::Tensor();
  if (bias->scalar_type() == acc && bias->is_contiguous()) return *bias;
  return bias->to(acc).contiguous();
}

at::Tensor depthwise_conv2d_cpu(const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool relu) {
  // Helper ATen calls below are implementation details, not part of any autograd graph.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const auto out_hw = check_depthwise_conv2d_args(input, weight, bias, stride, padding, dilation);
  const Geometry g = make_geometry(input, weight, out_hw, stride, padding, dilation);
  const at::MemoryFormat fmt = output_memory_format(input);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  at::Tensor out = empty_cached({g.n, g.c, g.ho, g.wo}, input, fmt);
  if (out.numel() == 0) return out;
  const at::Tensor x = with_plain_strides(input, cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  // The common case (float32, or a weight cached in the kernels' layout) makes
  // no ATen call here: the kernels read the weight's own memory.
  const at::Tensor w = weight_usable_as_is(weight, cl) ? weight : prepared_weight(weight, cl);
  const at::Tensor b = prepared_bias(bias, at::toOpMathType(weight.scalar_type()));
  const bool has_bias = b.defined();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "depthwise_conv2d_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* bp = has_bias ? b.const_data_ptr<acc_t>() : nullptr;
    run_pass<scalar_t, acc_t>({x.const_data_ptr<scalar_t>(), strides_of(x), w.const_data_ptr<acc_t>(), bp,
                               out.mutable_data_ptr<scalar_t>(), g, relu},
                              cl);
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
  check_relu_output(relu_output, out_sizes, input, op);
  const at::MemoryFormat fmt = output_memory_format(input);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;

  at::Tensor go = grad_output;
  if (relu_output.has_value() && relu_output->defined()) {
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
      scalar_t* gip = grad_input.mutable_data_ptr<scalar_t>();
      Geometry tg;
      if (transposed_as_forward(g, &tg)) {
        // Taps reversed: [C, taps] along dim 1, [taps, C] along dim 0.
        const at::Tensor flipped = w.flip({cl ? 0 : 1}).contiguous();
        run_pass<scalar_t, acc_t>(
            {gop, dense_strides(g.c, g.ho, g.wo, cl), flipped.const_data_ptr<acc_t>(), nullptr, gip, tg, false}, cl);
      } else {
        grad_input_strided<scalar_t, acc_t>(gop, w.const_data_ptr<acc_t>(), gip, g, cl);
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
