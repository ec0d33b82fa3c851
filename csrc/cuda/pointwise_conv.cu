// Grouped 1x1 convolution on CUDA with the channel shuffle fused into the store
// and a bias + ReLU epilogue, and its backward.
//
// Per group g the conv is a GEMM over all pixels of the batch (pixels q = n*S + s):
//   out_g[M = C_out/G, Q] = W_g[M, K = C_in/G] @ x_g[K, Q]
// and conv channel g*M + m is stored at channel shuffle_dest_channel(g*M + m), so
// the shuffle costs nothing. One tiled kernel serves NCHW and channels_last: the
// operand loads are mapped to threads so that they are coalesced in either
// layout (along pixels for NCHW, along channels for channels_last), and each
// thread's output columns are fixed, so their offsets are computed once.
//
// Backward:
//  * grad_input is the same GEMM with W_g^T, reading grad_output through the
//    inverse shuffle (and the ReLU mask) in the operand load: no un-shuffled copy.
//  * grad_weight (and grad_bias, as an extra all-ones input row) is a GEMM whose
//    reduction runs over all pixels: split over blocks, partial sums into a float
//    workspace, then a second kernel adds the partials in a fixed order
//    (deterministic, no atomics).
//
// NOTE: this is a CUDA-core (FFMA) GEMM with 64x64 tiles and 4x4 outputs per
// thread. ShuffleNet's 1x1 convs have K = C_in/G between 24 and ~500, so each
// output element costs K FMAs against ~2*(K/64 + 1) bytes of traffic: most shapes
// are memory-bound at fp16 on H100 and the FFMA path suffices; wgmma/tensor-core
// tiles are the next step for the large-K, G = 1 shapes. Not measured here.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <array>

#include "common/checks.h"
#include "common/index.h"
#include "cuda/cuda_utils.cuh"

namespace shufflenet::cuda {
namespace {

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

// Launches pw_gemm_kernel over every group and pixel.
template <typename scalar_t, typename index_t, bool CL>
void launch_gemm(const GemmParams& p) {
  // No output rows (the input gradient of a conv with C_in = 0) or no pixels:
  // nothing to write, and a grid of zero blocks is an invalid launch.
  if (p.m == 0 || p.n * p.s == 0) return;
  const int m_tiles = static_cast<int>(ceil_div(p.m, kBM));
  const int64_t group_tiles = p.groups * m_tiles;
  const int64_t col_tiles = ceil_div(p.n * p.s, kBN);
  TORCH_CHECK(col_tiles <= std::numeric_limits<int32_t>::max(), "pointwise_conv: too many pixels (", p.n * p.s,
              ") for the CUDA kernels");
  const dim3 grid(static_cast<unsigned>(col_tiles),
                  static_cast<unsigned>(std::min(group_tiles, max_grid_yz())));
  const int64_t smem = p.k * static_cast<int64_t>(sizeof(index_t));
  // The B-row channel table takes K entries; raise the dynamic shared-memory limit
  // past the default 48 KB only for the (rare) very wide groups.
  constexpr int64_t kStaticSmem = 2 * kBK * (kBM + kPad) * sizeof(float) + kBM * sizeof(index_t);
  if (smem + kStaticSmem > 48 * 1024) {
    const int64_t optin = at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin;
    TORCH_CHECK(smem + kStaticSmem <= optin, "pointwise_conv: ", p.k,
                " channels per group exceed what the CUDA kernel supports");
    C10_CUDA_CHECK(cudaFuncSetAttribute(pw_gemm_kernel<scalar_t, index_t, CL>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  SHUFFLENET_LAUNCH(grid, kThreads, smem, at::cuda::getCurrentCUDAStream(), pw_gemm_kernel<scalar_t, index_t, CL>)
  (p, m_tiles, group_tiles);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, typename index_t>
void launch_gemm(const GemmParams& p, bool channels_last) {
  if (channels_last) {
    launch_gemm<scalar_t, index_t, true>(p);
  } else {
    launch_gemm<scalar_t, index_t, false>(p);
  }
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
  SHUFFLENET_DISPATCH_CUDA_TYPES(x.scalar_type(), "pointwise_conv_cuda", [&] {
    p.a = w.const_data_ptr<scalar_t>();
    p.b = x.const_data_ptr<scalar_t>();
    p.b_mask = nullptr;
    p.out = out.mutable_data_ptr<scalar_t>();
    p.bias = optional_ptr<scalar_t>(b);
    dispatch_index_type(use32, [&](auto index_tag) { launch_gemm<scalar_t, decltype(index_tag)>(p, cl); });
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
        launch_gemm<scalar_t, index_t>(p, cl);
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
        const int m_tiles = static_cast<int>(ceil_div(m, kBM));
        const int k_tiles = static_cast<int>(ceil_div(k + 1, kBN));
        const int64_t tiles = groups * m_tiles * k_tiles;
        const int64_t cols = p.n * p.s;
        // NOTE: enough splits to give every SM a few blocks, but at least 1024
        // pixels per block so the workspace traffic stays small next to the
        // activations read.
        const int64_t splits = std::max<int64_t>(
            1,
            std::min<int64_t>({ceil_div(4 * int64_t{num_sms()}, tiles), ceil_div(cols, 1024), max_grid_yz()}));
        const int64_t per_split = ceil_div(ceil_div(cols, splits), kBK) * kBK;
        at::Tensor ws = at::empty({splits, c_out, k + 1}, x.options().dtype(at::kFloat));
        TORCH_CHECK(tiles <= std::numeric_limits<int32_t>::max(), op, ": too many weight tiles");
        const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(splits));
        float* wsp = ws.mutable_data_ptr<float>();
        if (cl) {
          SHUFFLENET_LAUNCH(grid, kThreads, 0, stream,
                            pw_wgrad_partial_kernel<scalar_t, index_t, true>)(p, wsp, per_split, m_tiles, k_tiles);
        } else {
          SHUFFLENET_LAUNCH(grid, kThreads, 0, stream,
                            pw_wgrad_partial_kernel<scalar_t, index_t, false>)(p, wsp, per_split, m_tiles, k_tiles);
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
