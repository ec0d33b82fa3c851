// Pieces shared by the CPU V2 unit kernels, v2_unit.cpp (the unit, out of place) and
// v2_unit_inplace.cpp (the stride-1 unit in place): the packed weight layouts and their
// cache, and the 3x3 depthwise conv over pixel-major rows of packed channels.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cpu/cpu_kernels.h"
#include "cpu/gemm_tile.h"
#include "cpu/pack_cache.h"

namespace shufflenet::cpu::unit {

using gemm::blocks_of;
using gemm::kBlock;
using gemm::padded;

// ---- packed weights, cached ---------------------------------------------------------

enum class PackKind : int { kPointwise, kDepthwise, kBias };

// [C_out, K, 1, 1] -> float [blocks][K][16], zero padded past C_out.
inline at::Tensor pack_pointwise(const at::Tensor& w) {
  const int64_t c_out = w.size(0), k = w.size(1);
  const at::Tensor w2 = w.reshape({c_out, k}).to(at::kFloat);
  return at::constant_pad_nd(w2, {0, 0, 0, padded(c_out) - c_out})
      .view({blocks_of(c_out), kBlock, k})
      .permute({0, 2, 1})
      .contiguous();
}

// [C, 1, 3, 3] -> float [blocks][9][16], zero padded past C.
inline at::Tensor pack_depthwise(const at::Tensor& w) {
  const int64_t c = w.size(0);
  const at::Tensor w2 = w.reshape({c, 9}).to(at::kFloat);
  return at::constant_pad_nd(w2, {0, 0, 0, padded(c) - c}).view({blocks_of(c), kBlock, 9}).permute({0, 2, 1}).contiguous();
}

// [C] (or none) -> float [blocks * 16], zero padded.
inline at::Tensor pack_bias(const at::Tensor& b, int64_t channels, const at::TensorOptions& like) {
  at::Tensor out = at::zeros({padded(channels)}, like.dtype(at::kFloat));
  if (b.defined()) out.narrow(0, 0, channels).copy_(b);
  return out;
}

inline at::Tensor pack(const at::Tensor& t, PackKind kind, int64_t channels, const at::TensorOptions& like) {
  switch (kind) {
    case PackKind::kPointwise:
      return pack_pointwise(t);
    case PackKind::kDepthwise:
      return pack_depthwise(t);
    case PackKind::kBias:
      return pack_bias(t, channels, like);
  }
  return at::Tensor();
}

// Packed weights, cached per source tensor (pack_cache.h).
class UnitPackCache {
 public:
  at::Tensor get(const at::Tensor& t, PackKind kind, int64_t channels, const at::TensorOptions& like) {
    return cache_.get(t, static_cast<int>(kind), [&] { return pack(t, kind, channels, like); });
  }

