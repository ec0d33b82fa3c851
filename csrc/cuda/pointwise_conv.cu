// Grouped 1x1 convolution on CUDA with the channel shuffle fused into the store
// and a bias + ReLU epilogue, and its backward.
//
// Per group g the conv is a GEMM over all pixels of the batch (pixels q = n*S + s):
//   out_g[M = C_out/G, Q] = W_g[M, K = C_in/G] @ x_g[K, Q]
// and conv channel g*M + m is stored at channel shuffle_dest_channel(g*M + m), so
// the shuffle costs nothing. One tiled kernel serves NCHW and channels_last: the
// operand loads are mapped to threads so that they are coalesced in either
// layout (along pixels for NCHW, along channels for channels_last), and the
// output pixel offsets are computed once per thread (FFMA) or block (tensor cores).
//
// Backward:
//  * grad_input is the same GEMM with W_g^T, reading grad_output through the
//    inverse shuffle (and the ReLU mask) in the operand load: no un-shuffled copy.
//  * grad_weight (and grad_bias, as an extra all-ones input row) is a GEMM whose
//    reduction runs over all pixels: split over blocks, partial sums into a float
//    workspace, then a second kernel adds the partials in a fixed order
//    (deterministic, no atomics).
//
// Two implementations of each GEMM:
//  * tensor cores (nvcuda::wmma, sm_80+): fp16 / bf16 operands as they are
//    (m16n16k16), float32 operands as TF32 (m16n16k8) when
//    torch.get_float32_matmul_precision() is "high" or "medium"; float
//    accumulation in both. The operand tiles are staged in shared memory (the
//    next tile's global loads are issued before the current tile's mma), the
//    accumulators go through shared memory to the epilogue, which adds the bias,
//    applies the ReLU and writes each output channel to its shuffled place.
//    The block tile follows the rows per group (C_out/G forward, C_in/G for the
//    input gradient): 16 x 128 pixels for up to 16 rows (ShuffleNet V1's 12 per
//    group), 32 x 128 up to 32 (V1's 20), 64 x 128 above (V2; 64 x 64 for TF32).
//    The weight gradient's tile is 16 x 32 (conv channels x input channels + 1)
//    when either side is small (up to 16 or 31), 32 x 64 otherwise, over 64
//    pixels per stage.
//  * CUDA cores (FFMA, 64 x 64 tiles): float32 at "highest" precision, and
//    devices without tensor-core wmma.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <type_traits>

#include "common/checks.h"
#include "common/index.h"
#include "cuda/cuda_utils.cuh"

#ifndef SHUFFLENET_SIMT
#include <mma.h>
#endif

namespace shufflenet::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kBM = 64;  // GEMM rows (output channels of a group) per block
constexpr int kBN = 64;  // GEMM columns (pixels) per block
constexpr int kBK = 16;  // reduction step
constexpr int kPad = 4;  // shared-memory row padding against bank conflicts

// out[n, ochan(g*M + m), s] = epilogue(sum_k A[g][m][k] * B[n, bchan(g*K + k), s])
// with chan(x) = shuffle_dest_channel(x, channels, map_groups); map_groups 1 is
// the identity.
struct GemmParams {
  const void* a;
  int64_t a_sg, a_sm, a_sk;
  const void* b;
  const void* b_mask;  // forward output whose ReLU masks B (same strides), or null
  int64_t b_sn, b_sc, b_ss, b_channels, b_map;
  void* out;
  int64_t o_sn, o_sc, o_ss, o_channels, o_map;
  const void* bias;  // [groups * M] or null
  bool relu;
  int64_t n, s, groups, m, k;
};

template <typename scalar_t, typename index_t, bool CL>
__global__ void __launch_bounds__(kThreads)
    pw_gemm_kernel(const GemmParams p, int m_tiles, int64_t group_tiles) {
  SHUFFLENET_SHARED(float, as, [kBK][kBM + kPad]);
  SHUFFLENET_SHARED(float, bs, [kBK][kBN + kPad]);
  SHUFFLENET_SHARED(index_t, out_chan, [kBM]);
  SHUFFLENET_DYNAMIC_SHARED(unsigned char, smem_raw);
  index_t* b_chan = reinterpret_cast<index_t*>(smem_raw);  // [K] channel offsets of B rows

  const scalar_t* a = static_cast<const scalar_t*>(p.a);
  const scalar_t* b = static_cast<const scalar_t*>(p.b);
  const scalar_t* mask = static_cast<const scalar_t*>(p.b_mask);
  const scalar_t* bias = static_cast<const scalar_t*>(p.bias);
  scalar_t* out = static_cast<scalar_t*>(p.out);
  const int t = threadIdx.x;
  const int tx = t % 16, ty = t / 16;
  const int M = static_cast<int>(p.m), K = static_cast<int>(p.k);
  const index_t s_size = static_cast<index_t>(p.s);
  const index_t cols = static_cast<index_t>(p.n) * s_size;
  const index_t col0 = static_cast<index_t>(blockIdx.x) * kBN;

  // Per-thread pixel offsets, fixed for the whole block.
  constexpr int kLoadCols = CL ? 4 : 1;
  index_t b_col[kLoadCols];
  bool b_ok[kLoadCols];
#pragma unroll
  for (int j = 0; j < kLoadCols; ++j) {
    const index_t q = col0 + (CL ? t / 16 + 16 * j : t % kBN);
    b_ok[j] = q < cols;
    const index_t n = b_ok[j] ? q / s_size : 0;
    const index_t s = b_ok[j] ? q - n * s_size : 0;
    b_col[j] = n * static_cast<index_t>(p.b_sn) + s * static_cast<index_t>(p.b_ss);
  }
  index_t o_col[4];
  bool o_ok[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const index_t q = col0 + (CL ? ty : tx) + 16 * j;
    o_ok[j] = q < cols;
    const index_t n = o_ok[j] ? q / s_size : 0;
    const index_t s = o_ok[j] ? q - n * s_size : 0;
    o_col[j] = n * static_cast<index_t>(p.o_sn) + s * static_cast<index_t>(p.o_ss);
  }

  for (int64_t gt = blockIdx.y; gt < group_tiles; gt += gridDim.y) {
    const int64_t g = gt / m_tiles;
    const int m0 = static_cast<int>(gt - g * m_tiles) * kBM;
    for (int k = t; k < K; k += blockDim.x) {
      b_chan[k] = static_cast<index_t>(shuffle_dest_channel(g * K + k, p.b_channels, p.b_map)) *
                  static_cast<index_t>(p.b_sc);
    }
    for (int m = t; m < kBM; m += blockDim.x) {
      const int64_t row = m0 + m < M ? g * M + m0 + m : 0;
      out_chan[m] = static_cast<index_t>(shuffle_dest_channel(row, p.o_channels, p.o_map)) *
                    static_cast<index_t>(p.o_sc);
    }
    __syncthreads();

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
    }
    const scalar_t* ag = a + g * p.a_sg;
    for (int k0 = 0; k0 < K; k0 += kBK) {
      // A tile: weights (small, L2-resident), k fastest.
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int kk = t % kBK, m = t / kBK + 16 * i;
        const bool ok = m0 + m < M && k0 + kk < K;
        as[kk][m] = ok ? to_float(ag[(m0 + m) * p.a_sm + (k0 + kk) * p.a_sk]) : 0.f;
      }
      // B tile: activations, coalesced along pixels (NCHW) or channels (CL).
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int kk = CL ? t % kBK : (t / kBN) * 4 + i;
        const int col = CL ? t / kBK + 16 * i : t % kBN;
        const int j = CL ? i : 0;
        float v = 0.f;
        if (b_ok[j] && k0 + kk < K) {
          const index_t off = b_col[j] + b_chan[k0 + kk];
          v = relu_masked(to_float(b[off]), mask, off);
        }
        bs[kk][col] = v;
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kBK; ++kk) {
        float ar[4], br[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) ar[i] = as[kk][(CL ? tx : ty) + 16 * i];
#pragma unroll
        for (int j = 0; j < 4; ++j) br[j] = bs[kk][(CL ? ty : tx) + 16 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(ar[i], br[j], acc[i][j]);
        }
      }
      __syncthreads();
    }
    // Epilogue: bias, ReLU, store at the shuffled channel.
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int m = (CL ? tx : ty) + 16 * i;
      if (m0 + m >= M) continue;
      const float bv = bias != nullptr ? to_float(bias[g * M + m0 + m]) : 0.f;
      const index_t ch = out_chan[m];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (o_ok[j]) out[o_col[j] + ch] = static_cast<scalar_t>(relu_if(acc[i][j] + bv, p.relu));
      }
    }
    __syncthreads();  // b_chan / out_chan are rewritten for the next tile
  }
}

