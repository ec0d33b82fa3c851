// Register-blocked GEMM tiles for the 1x1 convolutions inside a fused unit
// (v2_unit.cpp): C[m, n] = epilogue(sum_k A[m, k] * W[k, n] + bias[n]) over pixel-major
// A (pixels x input channels, channel stride 1, any pixel stride) and a weight packed
// once (pack_pointwise_weight) as blocks of 16 output channels, [blocks][K][16], zero
// padded past C_out.
//
// The tile is MR pixels x NB blocks of 16 output channels: per k, NB weight vectors are
// loaded, each of the MR input values is broadcast and multiply-added into the NB
// accumulators of its pixel (the scheme of oneDNN's and MLAS's SGEMM kernels). The
// epilogue (bias, ReLU, where and how to store) runs on the accumulators in registers.
//
// Everything here is always-inline and written with GCC/Clang vector types of L floats,
// so it takes the instruction set of the function it is inlined into: v2_unit.cpp
// compiles its band kernel three times, for AVX-512 F+VL (L = 16), AVX2+FMA (L = 8) and the
// baseline (L = 4), and picks one at run time. L is the register width: a vector type
// wider than the registers would live in memory. MR and NB come from that choice (the
// accumulators must fit the register file: 6x4 zmm with AVX-512, 6x(1 block = 2) ymm with AVX2).
#pragma once

#include <c10/macros/Macros.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cpu/float_vec.h"

namespace shufflenet::cpu::gemm {

// Instruction sets the callers compile their tile kernels for.
enum class Isa { kBaseline, kAvx2, kAvx512 };

// The best of them this CPU runs (AVX2 and AVX-512 F + VL with FMA), read once;
// SHUFFLENET_CPU_ISA=avx2 or =baseline caps the choice (to test the other versions).
inline Isa cpu_isa() {
  static const Isa isa = [] {
    const char* cap = std::getenv("SHUFFLENET_CPU_ISA");
    const std::string limit = cap ? cap : "";
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (limit.empty() && avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) {
      return Isa::kAvx512;
    }
    if ((limit.empty() || limit == "avx2") && avx2) return Isa::kAvx2;
#endif
    return Isa::kBaseline;
  }();
  return isa;
}

constexpr int64_t kBlock = kFloatLanes;  // output channels per packed block

constexpr int64_t blocks_of(int64_t channels) { return (channels + kBlock - 1) / kBlock; }
constexpr int64_t padded(int64_t channels) { return blocks_of(channels) * kBlock; }

// The 64-byte aligned start of at least `floats` floats of `buffer`, which grows as
// needed and is kept (a thread_local one serves as scratch reused across calls).
inline float* aligned_floats(std::vector<float>& buffer, int64_t floats) {
  const size_t need = static_cast<size_t>(floats + kBlock);  // kBlock floats: 64 bytes of slack
  if (buffer.size() < need) buffer.resize(need);
  const uintptr_t base = reinterpret_cast<uintptr_t>(buffer.data());
  return buffer.data() + ((64 - base % 64) % 64) / sizeof(float);
}

// The first `n` (1..16) floats at p into the low lanes, zero elsewhere; reads only those.
C10_ALWAYS_INLINE FloatVec load_first(const float* p, int64_t n) {
  if (n >= kBlock) return load_floats(p);
  float lanes[kBlock] = {};
  std::memcpy(lanes, p, static_cast<size_t>(n) * sizeof(float));
  return load_floats(lanes);
}

// Stores the first `n` (1..16) lanes of v at p; writes only those.
C10_ALWAYS_INLINE void store_first(float* p, FloatVec v, int64_t n) {
  if (n >= kBlock) {
    store_floats(p, v);
    return;
  }
  float lanes[kBlock];
  store_floats(lanes, v);
  std::memcpy(p, lanes, static_cast<size_t>(n) * sizeof(float));
}

// The vector of L floats: one register of the instruction set the code is built for.
template <int L>
struct Lanes;
template <>
struct Lanes<16> {
  using V = FloatVec;
};
template <>
struct Lanes<8> {
  typedef float V __attribute__((vector_size(8 * sizeof(float))));
};
template <>
struct Lanes<4> {
  typedef float V __attribute__((vector_size(4 * sizeof(float))));
};

template <typename V>
C10_ALWAYS_INLINE V vload(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename V>
C10_ALWAYS_INLINE void vstore(float* p, V v) {
  std::memcpy(p, &v, sizeof v);
}
// x in every lane, as a shuffle of lane 0: GCC makes that one broadcast, folded into the
// multiply-add as a load-broadcast operand. (V{} + x keeps the add, 0 + x not being x for
// x = -0; x - V{} and lane-by-lane writes can come out as sixteen masked broadcasts
// when built outside a function that has the instruction set itself.)
template <typename V>
C10_ALWAYS_INLINE V vbroadcast(float x) {
  const V v = {x};
  constexpr int n = static_cast<int>(sizeof(V) / sizeof(float));
  static_assert(n == 4 || n == 8 || n == 16, "vectors of 4, 8 or 16 floats");
  if constexpr (n == 16) {
    return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  } else if constexpr (n == 8) {
    return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0);
  } else {
    return __builtin_shufflevector(v, v, 0, 0, 0, 0);
  }
}
template <typename V>
C10_ALWAYS_INLINE V vrelu(V v) {
  return v < 0 ? V{} : v;
}

// A packed 1x1 weight: blocks of 16 output channels, [blocks][k][16], and its bias
// padded to blocks*16 (zeros past C_out, and everywhere when the conv has none).
struct PackedPointwise {
  const float* weight;
  const float* bias;
  int64_t k;       // input channels
  int64_t c_out;   // output channels
  int64_t blocks;  // blocks_of(c_out)
};

// Epilogues take the P = 16/L accumulator vectors of one pixel and block.

// ReLU'd tile rows to a pixel-major float buffer with a row length of whole blocks (the
// pad channels get relu(0) = 0 from the zero-padded weight and bias).
struct StoreRows {
  float* dst;
  int64_t ld;
  template <typename V, int P>
  C10_ALWAYS_INLINE void put(int64_t m, int64_t block, const V* parts) const {
    constexpr int L = kBlock / P;
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) vstore(dst + m * ld + block * kBlock + p * L, vrelu(parts[p]));
  }
};

