// The whole ShuffleNet V2 unit in one pass on CPU (v2_unit, eval mode, BN folded).
//
// The unit reads its input once and writes its output once: no intermediate of a
// branch goes to memory in full. Work is split into (image, band of output rows)
// tasks over at::parallel_for; a band is walked in steps of a few output rows, and
// per step, in per-thread scratch buffers sized to stay in cache (pixel-major,
// channels padded to whole blocks of 16):
//   1. the first 1x1 conv (+bias, ReLU) of the input rows the step needs that the
//      previous step has not already computed (the rows it shares with the
//      previous step are moved to the top of the buffer, not recomputed);
//   2. the 3x3 depthwise conv (+bias) of those rows (stride 1 or 2, padding 1), a
//      few output pixels at a time with independent accumulators;
//   3. stride 2: the projection branch from the same input rows, depthwise 3x3
//      stride 2 (+bias) then 1x1 (+bias, ReLU);
//   4. the second 1x1 conv (+bias, ReLU), whose epilogue writes the output with the
//      concat and channel shuffle fused: channel 2i+1 = branch channel i, channel 2i =
//      kept half (stride 1) or projection (stride 2) channel i.
// The 1x1 convs are register-blocked GEMM tiles over weights packed once and cached
// (gemm_tile.h, PackCache of pack_cache.h). With direct input and output, each step prefetches the
// input and output rows of the next one.
// With fewer images than threads an image is split into several bands, and a band that
// ran step 1 itself would also compute the input rows at its edges, which its
// neighbours compute too. Then, while the results fit in 512 KiB, step 1 runs first over
// whole images instead, in a parallel pass of its own over equal pixel ranges, and the
// bands start from its results.
//
// Fast path, float32 channels_last (what accelerate() feeds it): step 4 stores straight
// into the output, the kept half interleaved in registers, and input rows are read in
// place (a channel slice too; with stride 2 only when the input's channels are whole
// blocks of 16, else they are copied to padded rows first, so that every depthwise load
// is a whole vector). Otherwise (NCHW, float16, bfloat16) input rows are first
// converted to float32 pixel-major rows in scratch, and each step's results are written
// out (converted, rounded once) by a small commit pass over the step's output rows,
// still while they are in cache. float64 runs the reference composition of the
// per-op kernels (pointwise_conv, depthwise_conv2d, concat_shuffle): it is there for
// checks, not speed.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "cpu/cpu_kernels.h"
#include "cpu/float_vec.h"
#include "cpu/gemm_tile.h"
#include "cpu/output_cache.h"
#include "cpu/pack_cache.h"
#include "cpu/v2_unit_parts.h"