// grad_weight[g*M + m][k] = sum_q dY[q, dchan(g*M + m)] * X[q, g*K + k] and, as
// column k = K (an all-ones row of X), grad_bias. Block (group tile, split)
// covers pixels [split*per_split, (split+1)*per_split) and writes its partial to
// ws[split][C_out][K + 1].
struct WgradParams {
  const void* dy;
  const void* mask;
  int64_t d_sn, d_sc, d_ss, d_channels, d_map;
  const void* x;
  int64_t x_sn, x_sc, x_ss;
  int64_t n, s, groups, m, k;
};

template <typename scalar_t, typename index_t, bool CL>
__global__ void __launch_bounds__(kThreads)
    pw_wgrad_partial_kernel(const WgradParams p, float* __restrict__ ws, int64_t per_split, int m_tiles,
                            int k_tiles) {
  SHUFFLENET_SHARED(float, as, [kBK][kBM + kPad]);  // [pixel][m]
  SHUFFLENET_SHARED(float, bs, [kBK][kBN + kPad]);  // [pixel][k]
  SHUFFLENET_SHARED(index_t, d_chan, [kBM]);
  const scalar_t* dy = static_cast<const scalar_t*>(p.dy);
  const scalar_t* mask = static_cast<const scalar_t*>(p.mask);
  const scalar_t* x = static_cast<const scalar_t*>(p.x);
  const int t = threadIdx.x;
  const int tx = t % 16, ty = t / 16;
  const int M = static_cast<int>(p.m), K = static_cast<int>(p.k);
  const int64_t tiles = static_cast<int64_t>(m_tiles) * k_tiles;
  const int64_t g = blockIdx.x / tiles;
  const int64_t r = blockIdx.x - g * tiles;
  const int m0 = static_cast<int>(r / k_tiles) * kBM;
  const int kc0 = static_cast<int>(r % k_tiles) * kBN;
  const index_t s_size = static_cast<index_t>(p.s);
  const index_t cols = static_cast<index_t>(p.n) * s_size;
  const index_t begin = static_cast<index_t>(blockIdx.y) * static_cast<index_t>(per_split);
  const index_t end_raw = begin + static_cast<index_t>(per_split);
  const index_t end = end_raw < cols ? end_raw : cols;

  for (int m = t; m < kBM; m += blockDim.x) {
    const int64_t row = m0 + m < M ? g * M + m0 + m : 0;
    d_chan[m] = static_cast<index_t>(shuffle_dest_channel(row, p.d_channels, p.d_map)) *
                static_cast<index_t>(p.d_sc);
  }
  const index_t x_group = static_cast<index_t>(g * K) * static_cast<index_t>(p.x_sc);
  __syncthreads();

  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
  }
  for (index_t q0 = begin; q0 < end; q0 += kBK) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      // NCHW: 16 neighbouring pixels per row; CL: 64 neighbouring channels per pixel.
      const int pix = CL ? t / kBM + 4 * i : t % kBK;
      const int row = CL ? t % kBM : t / kBK + 16 * i;
      const index_t q = q0 + pix;
      float av = 0.f, bv = 0.f;
      if (q < end) {
        const index_t n = q / s_size;
        const index_t s = q - n * s_size;
        if (m0 + row < M) {
          const index_t off = n * static_cast<index_t>(p.d_sn) + s * static_cast<index_t>(p.d_ss) + d_chan[row];
          av = relu_masked(to_float(dy[off]), mask, off);
        }
        const int kc = kc0 + row;
        if (kc < K) {
          bv = to_float(x[n * static_cast<index_t>(p.x_sn) + s * static_cast<index_t>(p.x_ss) + x_group +
                          static_cast<index_t>(kc) * static_cast<index_t>(p.x_sc)]);
        } else if (kc == K) {
          bv = 1.f;  // bias column
        }
      }
      as[pix][row] = av;
      bs[pix][row] = bv;
    }
    __syncthreads();