// Loads and stores of the first n (0..16) of 16 lanes for the tile epilogues, by the
// instruction set the tile is built for (L): masked loads and stores with AVX-512
// (L = 16) and AVX2 (L = 8), the memcpy of load_first / store_first otherwise. GCC
// checks a target builtin's instruction set where it is expanded, that is in the
// AVX-512 or AVX2 function the always-inline tile ends up in, so the builtins can sit
// in these templates (immintrin.h declares them); other compilers take the portable path.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SHUFFLENET_GEMM_MASKED_X86 1
#include <immintrin.h>
#endif

namespace detail {
typedef float F8 __attribute__((vector_size(8 * sizeof(float))));
typedef int32_t I8 __attribute__((vector_size(8 * sizeof(int32_t))));
C10_ALWAYS_INLINE uint16_t lane_mask16(int64_t n) {
  return n >= kBlock ? uint16_t{0xFFFF} : static_cast<uint16_t>((1u << (n < 0 ? 0 : n)) - 1u);
}
C10_ALWAYS_INLINE I8 lane_mask8(int64_t n) {
  const I8 idx = {0, 1, 2, 3, 4, 5, 6, 7};
  return idx < static_cast<int32_t>(n);  // -1 in the lanes below n
}
}  // namespace detail

template <int L>
C10_ALWAYS_INLINE FloatVec load_lanes(const float* p, int64_t n) {
  if (n >= kBlock) return load_floats(p);
#ifdef SHUFFLENET_GEMM_MASKED_X86
  if constexpr (L == 16) {
    return __builtin_ia32_loadups512_mask(p, FloatVec{}, detail::lane_mask16(n));
  } else if constexpr (L == 8) {
    const detail::F8 lo = __builtin_ia32_maskloadps256(reinterpret_cast<const detail::F8*>(p), detail::lane_mask8(n));
    const detail::F8 hi =
        __builtin_ia32_maskloadps256(reinterpret_cast<const detail::F8*>(p + 8), detail::lane_mask8(n - 8));
    return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  }
#endif
  return load_first(p, n);
}