namespace shufflenet::cpu {
namespace {

using gemm::blocks_of;
using gemm::kBlock;
using gemm::padded;
using gemm::PackedPointwise;
using unit::depthwise3x3;
using unit::pack_cache;
using unit::PackKind;
using unit::UnitPackCache;

// ---- the plan of one call -----------------------------------------------------------

using ConvertRowsFn = void (*)(const void* ctx, int64_t n, int64_t r0, int64_t r1, float* dst);
using CommitRowsFn = void (*)(const void* ctx, int64_t n, int64_t ro0, int64_t ro1, const float* y,
                              const float* proj);

struct Plan {
  int64_t h, w, h_out, w_out, stride;
  int64_t c_branch, c_mid, c_half;  // as in V2UnitShape
  int64_t cb_p, cm_p, ch_p;         // the same, padded to whole blocks
  PackedPointwise pw1, pw2, proj_pw;
  const float *dw, *dw_bias, *proj_dw, *proj_dw_bias;  // [blocks][9][16], [blocks * 16]
  int64_t rows_per_step, bands;
  // Several bands per image (fewer images than threads): the first 1x1 conv of every
  // input pixel is computed first, in a pass of its own over `bands` pixel ranges per
  // image (pw1_part_pixels each), into pw1_all ([n][h][w][cm_p]); the bands then read
  // it instead of recomputing the rows at their edges. Null otherwise.
  float* pw1_all;
  int64_t pw1_part_pixels;
  bool pw1_pass;  // this parallel pass computes pw1_all (else: the bands)
  // Fast path (float32, channels_last): the output stored directly (direct_out) and the
  // input rows read in place (direct_in; with stride 2 only when the input's channels are
  // whole blocks of 16, so that the projection's depthwise conv reads whole vectors).
  bool direct_in, direct_out;
  const float* in;    // image 0, pixel 0, channel 0 of the input
  int64_t in_image;   // input strides: image, pixel (rows are w pixels apart)
  int64_t in_pixel;
  int64_t branch_c0;  // first input channel of the branch (C/2 with stride 1, 0 with stride 2)
  float* out;         // dense channels_last output
  int64_t out_image;
  // Other dtypes and layouts: convert input rows [r0, r1) of image n (branch channels)
  // into float [rows][w][cb_p]; write output rows [ro0, ro1) from the step's results.
  ConvertRowsFn convert;
  CommitRowsFn commit;
  const void* ctx;
};

// Floats of per-thread scratch, each part starting on a 64-byte boundary.
struct ScratchLayout {
  int64_t in, mid, dw, proj_dw, proj, y, total;
  int64_t in_rows;  // input rows the conversion buffer holds
};

ScratchLayout scratch_layout(const Plan& p) {
  const int64_t r = p.rows_per_step;
  const int64_t cap = p.stride == 1 ? r + 2 : 2 * r + 1;  // input rows one step reads
  const int64_t px = r * p.w_out;
  const auto round = [](int64_t v) { return (v + kBlock - 1) / kBlock * kBlock; };
  ScratchLayout s{};
  int64_t at = 0;
  const auto take = [&](int64_t floats) {
    const int64_t start = at;
    at += round(floats);
    return start;
  };
  s.in_rows = p.direct_in ? 0 : cap;
  s.in = take(s.in_rows * p.w * p.cb_p);
  s.mid = take(p.pw1_all != nullptr ? 0 : cap * p.w * p.cm_p);
  s.dw = take(px * p.cm_p);
  s.proj_dw = take(p.stride == 2 ? px * p.cb_p : 0);
  s.proj = take(p.stride == 2 ? px * p.ch_p : 0);
  s.y = take(p.direct_out ? 0 : px * p.ch_p);
  s.total = at;
  return s;
}

// ---- the band kernel (compiled once per instruction set) -------------------------------

// Asks for floats [p, p + count) to be brought into the cache, for reading or writing:
// the input and output rows of the next step, while this one computes (the activations
// of a batch outgrow the L2 cache, and a row step touches a few tens of KB of each).
C10_ALWAYS_INLINE void prefetch_floats(const float* p, int64_t count, bool write) {
  for (int64_t i = 0; i < count; i += kBlock) {
    if (write) {
      __builtin_prefetch(p + i, 1, 3);
    } else {
      __builtin_prefetch(p + i, 0, 3);
    }
  }
}

// Output rows [ro_begin, ro_end) of image n (see the file comment for the steps).
template <int L, int MR, int NB>
C10_ALWAYS_INLINE void run_band(const Plan& p, const ScratchLayout& sl, float* scratch, int64_t n, int64_t ro_begin,
                                int64_t ro_end) {
  const int64_t w = p.w, s = p.stride;
  float* in_buf = scratch + sl.in;
  float* dw_out = scratch + sl.dw;
  const int64_t mid_row = w * p.cm_p, in_row = w * p.cb_p;
  const float* in_image = p.direct_out ? p.in + n * p.in_image : nullptr;
  // pw1 results of input rows [first, end) are in mid; converted input rows from in_first on in in_buf
  const bool precomputed = p.pw1_all != nullptr;
  float* mid = precomputed ? p.pw1_all + n * p.h * mid_row : scratch + sl.mid;
  int64_t first = 0, end = precomputed ? p.h : 0, in_first = 0;
  // the branch's depthwise conv, stride s
  const auto dw = [s](auto... args) SHUFFLENET_INLINE_LAMBDA {
    if (s == 1) {
      depthwise3x3<L, 1>(args...);
    } else {
      depthwise3x3<L, 2>(args...);
    }
  };
  for (int64_t a = ro_begin; a < ro_end; a += p.rows_per_step) {
    const int64_t b = std::min(a + p.rows_per_step, ro_end);
    const int64_t lo = std::max<int64_t>(a * s - 1, 0);
    const int64_t hi = std::min<int64_t>((b - 1) * s + 2, p.h);
    if (p.direct_out && b < ro_end) {
      const int64_t b_next = std::min(b + p.rows_per_step, ro_end);
      const int64_t hi_next = std::min<int64_t>((b_next - 1) * s + 2, p.h);
      const int64_t from = std::max(hi, (b * s - 1) < 0 ? int64_t{0} : b * s - 1);
      if (hi_next > from) prefetch_floats(in_image + from * w * p.in_pixel, (hi_next - from) * w * p.in_pixel, false);
      const int64_t row_out = p.w_out * 2 * p.c_half;
      prefetch_floats(p.out + n * p.out_image + b * row_out, (b_next - b) * row_out, true);
    }
    if (precomputed) {
      if (s == 2 && !p.direct_in) {  // the projection's depthwise conv reads converted rows
        p.convert(p.ctx, n, lo, hi, in_buf);
        in_first = lo;
      }
    } else if (end <= lo || end == first) {
      first = end = in_first = lo;
    } else if (lo > first) {  // keep the rows this step shares with the last one
      const int64_t keep = end - lo;
      std::memmove(mid, mid + (lo - first) * mid_row, keep * mid_row * sizeof(float));
      if (!p.direct_in) std::memmove(in_buf, in_buf + (lo - first) * in_row, keep * in_row * sizeof(float));
      first = in_first = lo;
    }
    if (hi > end) {
      const float* rows;
      int64_t pixel;
      if (p.direct_in) {
        rows = in_image + end * w * p.in_pixel + p.branch_c0;
        pixel = p.in_pixel;
      } else {
        float* dst = in_buf + (end - first) * in_row;
        p.convert(p.ctx, n, end, hi, dst);
        rows = dst;
        pixel = p.cb_p;
      }
      gemm::relu_gemm<L, MR, NB>(rows, pixel, (hi - end) * w, p.pw1, gemm::StoreRows{mid + (end - first) * mid_row, p.cm_p});
      end = hi;
    }
    dw(mid, first, mid_row, p.cm_p, p.h, w, a, b, p.w_out, p.dw, p.dw_bias, p.c_mid, dw_out, p.cm_p);
    const int64_t m = (b - a) * p.w_out;
    const float* even = nullptr;
    int64_t even_pixel = 0;
    float* proj = scratch + sl.proj;
    if (s == 2) {
      float* proj_dw = scratch + sl.proj_dw;
      if (p.direct_in) {
        depthwise3x3<L, 2>(in_image, 0, w * p.in_pixel, p.in_pixel, p.h, w, a, b, p.w_out, p.proj_dw, p.proj_dw_bias,
                     p.c_branch, proj_dw, p.cb_p);
      } else {
        depthwise3x3<L, 2>(in_buf, in_first, in_row, p.cb_p, p.h, w, a, b, p.w_out, p.proj_dw, p.proj_dw_bias,
                           p.c_branch, proj_dw, p.cb_p);
      }
      gemm::relu_gemm<L, MR, NB>(proj_dw, p.cb_p, m, p.proj_pw, gemm::StoreRows{proj, p.ch_p});
      even = proj;
      even_pixel = p.ch_p;
    } else if (p.direct_out) {
      even = in_image + a * w * p.in_pixel;  // the kept half: channels [0, C/2)
      even_pixel = p.in_pixel;
    }
    if (p.direct_out) {
      gemm::relu_gemm<L, MR, NB>(dw_out, p.cm_p, m, p.pw2,
                                 gemm::StoreInterleaved{p.out + n * p.out_image + a * p.w_out * 2 * p.c_half,
                                                     2 * p.c_half, even, even_pixel, p.c_half});
    } else {
      float* y = scratch + sl.y;
      gemm::relu_gemm<L, MR, NB>(dw_out, p.cm_p, m, p.pw2, gemm::StoreRows{y, p.ch_p});
      p.commit(p.ctx, n, a, b, y, s == 2 ? proj : nullptr);
    }
  }
}

// The pw1_all pass: the first 1x1 conv of input pixels [q0, q1) of image n (whole rows
// when the input is converted first).
template <int L, int MR, int NB>
C10_ALWAYS_INLINE void run_pw1_part(const Plan& p, const ScratchLayout& sl, float* scratch, int64_t n, int64_t q0,
                                    int64_t q1) {
  float* mid = p.pw1_all + n * p.h * p.w * p.cm_p;
  if (p.direct_in) {
    gemm::relu_gemm<L, MR, NB>(p.in + n * p.in_image + q0 * p.in_pixel + p.branch_c0, p.in_pixel, q1 - q0, p.pw1,
                               gemm::StoreRows{mid + q0 * p.cm_p, p.cm_p});
    return;
  }
  float* in_buf = scratch + sl.in;
  const int64_t r_end = q1 / p.w;
  for (int64_t r = q0 / p.w; r < r_end; r += sl.in_rows) {
    const int64_t r1 = std::min(r + sl.in_rows, r_end);
    p.convert(p.ctx, n, r, r1, in_buf);
    gemm::relu_gemm<L, MR, NB>(in_buf, p.cb_p, (r1 - r) * p.w, p.pw1, gemm::StoreRows{mid + r * p.w * p.cm_p, p.cm_p});
  }
}

template <int L, int MR, int NB>
C10_ALWAYS_INLINE void run_tasks(const Plan& p, const ScratchLayout& sl, float* scratch, int64_t t0, int64_t t1) {
  if (p.pw1_pass) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / p.bands, q0 = (t % p.bands) * p.pw1_part_pixels;
      const int64_t q1 = std::min(p.h * p.w, q0 + p.pw1_part_pixels);
      if (q0 < q1) run_pw1_part<L, MR, NB>(p, sl, scratch, n, q0, q1);
    }
    return;
  }
  const int64_t rows = (p.h_out + p.bands - 1) / p.bands;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t n = t / p.bands, band = t % p.bands;
    const int64_t r0 = band * rows, r1 = std::min(p.h_out, r0 + rows);
    if (r0 < r1) run_band<L, MR, NB>(p, sl, scratch, n, r0, r1);
  }
}

