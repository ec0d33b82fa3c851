// The ShuffleNet stem on CPU in one pass: conv3x3_relu_maxpool =
// max_pool2d(relu(conv2d(input, weight, bias, stride 2, padding 1)), 3, stride 2, padding 1).
//
// The conv map is never written out: work is split into (image, band of output rows)
// tasks over at::parallel_for, and a task keeps a ring of three conv rows in per-thread
// scratch (pixel-major, channels padded to whole vectors, one zero pixel at each end).
// Output row r pools conv rows 2r-1, 2r, 2r+1, so each output row computes two new conv
// rows and reuses the third; a band's first row computes its top conv row again (one
// conv row per band edge). The ReLU'd conv values are >= 0 and every pooling window
// holds at least one real value, so the padding of the pool may read zeros (the zero
// pixels and a zero row) instead of -inf: the maximum is the same.
//
// The conv is a register-blocked tile of MR output pixels x NB vectors of L output
// channels: per tap (input channel, ky, kx), NB weight vectors are loaded and each of
// the MR input values is broadcast and multiply-added. Input values are read one at a
// time, so any input strides work at the same speed: NCHW, channels_last and channel
// slices are read in place. The weight is packed per call ([C_in][3][3][C_out padded],
// a few KB). Compiled for AVX-512 (L = 16 when C_out is whole blocks of 16, else L = 8
// with the 32 vector registers of AVX-512VL), AVX2+FMA (L = 8) and the baseline (L = 4),
// picked at run time.
//
// float32 runs the kernel; float16 and bfloat16 run it on a float32 copy of the (small)
// input and round the output once; float64 runs ATen's conv2d, relu and max_pool2d (for
// checks, not speed). The output is always channels_last.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/checks.h"
#include "cpu/gemm_tile.h"
#include "cpu/output_cache.h"