 private:
  PackCache cache_;
};

inline UnitPackCache& pack_cache() {
  static UnitPackCache cache;
  return cache;
}

// ---- 3x3 depthwise over pixel-major rows ---------------------------------------------

// Hides a pointer's value from the optimizer: a pointer walked along a row then stays one
// register, instead of one precomputed address per column the loop touches (more than
// there are registers: they would be spilled and reloaded for every load).
#if defined(__GNUC__) || defined(__clang__)
#define SHUFFLENET_OPAQUE(ptr) asm("" : "+r"(ptr))
#else
#define SHUFFLENET_OPAQUE(ptr) (void)(ptr)
#endif

constexpr int kXBlock = 4;  // interior depthwise output pixels in flight

// Interior output pixels x0 .. x0+XB-1 of one row of the 3x3 depthwise conv below (all
// three input columns of each inside the row), input rows [DY0, DY1) of the three: each
// pixel has its own accumulator (one chain of nine dependent multiply-adds per pixel
// would wait on the FMA latency), and each input column is loaded once for the pixels
// that use it, walking one pointer per row (few address registers). Every pixel sums
// bias, then taps row by row, left to right, as the edge pixels do.
template <typename V, int S, int XB, int DY0, int DY1>
C10_ALWAYS_INLINE void depthwise_interior(const float* const* rows, int64_t ix0, int64_t src_pixel, const V* wv, V b,
                                          float* out, int64_t dst_ld) {
  V acc[XB];
#pragma GCC unroll 8
  for (int j = 0; j < XB; ++j) acc[j] = b;
#pragma GCC unroll 3
  for (int dy = DY0; dy < DY1; ++dy) {
    const float* q = rows[dy] + ix0 * src_pixel;
#pragma GCC unroll 32
    for (int col = 0; col < (XB - 1) * S + 3; ++col) {
      const V x = gemm::vload<V>(q);
      q += src_pixel;
      SHUFFLENET_OPAQUE(q);
#pragma GCC unroll 3
      for (int dx = 0; dx < 3; ++dx) {
        const int jj = col - dx;
        if (jj >= 0 && jj % S == 0 && jj / S < XB) acc[jj / S] += wv[3 * dy + dx] * x;
      }
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < XB; ++j) gemm::vstore(out + j * dst_ld, acc[j]);
}

// 3x3 depthwise, padding 1, stride S, bias, no ReLU, over pixel-major rows:
// input row iy (0 <= iy < h) starts at src + (iy - src_first) * src_row, pixels
// src_pixel apart, channels contiguous, whole blocks of 16 of them read (the source is
// padded scratch, or input rows whose channels are whole blocks). Writes output rows
// [r0, r1) as dst[((r - r0) * w_out + x) * dst_ld + c], whole blocks of 16.
template <int L, int S>
C10_ALWAYS_INLINE void depthwise3x3(const float* src, int64_t src_first, int64_t src_row, int64_t src_pixel,
                                    int64_t h, int64_t w, int64_t r0, int64_t r1, int64_t w_out,
                                    const float* weight, const float* bias, int64_t channels, float* dst,
                                    int64_t dst_ld) {
  using V = typename gemm::Lanes<L>::V;
  using I0 = std::integral_constant<int, 0>;
  using I1 = std::integral_constant<int, 1>;
  using I2 = std::integral_constant<int, 2>;
  using I3 = std::integral_constant<int, 3>;
  // Output columns [x_lo, x_hi) read input columns x*S-1 .. x*S+1, all inside the row.
  const int64_t x_lo = std::min<int64_t>(1, w_out);
  const int64_t x_hi = w >= 2 ? std::clamp<int64_t>((w - 2) / S + 1, x_lo, w_out) : x_lo;
  for (int64_t part = 0; part < blocks_of(channels) * (kBlock / L); ++part) {
    const int64_t blk = part / (kBlock / L);
    const int64_t c0 = part * L;  // channels [c0, c0 + L) of block blk
    const int64_t lane0 = c0 - blk * kBlock;
    V wv[9];
    for (int t = 0; t < 9; ++t) wv[t] = gemm::vload<V>(weight + (blk * 9 + t) * kBlock + lane0);
    const V b = gemm::vload<V>(bias + c0);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t iy0 = r * S - 1;
      const int dy_lo = iy0 < 0 ? 1 : 0;
      const int dy_hi = static_cast<int>(std::min<int64_t>(3, h - iy0));
      const float* rows[3] = {src, src, src};
      for (int dy = dy_lo; dy < dy_hi; ++dy) rows[dy] = src + (iy0 + dy - src_first) * src_row + c0;
      float* out = dst + (r - r0) * w_out * dst_ld + c0;
      // A pixel with a column outside the row: the taps that are inside.
      const auto edge = [&](int64_t x) SHUFFLENET_INLINE_LAMBDA {
        const int64_t ix0 = x * S - 1;
        V acc = b;
        for (int dy = dy_lo; dy < dy_hi; ++dy) {
          for (int dx = 0; dx < 3; ++dx) {
            const int64_t ix = ix0 + dx;
            if (ix >= 0 && ix < w) acc += wv[3 * dy + dx] * gemm::vload<V>(rows[dy] + ix * src_pixel);
          }
        }
        gemm::vstore(out + x * dst_ld, acc);
      };
      const auto columns = [&](auto dy0, auto dy1) SHUFFLENET_INLINE_LAMBDA {
        constexpr int DY0 = decltype(dy0)::value, DY1 = decltype(dy1)::value;
        for (int64_t x = 0; x < x_lo; ++x) edge(x);
        int64_t x = x_lo;
        for (; x + kXBlock <= x_hi; x += kXBlock) {
          depthwise_interior<V, S, kXBlock, DY0, DY1>(rows, x * S - 1, src_pixel, wv, b, out + x * dst_ld, dst_ld);
        }
        for (; x + 2 <= x_hi; x += 2) {
          depthwise_interior<V, S, 2, DY0, DY1>(rows, x * S - 1, src_pixel, wv, b, out + x * dst_ld, dst_ld);
        }
        for (; x < x_hi; ++x) {
          depthwise_interior<V, S, 1, DY0, DY1>(rows, x * S - 1, src_pixel, wv, b, out + x * dst_ld, dst_ld);
        }
        for (x = x_hi; x < w_out; ++x) edge(x);
      };
      // Rows of the three outside the input: only at the top and bottom of the map.
      if (dy_lo == 0 && dy_hi == 3) {
        columns(I0{}, I3{});
      } else if (dy_lo == 1 && dy_hi == 3) {
        columns(I1{}, I3{});
      } else if (dy_lo == 0) {
        columns(I0{}, I2{});
      } else {
        columns(I1{}, I2{});
      }
    }
  }
}

}  // namespace shufflenet::cpu::unit