using RunTasksFn = void (*)(const Plan&, const ScratchLayout&, float*, int64_t, int64_t);

// Vector width L and tile shapes: MR pixels x NB blocks of 16 channels of accumulators
// must fit the vector registers with room for the weight vectors and a broadcast:
// 6x4 zmm of 32 (AVX-512), 6x2 ymm of 16 (AVX2), 2x4 xmm of 16 (SSE2 baseline; NEON
// and others have 32: 4x4).
void run_tasks_baseline(const Plan& p, const ScratchLayout& sl, float* scratch, int64_t t0, int64_t t1) {
#if defined(__x86_64__)
  run_tasks<4, 2, 1>(p, sl, scratch, t0, t1);
#else
  run_tasks<4, 4, 1>(p, sl, scratch, t0, t1);
#endif
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SHUFFLENET_V2_UNIT_X86 1
__attribute__((target("avx512f,avx512vl,avx2,fma"))) void run_tasks_avx512(const Plan& p, const ScratchLayout& sl,
                                                                    float* scratch, int64_t t0, int64_t t1) {
  run_tasks<16, 6, 4>(p, sl, scratch, t0, t1);
}

__attribute__((target("avx2,fma"))) void run_tasks_avx2(const Plan& p, const ScratchLayout& sl, float* scratch,
                                                         int64_t t0, int64_t t1) {
  run_tasks<8, 6, 1>(p, sl, scratch, t0, t1);
}
#endif

// The best version this CPU runs (gemm::cpu_isa).
struct IsaChoice {
  RunTasksFn fn;
  const char* name;
};

IsaChoice choose_isa() {
#ifdef SHUFFLENET_V2_UNIT_X86
  switch (gemm::cpu_isa()) {
    case gemm::Isa::kAvx512:
      return {&run_tasks_avx512, "avx512"};
    case gemm::Isa::kAvx2:
      return {&run_tasks_avx2, "avx2"};
    default:
      break;
  }
#endif
  return {&run_tasks_baseline, "baseline"};
}

const IsaChoice& isa() {
  static const IsaChoice choice = choose_isa();
  return choice;
}

// ---- typed row conversion and commit (other dtypes and layouts) ------------------------

template <typename scalar_t>
struct Rows {
  const scalar_t* in;  // image 0, pixel 0, first branch channel
  int64_t in_image, in_channel, in_pixel;
  const scalar_t* kept;  // stride 1: channel 0 of the input (the kept half)
  scalar_t* out;
  int64_t out_image, out_channel, out_pixel;
  int64_t w, w_out, c_branch, cb_p, c_half, ch_p;
};

template <typename scalar_t>
SHUFFLENET_CPU_MULTIVERSION void convert_rows(const void* ctx, int64_t n, int64_t r0, int64_t r1, float* dst) {
  const Rows<scalar_t>& r = *static_cast<const Rows<scalar_t>*>(ctx);
  const int64_t pixels = (r1 - r0) * r.w;
  const scalar_t* src = r.in + n * r.in_image + r0 * r.w * r.in_pixel;
  if (r.in_channel == 1) {
    for (int64_t px = 0; px < pixels; ++px) {
      const scalar_t* s = src + px * r.in_pixel;
      float* d = dst + px * r.cb_p;
      for (int64_t c = 0; c < r.c_branch; ++c) d[c] = static_cast<float>(s[c]);
      for (int64_t c = r.c_branch; c < r.cb_p; ++c) d[c] = 0.f;
    }
  } else {
    for (int64_t c = 0; c < r.c_branch; ++c) {
      const scalar_t* s = src + c * r.in_channel;
      for (int64_t px = 0; px < pixels; ++px) dst[px * r.cb_p + c] = static_cast<float>(s[px * r.in_pixel]);
    }
    for (int64_t px = 0; px < pixels; ++px) {
      for (int64_t c = r.c_branch; c < r.cb_p; ++c) dst[px * r.cb_p + c] = 0.f;
    }
  }
}

template <typename scalar_t>
SHUFFLENET_CPU_MULTIVERSION void commit_rows(const void* ctx, int64_t n, int64_t ro0, int64_t ro1, const float* y,
                                             const float* proj) {
  const Rows<scalar_t>& r = *static_cast<const Rows<scalar_t>*>(ctx);
  const int64_t m0 = ro0 * r.w_out, pixels = (ro1 - ro0) * r.w_out;
  scalar_t* out = r.out + n * r.out_image + m0 * r.out_pixel;
  // stride 1: the kept half at the same pixels (w_out == w)
  const scalar_t* kept = proj ? nullptr : r.kept + n * r.in_image + m0 * r.in_pixel;
  if (r.out_channel == 1) {
    for (int64_t px = 0; px < pixels; ++px) {
      scalar_t* o = out + px * r.out_pixel;
      const float* yp = y + px * r.ch_p;
      if (proj) {
        const float* pp = proj + px * r.ch_p;
        for (int64_t c = 0; c < r.c_half; ++c) {
          o[2 * c] = static_cast<scalar_t>(pp[c]);
          o[2 * c + 1] = static_cast<scalar_t>(yp[c]);
        }
      } else {
        const scalar_t* k = kept + px * r.in_pixel;
        for (int64_t c = 0; c < r.c_half; ++c) {
          o[2 * c] = k[c * r.in_channel];
          o[2 * c + 1] = static_cast<scalar_t>(yp[c]);
        }
      }
    }
  } else {
    for (int64_t c = 0; c < r.c_half; ++c) {
      scalar_t* even = out + 2 * c * r.out_channel;
      scalar_t* odd = even + r.out_channel;
      if (proj) {
        for (int64_t px = 0; px < pixels; ++px) even[px * r.out_pixel] = static_cast<scalar_t>(proj[px * r.ch_p + c]);
      } else {
        const scalar_t* k = kept + c * r.in_channel;
        for (int64_t px = 0; px < pixels; ++px) even[px * r.out_pixel] = k[px * r.in_pixel];
      }
      for (int64_t px = 0; px < pixels; ++px) odd[px * r.out_pixel] = static_cast<scalar_t>(y[px * r.ch_p + c]);
    }
  }
}

// ---- entry ---------------------------------------------------------------------------

using OptTensor = c10::optional<at::Tensor>;

at::Tensor opt(const OptTensor& t) { return t.has_value() && t->defined() ? *t : at::Tensor(); }

// Output pixels one step should cover: enough rows that the GEMM tiles stay full.
constexpr int64_t kStepPixels = 48;

// The largest pw1_all (floats, 512 KiB) a call precomputes (see Plan). Beyond it the
// bands read it back from beyond their core's L2 cache, which costs more than what
// they save (at 56x56 with two bands: 58 input rows computed for 56), so they
// recompute the rows at their edges instead.
constexpr int64_t kMaxPw1AllFloats = int64_t{1} << 17;

// float64: the per-op composition (DESIGN.md's definition of the op), through the
// dispatcher, for gradcheck-style checks; it writes the intermediates to memory.
at::Tensor v2_unit_composed(const at::Tensor& input, const OptTensor& proj_dw_weight, const OptTensor& proj_dw_bias,
                            const OptTensor& proj_pw_weight, const OptTensor& proj_pw_bias,
                            const at::Tensor& pw1_weight, const OptTensor& pw1_bias, const at::Tensor& dw_weight,
                            const OptTensor& dw_bias, const at::Tensor& pw2_weight, const OptTensor& pw2_bias,
                            int64_t stride) {
  static const auto pw_op = c10::Dispatcher::singleton()
                                .findSchemaOrThrow("shufflenet::pointwise_conv", "")
                                .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, int64_t,
                                                  int64_t, bool)>();
  static const auto dw_op = c10::Dispatcher::singleton()
                                .findSchemaOrThrow("shufflenet::depthwise_conv2d", "")
                                .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&,
                                                  at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, bool)>();
  static const auto cat_op = c10::Dispatcher::singleton()
                                 .findSchemaOrThrow("shufflenet::concat_shuffle", "")
                                 .typed<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t)>();
  const std::vector<int64_t> s = {stride, stride}, one = {1, 1};
  const auto branch = [&](const at::Tensor& x) {
    const at::Tensor t = pw_op.call(x, pw1_weight, pw1_bias, 1, 1, true);
    return pw_op.call(dw_op.call(t, dw_weight, dw_bias, s, one, one, false), pw2_weight, pw2_bias, 1, 1, true);
  };
  if (stride == 1) {
    const int64_t half = input.size(1) / 2;
    return cat_op.call(input.narrow(1, 0, half), branch(input.narrow(1, half, half)), 2);
  }
  const at::Tensor p = pw_op.call(dw_op.call(input, *proj_dw_weight, proj_dw_bias, s, one, one, false),
                                  *proj_pw_weight, proj_pw_bias, 1, 1, true);
  return cat_op.call(p, branch(input), 2);
}