template <int L>
C10_ALWAYS_INLINE void store_lanes(float* p, FloatVec v, int64_t n) {
  if (n >= kBlock) {
    store_floats(p, v);
    return;
  }
#ifdef SHUFFLENET_GEMM_MASKED_X86
  if constexpr (L == 16) {
    __builtin_ia32_storeups512_mask(p, v, detail::lane_mask16(n));
    return;
  } else if constexpr (L == 8) {
    const detail::F8 lo = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
    const detail::F8 hi = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    __builtin_ia32_maskstoreps256(reinterpret_cast<detail::F8*>(p), detail::lane_mask8(n), lo);
    if (n > 8) __builtin_ia32_maskstoreps256(reinterpret_cast<detail::F8*>(p + 8), detail::lane_mask8(n - 8), hi);
    return;
  }
#endif
  store_first(p, v, n);
}

// Epilogue of the unit's last 1x1 conv with the concat and channel shuffle fused: output
// channel 2i+1 of pixel m is the tile's channel i, channel 2i is `even` (the kept half,
// or the projection branch) at the same pixel, read here and interleaved in registers,
// so 32 consecutive output channels go out in two stores (masked ones for a last block
// of fewer than 16 channels). Dense channels_last float output; channels past
// `channels` are neither read nor written.
struct StoreInterleaved {
  float* out;           // pixel 0, channel 0
  int64_t out_pixel;    // output pixel stride (2 * channels)
  const float* even;    // pixel 0, channel 0 of the even source
  int64_t even_pixel;   // its pixel stride (channel stride 1)
  int64_t channels;     // half the output channels
  template <typename V, int P>
  C10_ALWAYS_INLINE void put(int64_t m, int64_t block, const V* parts) const {
    constexpr int L = kBlock / P;
    FloatVec v;
    if constexpr (P == 1) {
      v = vrelu(parts[0]);
    } else {
      float lanes[kBlock];
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p) vstore(lanes + p * L, vrelu(parts[p]));
      v = load_floats(lanes);
    }
    const int64_t c0 = block * kBlock;
    const int64_t n = std::min<int64_t>(kBlock, channels - c0);
    const FloatVec e = load_lanes<L>(even + m * even_pixel + c0, n);
    const FloatVec lo = __builtin_shufflevector(e, v, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const FloatVec hi = __builtin_shufflevector(e, v, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    float* dst = out + m * out_pixel + 2 * c0;
    if (n == kBlock) {
      store_floats(dst, lo);
      store_floats(dst + kBlock, hi);
    } else if (n > kBlock / 2) {
      store_floats(dst, lo);
      store_lanes<L>(dst + kBlock, hi, 2 * n - kBlock);
    } else {
      store_lanes<L>(dst, lo, 2 * n);
    }
  }
};

// One MR x NB tile at pixel m0, blocks [j0, j0 + NB): bias, K multiply-adds, ReLU, store.
// Each block of 16 channels is P = 16/L vectors of L lanes.
template <int L, int MR, int NB, typename Store>
C10_ALWAYS_INLINE void relu_tile(const float* a, int64_t a_pixel, const PackedPointwise& w, int64_t m0, int64_t j0,
                                 const Store& store) {
  using V = typename Lanes<L>::V;
  constexpr int P = kBlock / L;
  constexpr int Q = NB * P;  // accumulator vectors per pixel
  V acc[MR][Q];
  const float* wb = w.weight + j0 * w.k * kBlock;
#pragma GCC unroll 16
  for (int q = 0; q < Q; ++q) {
    const V b = vload<V>(w.bias + j0 * kBlock + q * L);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc[i][q] = b;
  }
  const float* ap = a + m0 * a_pixel;
  for (int64_t k = 0; k < w.k; ++k) {
    V wv[Q];
#pragma GCC unroll 16
    for (int q = 0; q < Q; ++q) wv[q] = vload<V>(wb + ((q / P) * w.k + k) * kBlock + (q % P) * L);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const V av = vbroadcast<V>(ap[i * a_pixel + k]);
#pragma GCC unroll 16
      for (int q = 0; q < Q; ++q) acc[i][q] += av * wv[q];
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) store.template put<V, P>(m0 + i, j0 + j, &acc[i][j * P]);
  }
}