namespace shufflenet::cpu {
namespace {

using gemm::Lanes;
using gemm::vbroadcast;
using gemm::vload;
using gemm::vrelu;
using gemm::vstore;

struct StemPlan {
  const float* in;  // image 0, channel 0, pixel (0, 0)
  int64_t in_n, in_c, in_h, in_w;  // input strides
  int64_t c_in, h, w, h_conv, w_conv, h_out, w_out, c_out;
  int64_t cp;            // c_out padded to whole vectors of the chosen width
  const float* weight;   // [c_in][3][3][cp], zero past c_out
  const float* bias;     // [cp], zero past c_out (everywhere without a bias)
  float* out;            // dense channels_last output
  int64_t bands;         // tasks per image
};

// Floats of one ring row: w_conv pixels and a zero pixel at each end.
int64_t ring_row_floats(const StemPlan& p) { return (p.w_conv + 2) * p.cp; }

// MR output pixels from `src` (the input value that pixel 0 reads at tap (ky_lo, kx_lo)
// of input channel 0; the next pixel's is 2 input pixels on), taps ky in [ky_lo, ky_hi),
// kx in [kx_lo, kx_hi), vectors [j0, j0 + NB) of the output channels: bias, multiply-adds,
// ReLU, stored at dst (pixel 0, channel 0) with a pixel stride of cp.
template <int L, int MR, int NB>
C10_ALWAYS_INLINE void conv_tile(const StemPlan& p, const float* src, int ky_lo, int ky_hi, int kx_lo, int kx_hi,
                                 int64_t j0, float* dst) {
  using V = typename Lanes<L>::V;
  V acc[MR][NB];
#pragma GCC unroll 4
  for (int q = 0; q < NB; ++q) {
    const V b = vload<V>(p.bias + (j0 + q) * L);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc[i][q] = b;
  }
  const int64_t step = 2 * p.in_w;
  for (int64_t ci = 0; ci < p.c_in; ++ci) {
    for (int ky = ky_lo; ky < ky_hi; ++ky) {
      const float* row = src + ci * p.in_c + (ky - ky_lo) * p.in_h;
      const float* wrow = p.weight + (ci * 9 + ky * 3) * p.cp + j0 * L;
      for (int kx = kx_lo; kx < kx_hi; ++kx) {
        V wv[NB];
#pragma GCC unroll 4
        for (int q = 0; q < NB; ++q) wv[q] = vload<V>(wrow + kx * p.cp + q * L);
        const float* x = row + (kx - kx_lo) * p.in_w;
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
          const V a = vbroadcast<V>(x[i * step]);
#pragma GCC unroll 4
          for (int q = 0; q < NB; ++q) acc[i][q] += a * wv[q];
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int q = 0; q < NB; ++q) vstore(dst + i * p.cp + (j0 + q) * L, vrelu(acc[i][q]));
  }
}

// Edge pixel x of a conv row (some of its taps fall in the padding): see conv_row_part.
template <int L, int NB>
C10_ALWAYS_INLINE void conv_edge_pixel(const StemPlan& p, const float* rows, int ky_lo, int ky_hi, int64_t x,
                                       int64_t j0, float* dst) {
  const int64_t ix0 = 2 * x - 1;
  const int kx_lo = ix0 < 0 ? 1 : 0;
  const int kx_hi = static_cast<int>(std::min<int64_t>(3, p.w - ix0));
  conv_tile<L, 1, NB>(p, rows + (ix0 + kx_lo) * p.in_w, ky_lo, ky_hi, kx_lo, kx_hi, j0, dst + (x + 1) * p.cp);
}

// Conv row y of image n, vectors [j0, j0 + NB), into ring row `dst` (its pixel 0 is
// the zero pixel). Plain functions, not lambdas: everything here must be inlined into
// the instruction-set-specific entry points below.
template <int L, int MR, int NB>
C10_ALWAYS_INLINE void conv_row_part(const StemPlan& p, int64_t n, int64_t y, int64_t j0, float* dst) {
  const int64_t iy0 = 2 * y - 1;
  const int ky_lo = iy0 < 0 ? 1 : 0;
  const int ky_hi = static_cast<int>(std::min<int64_t>(3, p.h - iy0));
  const float* rows = p.in + n * p.in_n + (iy0 + ky_lo) * p.in_h;
  // Pixels [1, x_hi) read all three columns; pixel 0 and those from x_hi on are edges.
  const int64_t x_hi = std::max<int64_t>(1, p.w / 2);
  conv_edge_pixel<L, NB>(p, rows, ky_lo, ky_hi, 0, j0, dst);
  int64_t x = 1;
  for (; x + MR <= x_hi; x += MR) {
    conv_tile<L, MR, NB>(p, rows + (2 * x - 1) * p.in_w, ky_lo, ky_hi, 0, 3, j0, dst + (x + 1) * p.cp);
  }
  if constexpr (MR >= 4) {
    constexpr int H = MR / 2;
    if (x + H <= x_hi) {
      conv_tile<L, H, NB>(p, rows + (2 * x - 1) * p.in_w, ky_lo, ky_hi, 0, 3, j0, dst + (x + 1) * p.cp);
      x += H;
    }
  }
  for (; x < x_hi; ++x) {
    conv_tile<L, 1, NB>(p, rows + (2 * x - 1) * p.in_w, ky_lo, ky_hi, 0, 3, j0, dst + (x + 1) * p.cp);
  }
  for (x = x_hi; x < p.w_conv; ++x) conv_edge_pixel<L, NB>(p, rows, ky_lo, ky_hi, x, j0, dst);
}

// Conv row y of image n, every output channel, into ring row `dst`.
template <int L, int MR, int NB_MAX>
C10_ALWAYS_INLINE void conv_row(const StemPlan& p, int64_t n, int64_t y, float* dst) {
  const int64_t vectors = p.cp / L;
  for (int64_t j0 = 0; j0 < vectors; j0 += NB_MAX) {
    const int64_t nb = std::min<int64_t>(NB_MAX, vectors - j0);
    if (nb == NB_MAX) {
      conv_row_part<L, MR, NB_MAX>(p, n, y, j0, dst);
    } else if constexpr (NB_MAX > 1) {
      if (nb == 1) {
        conv_row_part<L, MR, 1>(p, n, y, j0, dst);
      } else if constexpr (NB_MAX > 2) {
        conv_row_part<L, MR, 2>(p, n, y, j0, dst);  // NB_MAX is at most 3
      }
    }
  }
}

// Lane-wise maximum that keeps NaN, as max_pool2d does.
template <typename V>
C10_ALWAYS_INLINE V vmax(V a, V b) {
  return ((a > b) | (a != a)) ? a : b;
}

// Output row of image n from ring rows r0, r1, r2 (conv rows 2r-1, 2r, 2r+1; the zero
// row where one is outside the map).
template <int L>
C10_ALWAYS_INLINE void pool_row(const StemPlan& p, const float* r0, const float* r1, const float* r2, float* out) {
  using V = typename Lanes<L>::V;
  const int64_t vectors = p.cp / L, cp = p.cp;
  for (int64_t px = 0; px < p.w_out; ++px) {
    const int64_t c0 = 2 * px * cp;  // ring pixel of conv column 2px-1
    float* o = out + px * p.c_out;
    for (int64_t v = 0; v < vectors; ++v) {
      const int64_t at = c0 + v * L;
      V m = vmax(vmax(vload<V>(r0 + at), vload<V>(r0 + at + cp)), vload<V>(r0 + at + 2 * cp));
      m = vmax(m, vmax(vmax(vload<V>(r1 + at), vload<V>(r1 + at + cp)), vload<V>(r1 + at + 2 * cp)));
      m = vmax(m, vmax(vmax(vload<V>(r2 + at), vload<V>(r2 + at + cp)), vload<V>(r2 + at + 2 * cp)));
      const int64_t left = p.c_out - v * L;
      if (left >= L) {
        vstore(o + v * L, m);
      } else {
        float lanes[L];
        vstore(lanes, m);
        std::memcpy(o + v * L, lanes, static_cast<size_t>(left) * sizeof(float));
      }
    }
  }
}

template <int L, int MR, int NB>
C10_ALWAYS_INLINE void run_tasks(const StemPlan& p, float* scratch, int64_t t0, int64_t t1) {
  const int64_t row = ring_row_floats(p);
  float* ring[3] = {scratch, scratch + row, scratch + 2 * row};
  const float* zero = scratch + 3 * row;
  // The end pixels of the ring rows and the zero row are never written.
  std::memset(scratch, 0, static_cast<size_t>(4 * row) * sizeof(float));
  const int64_t rows = (p.h_out + p.bands - 1) / p.bands;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t n = t / p.bands, band = t % p.bands;
    const int64_t r_begin = band * rows, r_end = std::min(p.h_out, r_begin + rows);
    int64_t next = std::max<int64_t>(2 * r_begin - 1, 0);  // next conv row to compute
    for (int64_t r = r_begin; r < r_end; ++r) {
      const int64_t last = std::min(2 * r + 1, p.h_conv - 1);
      for (; next <= last; ++next) conv_row<L, MR, NB>(p, n, next, ring[next % 3]);
      const float* above = r > 0 ? ring[(2 * r - 1) % 3] : zero;
      const float* below = 2 * r + 1 < p.h_conv ? ring[(2 * r + 1) % 3] : zero;
      pool_row<L>(p, above, ring[(2 * r) % 3], below, p.out + (n * p.h_out + r) * p.w_out * p.c_out);
    }
  }
}

using RunTasksFn = void (*)(const StemPlan&, float*, int64_t, int64_t);

// Tiles: MR pixels x NB vectors of accumulators, plus NB weight vectors and a broadcast,
// must fit the vector registers: 8x3 of 32 (AVX-512, zmm or ymm), 4x3 of 16 (AVX2),
// 4x2 of 16 (SSE2 baseline).
void run_baseline(const StemPlan& p, float* scratch, int64_t t0, int64_t t1) { run_tasks<4, 4, 2>(p, scratch, t0, t1); }

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SHUFFLENET_STEM_X86 1
__attribute__((target("avx512f,avx512vl,avx2,fma"))) void run_avx512_16(const StemPlan& p, float* scratch, int64_t t0,
                                                                         int64_t t1) {
  run_tasks<16, 8, 3>(p, scratch, t0, t1);
}

// 8 lanes with AVX-512VL's 32 registers: no padding for C_out = 24 (the ShuffleNet stem),
// where 16 lanes would compute 32 channels.
__attribute__((target("avx512f,avx512vl,avx2,fma"))) void run_avx512_8(const StemPlan& p, float* scratch, int64_t t0,
                                                                        int64_t t1) {
  run_tasks<8, 8, 3>(p, scratch, t0, t1);
}

__attribute__((target("avx2,fma"))) void run_avx2(const StemPlan& p, float* scratch, int64_t t0, int64_t t1) {
  run_tasks<8, 4, 3>(p, scratch, t0, t1);
}
#endif

enum class Isa { kBaseline, kAvx2, kAvx512 };

// The best level this CPU runs (SHUFFLENET_CPU_ISA=avx2 or =baseline caps it, for tests).
Isa choose_isa() {
  const char* cap = std::getenv("SHUFFLENET_CPU_ISA");
  const std::string limit = cap ? cap : "";
#ifdef SHUFFLENET_STEM_X86
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (limit.empty() && avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) {
    return Isa::kAvx512;
  }
  if ((limit.empty() || limit == "avx2") && avx2) return Isa::kAvx2;
#endif
  return Isa::kBaseline;
}

// The kernel version and its vector width for c_out output channels.
std::pair<RunTasksFn, int64_t> kernel_for(int64_t c_out) {
  static const Isa isa = choose_isa();
#ifdef SHUFFLENET_STEM_X86
  if (isa == Isa::kAvx512) return c_out % 16 == 0 ? std::pair{&run_avx512_16, 16} : std::pair{&run_avx512_8, 8};
  if (isa == Isa::kAvx2) return {&run_avx2, 8};
#endif
  (void)isa;
  return {&run_baseline, 4};
}

// Bands per image: enough (image, band) tasks that every thread gets the same number,
// or at least four per thread; each band edge computes one conv row twice.
int64_t bands_for(int64_t n, int64_t h_out, int64_t threads) {
  int64_t bands = 1;
  while (bands < h_out && (n * bands) % threads != 0 && n * bands < 4 * threads) ++bands;
  return bands;
}

void run_float(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, const StemShape& s,
               at::Tensor& out) {
  const auto [run, lanes] = kernel_for(s.c_out);
  StemPlan p{};
  p.in = x.const_data_ptr<float>();
  p.in_n = x.stride(0);
  p.in_c = x.stride(1);
  p.in_h = x.stride(2);
  p.in_w = x.stride(3);
  p.c_in = s.c_in;
  p.h = s.h;
  p.w = s.w;
  p.h_conv = s.h_conv;
  p.w_conv = s.w_conv;
  p.h_out = s.h_out;
  p.w_out = s.w_out;
  p.c_out = s.c_out;
  p.cp = (s.c_out + lanes - 1) / lanes * lanes;
  // Packed weight and bias: a few KB, packed here from any strides (no ATen call).
  std::vector<float> packed(static_cast<size_t>(s.c_in * 9 * p.cp), 0.f);
  const float* w = weight.const_data_ptr<float>();
  for (int64_t co = 0; co < s.c_out; ++co) {
    for (int64_t ci = 0; ci < s.c_in; ++ci) {
      for (int64_t k = 0; k < 9; ++k) {
        packed[(ci * 9 + k) * p.cp + co] =
            w[co * weight.stride(0) + ci * weight.stride(1) + (k / 3) * weight.stride(2) + (k % 3) * weight.stride(3)];
      }
    }
  }
  std::vector<float> packed_bias(static_cast<size_t>(p.cp), 0.f);
  if (bias.defined()) {
    const float* b = bias.const_data_ptr<float>();
    for (int64_t co = 0; co < s.c_out; ++co) packed_bias[co] = b[co * bias.stride(0)];
  }
  p.weight = packed.data();
  p.bias = packed_bias.data();
  p.out = out.mutable_data_ptr<float>();
  const int64_t threads = std::max(1, at::get_num_threads());
  p.bands = bands_for(s.n, s.h_out, threads);
  const size_t scratch_floats = static_cast<size_t>(4 * ring_row_floats(p));
  at::parallel_for(0, s.n * p.bands, 1, [&](int64_t t0, int64_t t1) {
    thread_local std::vector<float> buffer;
    if (buffer.size() < scratch_floats) buffer.resize(scratch_floats);
    run(p, buffer.data(), t0, t1);
  });
}

at::Tensor conv3x3_relu_maxpool_cpu(const at::Tensor& input, const at::Tensor& weight,
                                    const c10::optional<at::Tensor>& bias_opt) {
  // The ATen calls below are implementation details, not part of any autograd graph.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const StemShape s = check_conv3x3_relu_maxpool_args(input, weight, bias_opt);
  const at::Tensor bias = bias_opt.has_value() && bias_opt->defined() ? *bias_opt : at::Tensor();
  at::Tensor out = empty_cached({s.n, s.c_out, s.h_out, s.w_out}, input, at::MemoryFormat::ChannelsLast);
  if (out.numel() == 0) return out;
  const at::ScalarType dtype = input.scalar_type();
  if (dtype == at::kDouble) {
    const at::Tensor conv = at::conv2d(input, weight, bias, {2, 2}, {1, 1});
    out.copy_(at::max_pool2d(at::relu(conv), {3, 3}, {2, 2}, {1, 1}));
  } else if (dtype == at::kFloat) {
    run_float(input, weight, bias, s, out);
  } else {
    at::Tensor out_float = at::empty(out.sizes(), out.options().dtype(at::kFloat).memory_format(at::MemoryFormat::ChannelsLast));
    run_float(input.to(at::kFloat), weight.to(at::kFloat), bias.defined() ? bias.to(at::kFloat) : bias, s, out_float);
    out.copy_(out_float);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(shufflenet, CPU, m) { m.impl("conv3x3_relu_maxpool", &conv3x3_relu_maxpool_cpu); }

}  // namespace shufflenet::cpu