#pragma unroll
    for (int pp = 0; pp < kBK; ++pp) {
      float ar[4], br[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) ar[i] = as[pp][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) br[j] = bs[pp][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(ar[i], br[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
  const int64_t c_out = p.groups * M;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int m = m0 + ty + 16 * i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int kc = kc0 + tx + 16 * j;
      if (kc <= K) ws[(static_cast<int64_t>(blockIdx.y) * c_out + g * M + m) * (K + 1) + kc] = acc[i][j];
    }
  }
}

template <typename scalar_t>
__global__ void pw_wgrad_finish_kernel(const float* __restrict__ ws, int64_t splits, int64_t c_out, int64_t k,
                                       scalar_t* __restrict__ grad_weight, scalar_t* __restrict__ grad_bias) {
  const int64_t total = c_out * (k + 1);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t co = i / (k + 1);
    const int64_t kc = i - co * (k + 1);
    float s = 0.f;
    for (int64_t sp = 0; sp < splits; ++sp) s += ws[(sp * c_out + co) * (k + 1) + kc];
    if (kc < k) {
      if (grad_weight != nullptr) grad_weight[co * k + kc] = static_cast<scalar_t>(s);
    } else if (grad_bias != nullptr) {
      grad_bias[co] = static_cast<scalar_t>(s);
    }
  }
}

// ---- tensor-core kernels (nvcuda::wmma) ------------------------------------------

constexpr int kMmaThreads = 128;  // 4 warps
constexpr int kMmaBK = 16;        // forward reduction step (channels) per stage
constexpr int kWgradBP = 64;      // weight-gradient reduction step (pixels) per stage: 16 per warp

// Operand element type of the fragments and of the staged tiles, and the k of one mma.
template <typename scalar_t>
struct MmaTraits;
template <>
struct MmaTraits<c10::Half> {
  using smem_t = __half;
  using frag_t = __half;
  static constexpr int kK = 16;
};
template <>
struct MmaTraits<c10::BFloat16> {
  using smem_t = __nv_bfloat16;
  using frag_t = __nv_bfloat16;
  static constexpr int kK = 16;
};
template <>
struct MmaTraits<float> {
  using smem_t = float;
  using frag_t = wmma::precision::tf32;
  static constexpr int kK = 8;
};

template <typename scalar_t>
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, MmaTraits<scalar_t>::kK, typename MmaTraits<scalar_t>::frag_t,
                             wmma::row_major>;
template <typename scalar_t>
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, MmaTraits<scalar_t>::kK, typename MmaTraits<scalar_t>::frag_t,
                             wmma::row_major>;
template <typename scalar_t>
using FragC = wmma::fragment<wmma::accumulator, 16, 16, MmaTraits<scalar_t>::kK, float>;

// Staged-tile row pitch: 16 bytes of padding against bank conflicts, and every
// fragment's first element stays 256-bit aligned as wmma requires.
template <typename T>
constexpr int mma_pitch(int cols) {
  return cols + static_cast<int>(16 / sizeof(T));
}

// float32 operands are rounded to TF32 once per fragment (cvt.rna), as cuBLAS does.
template <typename scalar_t, typename Frag>
__device__ __forceinline__ void round_operand(Frag& f) {
  if constexpr (std::is_same_v<scalar_t, float>) {
#pragma unroll
    for (int i = 0; i < f.num_elements; ++i) f.x[i] = wmma::__float_to_tf32(f.x[i]);
  }
}

// A static shared buffer aligned to 128 bytes (wmma needs 256-bit aligned tiles).
__device__ __forceinline__ unsigned char* align128(unsigned char* p) {
  return reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(p) + 127) & ~uintptr_t{127});
}

// The forward / input-gradient GEMM on tensor cores (see pw_gemm_kernel for the
// operands). Block tile BM rows x BN pixels; 4 warps in WARPS_M x (4 / WARPS_M),
// each with (BM / 16 / WARPS_M) x (BN / 16 / (4 / WARPS_M)) accumulator fragments.
template <typename scalar_t, typename index_t, bool CL, int BM, int BN, int WARPS_M>
__global__ void __launch_bounds__(kMmaThreads)
    pw_mma_kernel(const GemmParams p, int m_tiles, int64_t group_tiles) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // the host code never launches it there