// The last `rest` (1..H) rows from m0 in one tile of exactly that height: a tile of one
// row loads as many weight vectors as it multiply-adds.
template <int L, int H, int NB, typename Store>
C10_ALWAYS_INLINE void relu_rest(const float* a, int64_t a_pixel, int64_t rest, const PackedPointwise& w, int64_t m0,
                                 int64_t j0, const Store& store) {
  if (rest == H) {
    relu_tile<L, H, NB>(a, a_pixel, w, m0, j0, store);
  } else if constexpr (H > 1) {
    relu_rest<L, H - 1, NB>(a, a_pixel, rest, w, m0, j0, store);
  }
}

// Rows [0, M) of the NB blocks from j0: full MR tiles, then one shorter tile.
template <int L, int MR, int NB, typename Store>
C10_ALWAYS_INLINE void relu_columns(const float* a, int64_t a_pixel, int64_t m, const PackedPointwise& w, int64_t j0,
                                    const Store& store) {
  int64_t m0 = 0;
  for (; m0 + MR <= m; m0 += MR) relu_tile<L, MR, NB>(a, a_pixel, w, m0, j0, store);
  if constexpr (MR > 1) {
    if (m0 < m) relu_rest<L, MR - 1, NB>(a, a_pixel, m - m0, w, m0, j0, store);
  }
}

// AVX-512 (L = 16): NB blocks of 16 channels and, after them, a last block of at most 8
// channels whose accumulators are 8-lane vectors, multiply-added with the low half of
// each broadcast. Where 512-bit operations are issued as two halves (AMD Zen 4), such a
// block costs half of a full one: a group of 24 output channels, 1.5 blocks instead of 2.
// The block goes to `store` as two 8-lane parts, the second zero (what the zero-padded
// weight and bias give the pad channels). The caller must be built with AVX512VL: 8-lane
// vectors in registers 16-31 need it, and without them the accumulators spill.
template <int MR, int NB, typename Store>
C10_ALWAYS_INLINE void relu_tile_half(const float* a, int64_t a_pixel, const PackedPointwise& w, int64_t m0,
                                      int64_t j0, const Store& store) {
  using V = FloatVec;
  using H = typename Lanes<8>::V;
  constexpr int NF = NB > 0 ? NB : 1;
  V acc[MR][NF];
  H acc_half[MR];
  const float* wb = w.weight + j0 * w.k * kBlock;
  const float* wh = wb + NB * w.k * kBlock;
#pragma GCC unroll 4
  for (int q = 0; q < NB; ++q) {
    const V b = vload<V>(w.bias + (j0 + q) * kBlock);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc[i][q] = b;
  }
  {
    const H b = vload<H>(w.bias + (j0 + NB) * kBlock);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc_half[i] = b;
  }
  const float* ap = a + m0 * a_pixel;
  for (int64_t k = 0; k < w.k; ++k) {
    V wv[NF];
#pragma GCC unroll 4
    for (int q = 0; q < NB; ++q) wv[q] = vload<V>(wb + (q * w.k + k) * kBlock);
    const H whk = vload<H>(wh + k * kBlock);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const V av = vbroadcast<V>(ap[i * a_pixel + k]);
#pragma GCC unroll 4
      for (int q = 0; q < NB; ++q) acc[i][q] += av * wv[q];
      acc_half[i] += __builtin_shufflevector(av, av, 0, 1, 2, 3, 4, 5, 6, 7) * whk;
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int q = 0; q < NB; ++q) store.template put<V, 1>(m0 + i, j0 + q, &acc[i][q]);
    const H parts[2] = {acc_half[i], H{}};
    store.template put<H, 2>(m0 + i, j0 + NB, parts);
  }
}