at::Tensor v2_unit_cpu(const at::Tensor& input, const OptTensor& proj_dw_weight, const OptTensor& proj_dw_bias,
                       const OptTensor& proj_pw_weight, const OptTensor& proj_pw_bias, const at::Tensor& pw1_weight,
                       const OptTensor& pw1_bias, const at::Tensor& dw_weight, const OptTensor& dw_bias,
                       const at::Tensor& pw2_weight, const OptTensor& pw2_bias, int64_t stride) {
  // Helper ATen calls below are implementation details, not part of any autograd graph.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const V2UnitShape shape = check_v2_unit_args(input, proj_dw_weight, proj_dw_bias, proj_pw_weight, proj_pw_bias,
                                               pw1_weight, pw1_bias, dw_weight, dw_bias, pw2_weight, pw2_bias, stride);
  const at::MemoryFormat fmt = output_memory_format(input);
  at::Tensor out = empty_cached({shape.n, 2 * shape.c_half, shape.h_out, shape.w_out}, input, fmt);
  if (out.numel() == 0) return out;
  if (input.scalar_type() == at::kDouble) {
    at::Tensor y = v2_unit_composed(input, proj_dw_weight, proj_dw_bias, proj_pw_weight, proj_pw_bias, pw1_weight,
                                    pw1_bias, dw_weight, dw_bias, pw2_weight, pw2_bias, stride);
    out.copy_(y);
    return out;
  }
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const at::Tensor x = with_plain_strides(input, cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);

  UnitPackCache& cache = pack_cache();
  const at::TensorOptions opts = input.options();
  const auto pointwise = [&](const at::Tensor& w, const OptTensor& b, at::Tensor& wp, at::Tensor& bp) {
    wp = cache.get(w, PackKind::kPointwise, w.size(0), opts);
    bp = cache.get(opt(b), PackKind::kBias, w.size(0), opts);
    return PackedPointwise{wp.const_data_ptr<float>(), bp.const_data_ptr<float>(), w.size(1), w.size(0),
                           blocks_of(w.size(0))};
  };
  at::Tensor keep[10];  // the packed tensors, alive for the call
  Plan p{};
  p.h = shape.h;
  p.w = shape.w;
  p.h_out = shape.h_out;
  p.w_out = shape.w_out;
  p.stride = stride;
  p.c_branch = shape.c_branch;
  p.c_mid = shape.c_mid;
  p.c_half = shape.c_half;
  p.cb_p = padded(shape.c_branch);
  p.cm_p = padded(shape.c_mid);
  p.ch_p = padded(shape.c_half);
  p.pw1 = pointwise(pw1_weight, pw1_bias, keep[0], keep[1]);
  p.pw2 = pointwise(pw2_weight, pw2_bias, keep[2], keep[3]);
  keep[4] = cache.get(dw_weight, PackKind::kDepthwise, shape.c_mid, opts);
  keep[5] = cache.get(opt(dw_bias), PackKind::kBias, shape.c_mid, opts);
  p.dw = keep[4].const_data_ptr<float>();
  p.dw_bias = keep[5].const_data_ptr<float>();
  if (stride == 2) {
    p.proj_pw = pointwise(*proj_pw_weight, proj_pw_bias, keep[6], keep[7]);
    keep[8] = cache.get(*proj_dw_weight, PackKind::kDepthwise, shape.c_branch, opts);
    keep[9] = cache.get(opt(proj_dw_bias), PackKind::kBias, shape.c_branch, opts);
    p.proj_dw = keep[8].const_data_ptr<float>();
    p.proj_dw_bias = keep[9].const_data_ptr<float>();
  }

  // Bands: enough (image, band) tasks for every thread.
  const int64_t threads = std::max(1, at::get_num_threads());
  p.bands = shape.n >= threads ? 1 : std::min(shape.h_out, (threads + shape.n - 1) / shape.n);
  const int64_t band_rows = (shape.h_out + p.bands - 1) / p.bands;
  p.rows_per_step = std::clamp<int64_t>((kStepPixels + shape.w_out - 1) / shape.w_out, 1, band_rows);

  p.branch_c0 = stride == 1 ? shape.c_branch : 0;
  p.direct_out = cl && x.scalar_type() == at::kFloat && x.stride(1) == 1;
  p.direct_in = p.direct_out && (stride == 1 || shape.c_branch % kBlock == 0);

  // Several bands per image: a band computing its own pw1 rows would also compute the
  // rows at its edges, which its neighbours compute too (at 7x7 with two bands, 9 rows
  // for 7). So the first 1x1 conv of whole images runs first, split into equal pixel
  // ranges (whole rows where the input is converted), and the bands start from it.
  const int64_t pixels = shape.h * shape.w;
  const int64_t pw1_floats = shape.n * pixels * p.cm_p;
  thread_local std::vector<float> pw1_all;  // grows to the largest a call of this thread needed
  if (p.bands > 1 && pw1_floats <= kMaxPw1AllFloats) {
    p.pw1_all = gemm::aligned_floats(pw1_all, pw1_floats);
    // Equal pixel ranges (each may end in one short register tile); converted input
    // goes by whole rows. Ranges aligned to whole tiles of 12 pixels were uneven on
    // small maps: at 7x7 with two bands 36 and 13 pixels.
    const int64_t align = p.direct_in ? 1 : shape.w;
    p.pw1_part_pixels = ((pixels + p.bands - 1) / p.bands + align - 1) / align * align;
  }
  if (p.direct_out) {
    p.in = x.const_data_ptr<float>();
    p.in_image = x.stride(0);
    p.in_pixel = x.stride(3);
    p.out = out.mutable_data_ptr<float>();
    p.out_image = out.stride(0);
  }
  const ScratchLayout sl = scratch_layout(p);
  const RunTasksFn run = isa().fn;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "v2_unit_cpu", [&] {
    // NCHW-like input: pixels 1 apart (rows w apart); channels_last-like: channels 1 apart.
    Rows<scalar_t> rows{};
    const bool nchw = !cl;  // with_plain_strides made x plain in the output's format
    rows.in_image = x.stride(0);
    rows.in_channel = nchw ? x.stride(1) : 1;
    rows.in_pixel = nchw ? 1 : x.stride(3);
    rows.kept = x.const_data_ptr<scalar_t>();
    rows.in = rows.kept + p.branch_c0 * rows.in_channel;
    rows.out = out.mutable_data_ptr<scalar_t>();
    rows.out_image = out.stride(0);
    rows.out_channel = cl ? 1 : shape.h_out * shape.w_out;
    rows.out_pixel = cl ? 2 * shape.c_half : 1;
    rows.w = shape.w;
    rows.w_out = shape.w_out;
    rows.c_branch = shape.c_branch;
    rows.cb_p = p.cb_p;
    rows.c_half = shape.c_half;
    rows.ch_p = p.ch_p;
    p.convert = &convert_rows<scalar_t>;
    p.commit = &commit_rows<scalar_t>;
    p.ctx = &rows;
    const auto pass = [&](const Plan& plan, int64_t tasks) {
      at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
        thread_local std::vector<float> buffer;
        run(plan, sl, gemm::aligned_floats(buffer, sl.total), t0, t1);
      });
    };
    if (p.pw1_all != nullptr) {
      Plan first = p;
      first.pw1_pass = true;
      pass(first, shape.n * p.bands);
    }
    pass(p, shape.n * p.bands);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(shufflenet, CPU, m) { m.impl("v2_unit", &v2_unit_cpu); }

}  // namespace shufflenet::cpu