#else
  using smem_t = typename MmaTraits<scalar_t>::smem_t;
  constexpr int kK = MmaTraits<scalar_t>::kK;
  constexpr int kWarpsN = 4 / WARPS_M;
  constexpr int FM = BM / (16 * WARPS_M), FN = BN / (16 * kWarpsN);
  static_assert(FM >= 1 && FN >= 1 && FM * 16 * WARPS_M == BM && FN * 16 * kWarpsN == BN, "tile shape");
  constexpr int LDA = mma_pitch<smem_t>(kMmaBK), LDB = mma_pitch<smem_t>(BN), LDC = BN + 4;
  constexpr int kABytes = BM * LDA * static_cast<int>(sizeof(smem_t));
  constexpr int kBBytes = kMmaBK * LDB * static_cast<int>(sizeof(smem_t));
  constexpr int kCBytes = BM * LDC * static_cast<int>(sizeof(float));
  constexpr int kBytes = kABytes + kBBytes > kCBytes ? kABytes + kBBytes : kCBytes;
  constexpr int kAPer = BM * kMmaBK / kMmaThreads, kBPer = kMmaBK * BN / kMmaThreads;
  static_assert(kAPer * kMmaThreads == BM * kMmaBK && kBPer * kMmaThreads == kMmaBK * BN, "loader shape");
  // The staged A and B tiles and, after the k loop, the accumulator tile C.
  SHUFFLENET_SHARED(unsigned char, mma_raw, [kBytes + 128]);
  SHUFFLENET_SHARED(index_t, out_chan, [BM]);
  SHUFFLENET_SHARED(index_t, b_col, [BN]);
  SHUFFLENET_SHARED(index_t, o_col, [BN]);
  SHUFFLENET_DYNAMIC_SHARED(unsigned char, dyn_raw);
  index_t* b_chan = reinterpret_cast<index_t*>(dyn_raw);  // [K] channel offsets of B rows
  unsigned char* tiles = align128(mma_raw);
  smem_t* as = reinterpret_cast<smem_t*>(tiles);
  smem_t* bs = reinterpret_cast<smem_t*>(tiles + kABytes);
  float* cs = reinterpret_cast<float*>(tiles);

  const scalar_t* a = static_cast<const scalar_t*>(p.a);
  const scalar_t* b = static_cast<const scalar_t*>(p.b);
  const scalar_t* mask = static_cast<const scalar_t*>(p.b_mask);
  const scalar_t* bias = static_cast<const scalar_t*>(p.bias);
  scalar_t* out = static_cast<scalar_t*>(p.out);
  const int t = threadIdx.x;
  const int warp = t / 32;
  const int wm = warp % WARPS_M, wn = warp / WARPS_M;
  const int M = static_cast<int>(p.m), K = static_cast<int>(p.k);
  const index_t s_size = static_cast<index_t>(p.s);
  const index_t cols = static_cast<index_t>(p.n) * s_size;
  const index_t col0 = static_cast<index_t>(blockIdx.x) * BN;
  const int valid_cols = static_cast<int>(cols - col0 < BN ? cols - col0 : BN);

  // Pixel offsets of the block's columns, fixed for the whole block.
  for (int c = t; c < BN; c += kMmaThreads) {
    const index_t q = c < valid_cols ? col0 + c : 0;
    const index_t n = q / s_size;
    const index_t s = q - n * s_size;
    b_col[c] = n * static_cast<index_t>(p.b_sn) + s * static_cast<index_t>(p.b_ss);
    o_col[c] = n * static_cast<index_t>(p.o_sn) + s * static_cast<index_t>(p.o_ss);
  }

  for (int64_t gt = blockIdx.y; gt < group_tiles; gt += gridDim.y) {
    const int64_t g = gt / m_tiles;
    const int m0 = static_cast<int>(gt - g * m_tiles) * BM;
    for (int k = t; k < K; k += kMmaThreads) {
      b_chan[k] = static_cast<index_t>(shuffle_dest_channel(g * K + k, p.b_channels, p.b_map)) *
                  static_cast<index_t>(p.b_sc);
    }
    for (int m = t; m < BM; m += kMmaThreads) {
      const int64_t row = m0 + m < M ? g * M + m0 + m : 0;
      out_chan[m] = static_cast<index_t>(shuffle_dest_channel(row, p.o_channels, p.o_map)) *
                    static_cast<index_t>(p.o_sc);
    }
    __syncthreads();

    const scalar_t* ag = a + g * p.a_sg;
    scalar_t ra[kAPer], rb[kBPer];
    // Global -> registers: A (weights) with k fastest; B (activations) along
    // pixels (NCHW) or channels (channels_last).
    auto load_tile = [&](int k0) {
#pragma unroll
      for (int i = 0; i < kAPer; ++i) {
        const int idx = t + kMmaThreads * i;
        const int kk = idx % kMmaBK, m = idx / kMmaBK;
        const bool ok = m0 + m < M && k0 + kk < K;
        ra[i] = ok ? ag[(m0 + m) * p.a_sm + (k0 + kk) * p.a_sk] : scalar_t(0.f);
      }
#pragma unroll
      for (int i = 0; i < kBPer; ++i) {
        const int idx = t + kMmaThreads * i;
        const int kk = CL ? idx % kMmaBK : idx / BN;
        const int col = CL ? idx / kMmaBK : idx % BN;
        scalar_t v = scalar_t(0.f);
        if (col < valid_cols && k0 + kk < K) {
          const index_t off = b_col[col] + b_chan[k0 + kk];
          v = b[off];
          if (mask != nullptr && to_float(mask[off]) <= 0.f) v = scalar_t(0.f);
        }
        rb[i] = v;
      }
    };
    // Registers -> shared memory.
    auto store_tile = [&]() {
#pragma unroll
      for (int i = 0; i < kAPer; ++i) {
        const int idx = t + kMmaThreads * i;
        as[(idx / kMmaBK) * LDA + idx % kMmaBK] = static_cast<smem_t>(ra[i]);
      }
#pragma unroll
      for (int i = 0; i < kBPer; ++i) {
        const int idx = t + kMmaThreads * i;
        const int kk = CL ? idx % kMmaBK : idx / BN;
        const int col = CL ? idx / kMmaBK : idx % BN;
        bs[kk * LDB + col] = static_cast<smem_t>(rb[i]);
      }
    };

    FragC<scalar_t> acc[FM][FN];
#pragma unroll
    for (int i = 0; i < FM; ++i) {
#pragma unroll
      for (int j = 0; j < FN; ++j) wmma::fill_fragment(acc[i][j], 0.f);
    }
    if (K > 0) load_tile(0);
    for (int k0 = 0; k0 < K; k0 += kMmaBK) {
      store_tile();
      __syncthreads();
      if (k0 + kMmaBK < K) load_tile(k0 + kMmaBK);  // in flight during the mma below
#pragma unroll
      for (int kk = 0; kk < kMmaBK; kk += kK) {
        FragA<scalar_t> fa[FM];
        FragB<scalar_t> fb[FN];
#pragma unroll
        for (int i = 0; i < FM; ++i) {
          wmma::load_matrix_sync(fa[i], as + (wm * FM * 16 + 16 * i) * LDA + kk, LDA);
          round_operand<scalar_t>(fa[i]);
        }
#pragma unroll
        for (int j = 0; j < FN; ++j) {
          wmma::load_matrix_sync(fb[j], bs + kk * LDB + wn * FN * 16 + 16 * j, LDB);
          round_operand<scalar_t>(fb[j]);
        }
#pragma unroll
        for (int i = 0; i < FM; ++i) {
#pragma unroll
          for (int j = 0; j < FN; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
        }
      }
      __syncthreads();
    }
    // Epilogue: accumulators -> shared memory (over the staged tiles, free after
    // the loop's last barrier), then bias, ReLU and the store at the shuffled
    // channel, coalesced along pixels (NCHW) or channels (channels_last).
#pragma unroll
    for (int i = 0; i < FM; ++i) {
#pragma unroll
      for (int j = 0; j < FN; ++j) {
        wmma::store_matrix_sync(cs + (wm * FM * 16 + 16 * i) * LDC + wn * FN * 16 + 16 * j, acc[i][j], LDC,
                                wmma::mem_row_major);
      }
    }
    __syncthreads();
    const int rows = M - m0 < BM ? M - m0 : BM;
    for (int idx = t; idx < BM * BN; idx += kMmaThreads) {
      const int m = CL ? idx % BM : idx / BN;
      const int col = CL ? idx / BM : idx % BN;
      if (m >= rows || col >= valid_cols) continue;
      const float bv = bias != nullptr ? to_float(bias[g * M + m0 + m]) : 0.f;
      out[o_col[col] + out_chan[m]] = static_cast<scalar_t>(relu_if(cs[m * LDC + col] + bv, p.relu));
    }
    __syncthreads();  // b_chan / out_chan / the tiles are rewritten for the next tile
  }
#endif
}