template <int H, int NB, typename Store>
C10_ALWAYS_INLINE void relu_rest_half(const float* a, int64_t a_pixel, int64_t rest, const PackedPointwise& w,
                                      int64_t m0, int64_t j0, const Store& store) {
  if (rest == H) {
    relu_tile_half<H, NB>(a, a_pixel, w, m0, j0, store);
  } else if constexpr (H > 1) {
    relu_rest_half<H - 1, NB>(a, a_pixel, rest, w, m0, j0, store);
  }
}

// Rows [0, M) of NB full blocks from j0 and the half block after them.
template <int MR, int NB, typename Store>
C10_ALWAYS_INLINE void relu_columns_half(const float* a, int64_t a_pixel, int64_t m, const PackedPointwise& w,
                                         int64_t j0, const Store& store) {
  int64_t m0 = 0;
  for (; m0 + MR <= m; m0 += MR) relu_tile_half<MR, NB>(a, a_pixel, w, m0, j0, store);
  if (m0 < m) relu_rest_half<MR - 1, NB>(a, a_pixel, m - m0, w, m0, j0, store);
}

// relu(A @ W + bias) for M pixels, every output block, through `store`. With AVX-512
// (callers built with AVX512VL), a last block of at most 8 channels takes relu_tile_half.
template <int L, int MR, int NB_MAX, typename Store>
C10_ALWAYS_INLINE void relu_gemm(const float* a, int64_t a_pixel, int64_t m, const PackedPointwise& w,
                                 const Store& store) {
  static_assert(NB_MAX >= 1 && NB_MAX <= 4, "NB_MAX must be in [1, 4]");
  for (int64_t j0 = 0; j0 < w.blocks; j0 += NB_MAX) {
    const int64_t nb = std::min<int64_t>(NB_MAX, w.blocks - j0);
    if constexpr (L == 16 && MR > 1) {
      if (j0 + nb == w.blocks && w.c_out - (w.blocks - 1) * kBlock <= kBlock / 2) {
        const int64_t full = nb - 1;
        if (full == 0) {
          relu_columns_half<MR, 0>(a, a_pixel, m, w, j0, store);
        } else if (full == 1) {
          relu_columns_half<MR, 1>(a, a_pixel, m, w, j0, store);
        } else if (full == 2) {
          relu_columns_half<MR, 2>(a, a_pixel, m, w, j0, store);
        } else {
          relu_columns_half<MR, 3>(a, a_pixel, m, w, j0, store);
        }
        continue;
      }
    }
    if (nb == NB_MAX) {
      relu_columns<L, MR, NB_MAX>(a, a_pixel, m, w, j0, store);
    } else if constexpr (NB_MAX > 1) {
      if (nb == 1) {
        relu_columns<L, MR, 1>(a, a_pixel, m, w, j0, store);
      } else if constexpr (NB_MAX > 2) {
        if (nb == 2) {
          relu_columns<L, MR, 2>(a, a_pixel, m, w, j0, store);
        } else if constexpr (NB_MAX > 3) {
          relu_columns<L, MR, 3>(a, a_pixel, m, w, j0, store);
        }
      }
    }
  }
}

}  // namespace shufflenet::cpu::gemm