// The weight-gradient partial GEMM on tensor cores (see pw_wgrad_partial_kernel):
// A = dY^T [BM conv channels x pixels], B = X [pixels x BN input channels (+ the
// bias column)]. Each warp multiplies its 16 of every 64 staged pixels into the
// whole BM x BN tile; the epilogue adds the four warps' tiles in a fixed order.
template <typename scalar_t, typename index_t, bool CL, int BM, int BN>
__global__ void __launch_bounds__(kMmaThreads)
    pw_wgrad_mma_kernel(const WgradParams p, float* __restrict__ ws, int64_t per_split, int m_tiles,
                        int k_tiles) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();
#else
  using smem_t = typename MmaTraits<scalar_t>::smem_t;
  constexpr int kK = MmaTraits<scalar_t>::kK;
  constexpr int FM = BM / 16, FN = BN / 16;
  constexpr int LDA = mma_pitch<smem_t>(kWgradBP), LDB = mma_pitch<smem_t>(BN), LDC = BN + 4;
  constexpr int kABytes = BM * LDA * static_cast<int>(sizeof(smem_t));
  constexpr int kBBytes = kWgradBP * LDB * static_cast<int>(sizeof(smem_t));
  constexpr int kCBytes = 4 * BM * LDC * static_cast<int>(sizeof(float));
  constexpr int kBytes = kABytes + kBBytes > kCBytes ? kABytes + kBBytes : kCBytes;
  // Per thread and stage: one pixel (NCHW: t % 64; channels_last: t / 2) and
  // half (CL) or a strided half (NCHW) of the rows and columns.
  constexpr int kAPer = BM / 2, kBPer = BN / 2;
  SHUFFLENET_SHARED(unsigned char, mma_raw, [kBytes + 128]);
  SHUFFLENET_SHARED(index_t, d_chan, [BM]);
  unsigned char* tiles = align128(mma_raw);
  smem_t* as = reinterpret_cast<smem_t*>(tiles);              // [BM][pixels]
  smem_t* bs = reinterpret_cast<smem_t*>(tiles + kABytes);  // [pixels][BN]
  float* cs = reinterpret_cast<float*>(tiles);                // [warp][BM][BN]

  const scalar_t* dy = static_cast<const scalar_t*>(p.dy);
  const scalar_t* mask = static_cast<const scalar_t*>(p.mask);
  const scalar_t* x = static_cast<const scalar_t*>(p.x);
  const int t = threadIdx.x;
  const int warp = t / 32;
  const int M = static_cast<int>(p.m), K = static_cast<int>(p.k);
  const int64_t tiles_per_group = static_cast<int64_t>(m_tiles) * k_tiles;
  const int64_t g = blockIdx.x / tiles_per_group;
  const int64_t r = blockIdx.x - g * tiles_per_group;
  const int m0 = static_cast<int>(r / k_tiles) * BM;
  const int kc0 = static_cast<int>(r % k_tiles) * BN;
  const index_t s_size = static_cast<index_t>(p.s);
  const index_t cols = static_cast<index_t>(p.n) * s_size;
  const index_t begin = static_cast<index_t>(blockIdx.y) * static_cast<index_t>(per_split);
  const index_t end_raw = begin + static_cast<index_t>(per_split);
  const index_t end = end_raw < cols ? end_raw : cols;

  for (int m = t; m < BM; m += kMmaThreads) {
    const int64_t row = m0 + m < M ? g * M + m0 + m : 0;
    d_chan[m] = static_cast<index_t>(shuffle_dest_channel(row, p.d_channels, p.d_map)) *
                static_cast<index_t>(p.d_sc);
  }
  const index_t x_group = static_cast<index_t>(g * K) * static_cast<index_t>(p.x_sc);
  __syncthreads();

  const int pix = CL ? t / 2 : t % kWgradBP;
  auto a_row = [&](int i) { return CL ? (t % 2) * kAPer + i : t / kWgradBP + 2 * i; };
  auto b_col = [&](int i) { return CL ? (t % 2) * kBPer + i : t / kWgradBP + 2 * i; };
  scalar_t ra[kAPer], rb[kBPer];
  auto load_tile = [&](index_t q0) {
    const index_t q = q0 + pix;
    const bool ok = q < end;
    const index_t n = ok ? q / s_size : 0;
    const index_t s = ok ? q - n * s_size : 0;
    const index_t d_pix = n * static_cast<index_t>(p.d_sn) + s * static_cast<index_t>(p.d_ss);
    const index_t x_pix = n * static_cast<index_t>(p.x_sn) + s * static_cast<index_t>(p.x_ss) + x_group;
#pragma unroll
    for (int i = 0; i < kAPer; ++i) {
      const int m = a_row(i);
      scalar_t v = scalar_t(0.f);
      if (ok && m0 + m < M) {
        const index_t off = d_pix + d_chan[m];
        v = dy[off];
        if (mask != nullptr && to_float(mask[off]) <= 0.f) v = scalar_t(0.f);
      }
      ra[i] = v;
    }
#pragma unroll
    for (int i = 0; i < kBPer; ++i) {
      const int kc = kc0 + b_col(i);
      scalar_t v = scalar_t(0.f);
      if (ok && kc < K) {
        v = x[x_pix + static_cast<index_t>(kc) * static_cast<index_t>(p.x_sc)];
      } else if (ok && kc == K) {
        v = scalar_t(1.f);  // bias column
      }
      rb[i] = v;
    }
  };
  auto store_tile = [&]() {
#pragma unroll
    for (int i = 0; i < kAPer; ++i) as[a_row(i) * LDA + pix] = static_cast<smem_t>(ra[i]);
#pragma unroll
    for (int i = 0; i < kBPer; ++i) bs[pix * LDB + b_col(i)] = static_cast<smem_t>(rb[i]);
  };

  FragC<scalar_t> acc[FM][FN];
#pragma unroll
  for (int i = 0; i < FM; ++i) {
#pragma unroll
    for (int j = 0; j < FN; ++j) wmma::fill_fragment(acc[i][j], 0.f);
  }
  if (begin < end) load_tile(begin);
  for (index_t q0 = begin; q0 < end; q0 += kWgradBP) {
    store_tile();
    __syncthreads();
    if (q0 + kWgradBP < end) load_tile(q0 + kWgradBP);
#pragma unroll
    for (int kk = 0; kk < 16; kk += kK) {
      const int p0 = warp * 16 + kk;
      FragA<scalar_t> fa[FM];
      FragB<scalar_t> fb[FN];
#pragma unroll
      for (int i = 0; i < FM; ++i) {
        wmma::load_matrix_sync(fa[i], as + 16 * i * LDA + p0, LDA);
        round_operand<scalar_t>(fa[i]);
      }
#pragma unroll
      for (int j = 0; j < FN; ++j) {
        wmma::load_matrix_sync(fb[j], bs + p0 * LDB + 16 * j, LDB);
        round_operand<scalar_t>(fb[j]);
      }
#pragma unroll
      for (int i = 0; i < FM; ++i) {
#pragma unroll
        for (int j = 0; j < FN; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < FM; ++i) {
#pragma unroll
    for (int j = 0; j < FN; ++j) {
      wmma::store_matrix_sync(cs + (warp * BM + 16 * i) * LDC + 16 * j, acc[i][j], LDC, wmma::mem_row_major);
    }
  }
  __syncthreads();
  const int64_t c_out = p.groups * M;
  for (int idx = t; idx < BM * BN; idx += kMmaThreads) {
    const int m = idx / BN, kc = idx % BN;
    if (m0 + m >= M || kc0 + kc > K) continue;
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < 4; ++w) sum += cs[(w * BM + m) * LDC + kc];
    ws[(static_cast<int64_t>(blockIdx.y) * c_out + g * M + m0 + m) * (K + 1) + kc0 + kc] = sum;
  }
#endif
}

// Whether the GEMMs of `dtype` run on tensor cores: fp16 / bf16 always, float32
// as TF32 when torch.get_float32_matmul_precision() allows it ("high" or
// "medium"), on devices with wmma for these types (sm_80+).
bool use_tensor_cores(at::ScalarType dtype) {
  if (at::cuda::getCurrentDeviceProperties()->major < 8) return false;
  if (dtype == at::kFloat) return at::globalContext().float32MatmulPrecision() != at::Float32MatmulPrecision::HIGHEST;
  return true;
}

// Grid and dynamic shared memory of a launch of `kernel` (pw_gemm_kernel or
// pw_mma_kernel) over every group and pixel with tiles of bm rows and bn pixels
// and `static_smem` bytes of static shared memory next to the K-entry channel
// table of B rows.
struct GemmLaunch {
  dim3 grid;
  int64_t smem;
  int m_tiles;
  int64_t group_tiles;
};

template <typename index_t, typename Kernel>
GemmLaunch gemm_launch(const GemmParams& p, Kernel kernel, int bm, int bn, int64_t static_smem) {
  GemmLaunch l;
  l.m_tiles = static_cast<int>(ceil_div(p.m, bm));
  l.group_tiles = p.groups * l.m_tiles;
  const int64_t col_tiles = ceil_div(p.n * p.s, bn);
  TORCH_CHECK(col_tiles <= std::numeric_limits<int32_t>::max(), "pointwise_conv: too many pixels (", p.n * p.s,
              ") for the CUDA kernels");
  l.grid = dim3(static_cast<unsigned>(col_tiles), static_cast<unsigned>(std::min(l.group_tiles, max_grid_yz())));
  l.smem = p.k * static_cast<int64_t>(sizeof(index_t));
  // Raise the dynamic shared-memory limit past the default 48 KB only for the
  // (rare) very wide groups.
  if (l.smem + static_smem > 48 * 1024) {
    const int64_t optin = at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin;
    TORCH_CHECK(l.smem + static_smem <= optin, "pointwise_conv: ", p.k,
                " channels per group exceed what the CUDA kernel supports");
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(l.smem)));
  }
  return l;
}

// Static shared memory of pw_mma_kernel<scalar_t, index_t, CL, BM, BN, ...>.
template <typename scalar_t, typename index_t, int BM, int BN>
constexpr int64_t mma_static_smem() {
  using smem_t = typename MmaTraits<scalar_t>::smem_t;
  const int64_t ab = (BM * mma_pitch<smem_t>(kMmaBK) + kMmaBK * mma_pitch<smem_t>(BN)) * sizeof(smem_t);
  const int64_t c = BM * (BN + 4) * sizeof(float);
  return (ab > c ? ab : c) + 128 + (BM + 2 * BN) * sizeof(index_t);
}

template <typename scalar_t, typename index_t, bool CL, int BM, int BN, int WARPS_M>
void launch_mma(const GemmParams& p) {
  const GemmLaunch l = gemm_launch<index_t>(p, &pw_mma_kernel<scalar_t, index_t, CL, BM, BN, WARPS_M>, BM, BN,
                                            mma_static_smem<scalar_t, index_t, BM, BN>());
  SHUFFLENET_LAUNCH(l.grid, kMmaThreads, l.smem, at::cuda::getCurrentCUDAStream(),
                    pw_mma_kernel<scalar_t, index_t, CL, BM, BN, WARPS_M>)(p, l.m_tiles, l.group_tiles);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The forward / input-gradient GEMM over every group and pixel: tensor cores
// with a block tile that follows the rows per group, or the FFMA kernel.
template <typename scalar_t, typename index_t, bool CL>
void launch_gemm(const GemmParams& p, bool tensor_cores) {
  // No output rows (the input gradient of a conv with C_in = 0) or no pixels:
  // nothing to write, and a grid of zero blocks is an invalid launch.
  if (p.m == 0 || p.n * p.s == 0) return;
  if (!tensor_cores) {
    constexpr int64_t kStaticSmem = 2 * kBK * (kBM + kPad) * sizeof(float) + kBM * sizeof(index_t);
    const GemmLaunch l = gemm_launch<index_t>(p, &pw_gemm_kernel<scalar_t, index_t, CL>, kBM, kBN, kStaticSmem);
    SHUFFLENET_LAUNCH(l.grid, kThreads, l.smem, at::cuda::getCurrentCUDAStream(), pw_gemm_kernel<scalar_t, index_t, CL>)
    (p, l.m_tiles, l.group_tiles);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else if (p.m <= 16) {  // ShuffleNet V1's 12 channels per group (and other small groups)
    launch_mma<scalar_t, index_t, CL, 16, 128, 1>(p);
  } else if (p.m <= 32) {  // V1's 20 and 24 per group
    launch_mma<scalar_t, index_t, CL, 32, 128, 1>(p);
  } else if constexpr (std::is_same_v<scalar_t, float>) {
    // TF32 fragments take twice the registers of fp16 ones: half the pixels, no spills.
    launch_mma<scalar_t, index_t, CL, 64, 64, 2>(p);
  } else {
    launch_mma<scalar_t, index_t, CL, 64, 128, 2>(p);
  }
}

template <typename scalar_t, typename index_t>
void launch_gemm(const GemmParams& p, bool channels_last, bool tensor_cores) {
  if (channels_last) {
    launch_gemm<scalar_t, index_t, true>(p, tensor_cores);
  } else {
    launch_gemm<scalar_t, index_t, false>(p, tensor_cores);
  }
}

// Weight-gradient tile: bm conv channels x bn input channels (+ the bias
// column), reduced over `step` pixels per stage.
struct WgradTile {
  int bm, bn, step;
  bool tensor_cores;
};

WgradTile wgrad_tile(int64_t m, int64_t k, bool tensor_cores) {
  if (!tensor_cores) return {kBM, kBN, kBK, false};
  // Few conv channels or few input channels per group (V1): the small tile wastes
  // less of its 16-row / 32-column fragments.
  if (m <= 16 || k + 1 <= 32) return {16, 32, kWgradBP, true};
  return {32, 64, kWgradBP, true};
}

template <typename scalar_t, typename index_t, bool CL>
void launch_wgrad(const WgradTile& tile, const dim3& grid, const WgradParams& p, float* ws, int64_t per_split,
                  int m_tiles, int k_tiles) {
  auto stream = at::cuda::getCurrentCUDAStream();
  if (!tile.tensor_cores) {
    SHUFFLENET_LAUNCH(grid, kThreads, 0, stream, pw_wgrad_partial_kernel<scalar_t, index_t, CL>)
    (p, ws, per_split, m_tiles, k_tiles);
  } else if (tile.bm == 16) {
    SHUFFLENET_LAUNCH(grid, kMmaThreads, 0, stream, pw_wgrad_mma_kernel<scalar_t, index_t, CL, 16, 32>)
    (p, ws, per_split, m_tiles, k_tiles);
  } else {
    SHUFFLENET_LAUNCH(grid, kMmaThreads, 0, stream, pw_wgrad_mma_kernel<scalar_t, index_t, CL, 32, 64>)
    (p, ws, per_split, m_tiles, k_tiles);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

bool is_channels_last_view(const ChannelView& v) { return v.stride_c == 1 && v.c > 1; }

at::Tensor pointwise_conv_cuda(const at::Tensor& input, const at::Tensor& weight,
                               const c10::optional<at::Tensor>& bias, int64_t groups, int64_t shuffle_groups,
                               bool relu) {
  check_pointwise_conv_args(input, weight, bias, groups, shuffle_groups);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::MemoryFormat fmt = output_memory_format(input);
  const int64_t c_out = weight.size(0);
  at::Tensor out = empty_in_format({input.size(0), c_out, input.size(2), input.size(3)}, input, fmt);
  if (out.numel() == 0) return out;
  const auto x_view = as_channel_view(input);  // a channel slice stays a view
  const at::Tensor& x = x_view.first;
  const ChannelView xv = x_view.second;
  const ChannelView ov = as_channel_view(out).second;
  const at::Tensor w = weight.contiguous();
  c10::optional<at::Tensor> b;
  if (bias.has_value() && bias->defined()) b = bias->contiguous();
  GemmParams p{};
  p.m = c_out / groups;
  p.k = input.size(1) / groups;
  p.a_sg = p.m * p.k;
  p.a_sm = p.k;
  p.a_sk = 1;
  p.b_sn = xv.stride_n;
  p.b_sc = xv.stride_c;
  p.b_ss = xv.stride_s;
  p.b_channels = xv.c;
  p.b_map = 1;
  p.o_sn = ov.stride_n;
  p.o_sc = ov.stride_c;
  p.o_ss = ov.stride_s;
  p.o_channels = c_out;
  p.o_map = shuffle_groups;
  p.relu = relu;
  p.n = xv.n;
  p.s = xv.s;
  p.groups = groups;
  const bool cl = is_channels_last_view(xv);
  const bool use32 = fits_int32({&x, &out});
  const bool tc = use_tensor_cores(x.scalar_type());
  SHUFFLENET_DISPATCH_CUDA_TYPES(x.scalar_type(), "pointwise_conv_cuda", [&] {
    p.a = w.const_data_ptr<scalar_t>();
    p.b = x.const_data_ptr<scalar_t>();
    p.b_mask = nullptr;
    p.out = out.mutable_data_ptr<scalar_t>();
    p.bias = optional_ptr<scalar_t>(b);
    dispatch_index_type(use32, [&](auto index_tag) { launch_gemm<scalar_t, decltype(index_tag)>(p, cl, tc); });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pointwise_conv_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const c10::optional<at::Tensor>& relu_output, int64_t groups, int64_t shuffle_groups,
    std::array<bool, 3> output_mask) {
  constexpr const char* op = "pointwise_conv_backward";
  check_pointwise_conv_args(input, weight, c10::nullopt, groups, shuffle_groups);
  const int64_t c_out = weight.size(0);
  const std::vector<int64_t> out_sizes = {input.size(0), c_out, input.size(2), input.size(3)};
  check_grad_output(grad_output, out_sizes, input, op);
  check_relu_output(relu_output, out_sizes, input, op);
  const bool has_relu = relu_output.has_value() && relu_output->defined();
  const c10::cuda::CUDAGuard guard(input.device());
  const at::MemoryFormat fmt = output_memory_format(input);
  // grad_output and the ReLU mask in the forward output's layout (a no-op when
  // they already are), so both are read through the same offsets.
  const at::Tensor dy = grad_output.contiguous(fmt);
  const at::Tensor mask = has_relu ? relu_output->contiguous(fmt) : at::Tensor();
  const auto x_view = as_channel_view(input);
  const at::Tensor& x = x_view.first;
  const ChannelView xv = x_view.second;
  const ChannelView dv = as_channel_view(dy).second;
  const at::Tensor w = weight.contiguous();
  const int64_t k = input.size(1) / groups, m = c_out / groups;

  at::Tensor grad_input = output_mask[0] ? empty_in_format(input.sizes(), input, fmt) : at::empty({0}, input.options());
  at::Tensor grad_weight = output_mask[1] ? at::empty(weight.sizes(), weight.options()) : at::empty({0}, weight.options());
  at::Tensor grad_bias = output_mask[2] ? at::empty({c_out}, weight.options()) : at::empty({0}, weight.options());
  if (dy.numel() == 0) {
    // N = 0 or an empty plane: nothing contributes to the weight and bias gradients.
    if (output_mask[1]) grad_weight.zero_();
    if (output_mask[2]) grad_bias.zero_();
    return {grad_input, grad_weight, grad_bias};
  }
  const bool cl = is_channels_last_view(xv);
  const bool use32 = fits_int32({&x, &dy, &grad_input});
  const bool tc = use_tensor_cores(x.scalar_type());
  auto stream = at::cuda::getCurrentCUDAStream();

  SHUFFLENET_DISPATCH_CUDA_TYPES(x.scalar_type(), "pointwise_conv_backward_cuda", [&] {
    dispatch_index_type(use32, [&](auto index_tag) {
      using index_t = decltype(index_tag);
      if (output_mask[0]) {
        const ChannelView gv = as_channel_view(grad_input).second;
        GemmParams p{};
        // A = W_g^T: [K rows of the input gradient][M conv channels].
        p.a = w.const_data_ptr<scalar_t>();
        p.a_sg = m * k;
        p.a_sm = 1;
        p.a_sk = k;
        p.b = dy.const_data_ptr<scalar_t>();
        p.b_mask = has_relu ? mask.const_data_ptr<scalar_t>() : nullptr;
        p.b_sn = dv.stride_n;
        p.b_sc = dv.stride_c;
        p.b_ss = dv.stride_s;
        p.b_channels = c_out;
        p.b_map = shuffle_groups;  // conv channel c sits at shuffle_dest_channel(c)
        p.out = grad_input.mutable_data_ptr<scalar_t>();
        p.o_sn = gv.stride_n;
        p.o_sc = gv.stride_c;
        p.o_ss = gv.stride_s;
        p.o_channels = input.size(1);
        p.o_map = 1;
        p.bias = nullptr;
        p.relu = false;
        p.n = gv.n;
        p.s = gv.s;
        p.groups = groups;
        p.m = k;
        p.k = m;
        launch_gemm<scalar_t, index_t>(p, cl, tc);
      }
      if (output_mask[1] || output_mask[2]) {
        WgradParams p{};
        p.dy = dy.const_data_ptr<scalar_t>();
        p.mask = has_relu ? mask.const_data_ptr<scalar_t>() : nullptr;
        p.d_sn = dv.stride_n;
        p.d_sc = dv.stride_c;
        p.d_ss = dv.stride_s;
        p.d_channels = c_out;
        p.d_map = shuffle_groups;
        p.x = x.const_data_ptr<scalar_t>();
        p.x_sn = xv.stride_n;
        p.x_sc = xv.stride_c;
        p.x_ss = xv.stride_s;
        p.n = xv.n;
        p.s = xv.s;
        p.groups = groups;
        p.m = m;
        p.k = k;
        const WgradTile tile = wgrad_tile(m, k, tc);
        const int m_tiles = static_cast<int>(ceil_div(m, tile.bm));
        const int k_tiles = static_cast<int>(ceil_div(k + 1, tile.bn));
        const int64_t tiles = groups * m_tiles * k_tiles;
        const int64_t cols = p.n * p.s;
        // NOTE: enough splits to give every SM a few blocks, but at least 1024
        // pixels per block so the workspace traffic stays small next to the
        // activations read.
        const int64_t splits = std::max<int64_t>(
            1,
            std::min<int64_t>({ceil_div(4 * int64_t{num_sms()}, tiles), ceil_div(cols, 1024), max_grid_yz()}));
        const int64_t per_split = ceil_div(ceil_div(cols, splits), tile.step) * tile.step;
        at::Tensor ws = at::empty({splits, c_out, k + 1}, x.options().dtype(at::kFloat));
        TORCH_CHECK(tiles <= std::numeric_limits<int32_t>::max(), op, ": too many weight tiles");
        const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(splits));
        float* wsp = ws.mutable_data_ptr<float>();
        if (cl) {
          launch_wgrad<scalar_t, index_t, true>(tile, grid, p, wsp, per_split, m_tiles, k_tiles);
        } else {
          launch_wgrad<scalar_t, index_t, false>(tile, grid, p, wsp, per_split, m_tiles, k_tiles);
        }
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        SHUFFLENET_LAUNCH(grid_for(c_out * (k + 1), kThreads), kThreads, 0, stream, pw_wgrad_finish_kernel<scalar_t>)(
            wsp, splits, c_out, k, output_mask[1] ? grad_weight.mutable_data_ptr<scalar_t>() : nullptr,
            output_mask[2] ? grad_bias.mutable_data_ptr<scalar_t>() : nullptr);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    });
  });
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace

SHUFFLENET_CUDA_LIBRARY_IMPL(m) {
  m.impl("pointwise_conv", &pointwise_conv_cuda);
  m.impl("pointwise_conv_backward", &pointwise_conv_backward_cuda);
}

}  // namespace shufflenet::cuda
