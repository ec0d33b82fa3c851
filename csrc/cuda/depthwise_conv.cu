// Depthwise 2-D convolution on CUDA: forward (bias + ReLU epilogue), backward
// input (a transposed depthwise conv written as a gather: no atomics) and
// backward weight/bias (a deterministic two-stage reduction: per-block partial
// sums into a workspace, then a second kernel adds them in a fixed order).
//
// Forward paths:
//  * NCHW: one block computes an output tile of one (n, c) plane; the input tile
//    with its halo is staged in shared memory once and every thread computes
//    kRowsPerThread outputs down a column, reusing input rows in registers.
//    3x3 stride 1 and stride 2 (dilation 1) are compile-time specialisations
//    (weights in registers, loops fully unrolled); every other kernel size up to
//    7x7 with any stride/padding/dilation takes the generic tiled kernel.
//  * channels_last: every thread owns a vector of channels (16, 8 or 4 bytes,
//    the widest the channel count, strides and pointers allow) at OWB
//    neighbouring output columns, so global loads are vector-wide and coalesced
//    across the warp (neighbouring threads hold neighbouring channels).
//
// The weight [C, 1, KH, KW] is read in its own dtype (converted to float in
// registers) through its strides as a [C, KH*KW] matrix (DwParams::w_sc, w_st):
// the contiguous layout (strides (K, 1)) and the tap-major one (strides (1, C),
// w.permute(2, 3, 1, 0).contiguous().permute(3, 2, 0, 1), whose VEC channel
// weights of one tap are contiguous) are both used as they are, without a copy.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <type_traits>

#include "common/checks.h"
#include "common/index.h"
#include "cuda/cuda_utils.cuh"

namespace shufflenet::cuda {
namespace {

// Shapes and strides (elements) of a depthwise conv. Input and output strides
// are given as (N, C, H, W), so one kernel reads NCHW, channels_last and channel
// slices of either.
struct DwParams {
  int64_t n, c, h, w, ho, wo;
  int kh, kw, sh, sw, ph, pw, dh, dw;
  int64_t x_sn, x_sc, x_sh, x_sw;
  int64_t y_sn, y_sc, y_sh, y_sw;
  int64_t w_sc, w_st;  // weight strides of channel and tap (tap = k_h * kw + k_w)
};

// The weight as [C, KH*KW]: a view for the contiguous and the tap-major layout
// (any layout whose (KH, KW) dims merge), a copy only for other layouts.
at::Tensor weight_taps(const at::Tensor& weight) {
  return weight.reshape({weight.size(0), weight.size(2) * weight.size(3)});
}

// w_taps: weight_taps(weight).
DwParams make_params(const at::Tensor& x, const at::Tensor& y, const at::Tensor& weight, const at::Tensor& w_taps,
                     at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  DwParams p{};
  p.n = x.size(0);
  p.c = x.size(1);
  p.h = x.size(2);
  p.w = x.size(3);
  p.ho = y.size(2);
  p.wo = y.size(3);
  p.kh = static_cast<int>(weight.size(2));
  p.kw = static_cast<int>(weight.size(3));
  p.sh = static_cast<int>(stride[0]);
  p.sw = static_cast<int>(stride[1]);
  p.ph = static_cast<int>(padding[0]);
  p.pw = static_cast<int>(padding[1]);
  p.dh = static_cast<int>(dilation[0]);
  p.dw = static_cast<int>(dilation[1]);
  p.x_sn = x.stride(0);
  p.x_sc = x.stride(1);
  p.x_sh = x.stride(2);
  p.x_sw = x.stride(3);
  p.y_sn = y.stride(0);
  p.y_sc = y.stride(1);
  p.y_sh = y.stride(2);
  p.y_sw = y.stride(3);
  p.w_sc = w_taps.stride(0);
  p.w_st = w_taps.stride(1);
  return p;
}

// Stride, padding and dilation travel as int inside the kernels.
void check_int_range(at::IntArrayRef v, const char* name) {
  for (int64_t e : v) {
    TORCH_CHECK(e <= std::numeric_limits<int32_t>::max(), "depthwise_conv2d: ", name, " ", v,
                " is too large for the CUDA kernels");
  }
}

constexpr int kRowsPerThread = 4;
// Weights staged in shared memory by the generic kernel (7x7 at most).
constexpr int kMaxTaps = kMaxDepthwiseKernel * kMaxDepthwiseKernel;

// ---- forward, NCHW, shared-memory tiles -------------------------------------
// KH == 0 selects the generic kernel (sizes, stride and dilation at run time);
// otherwise KH x KW with stride SH x SW and dilation 1 are compile-time.
// blockDim = (tile_w, tile_h / kRowsPerThread); grid = (tiles, planes).
template <typename scalar_t, typename index_t, int KH, int KW, int SH, int SW>
__global__ void dw_fwd_nchw_kernel(const DwParams p, const scalar_t* __restrict__ x,
                                   const scalar_t* __restrict__ weight, const scalar_t* __restrict__ bias,
                                   scalar_t* __restrict__ y, bool relu, int tiles_w, int in_tile_h, int in_tile_w) {
  constexpr bool kGeneric = KH == 0;
  SHUFFLENET_DYNAMIC_SHARED(float, smem);
  float* tile = smem;
  float* wsm = smem + in_tile_h * in_tile_w;  // generic kernel only

  const int kh_n = kGeneric ? p.kh : KH;
  const int kw_n = kGeneric ? p.kw : KW;
  const int sh = kGeneric ? p.sh : SH;
  const int sw = kGeneric ? p.sw : SW;
  const int dh = kGeneric ? p.dh : 1;
  const int dw = kGeneric ? p.dw : 1;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int nthreads = blockDim.x * blockDim.y;
  const int tid = ty * blockDim.x + tx;
  const int tile_w = blockDim.x, tile_h = blockDim.y * kRowsPerThread;
  const int tw0 = static_cast<int>(blockIdx.x % tiles_w) * tile_w;
  const int th0 = static_cast<int>(blockIdx.x / tiles_w) * tile_h;
  const int ih0 = th0 * sh - p.ph;
  const int iw0 = tw0 * sw - p.pw;
  const int h = static_cast<int>(p.h), w = static_cast<int>(p.w);
  const index_t planes = static_cast<index_t>(p.n * p.c);
  const index_t channels = static_cast<index_t>(p.c);

  for (index_t plane = blockIdx.y; plane < planes; plane += gridDim.y) {
    const index_t n = plane / channels;
    const index_t c = plane - n * channels;
    const scalar_t* xp = x + n * static_cast<index_t>(p.x_sn) + c * static_cast<index_t>(p.x_sc);
    const scalar_t* wp = weight + c * static_cast<index_t>(p.w_sc);
    const int w_st = static_cast<int>(p.w_st);
    // Input tile with halo; out-of-range taps read zero (the conv's padding).
    for (int i = tid; i < in_tile_h * in_tile_w; i += nthreads) {
      const int r = i / in_tile_w;
      const int q = i - r * in_tile_w;
      const int ih = ih0 + r, iw = iw0 + q;
      float v = 0.f;
      if (ih >= 0 && ih < h && iw >= 0 && iw < w) {
        v = to_float(xp[static_cast<index_t>(ih) * static_cast<index_t>(p.x_sh) +
                        static_cast<index_t>(iw) * static_cast<index_t>(p.x_sw)]);
      }
      tile[i] = v;
    }
    if constexpr (kGeneric) {
      for (int i = tid; i < kh_n * kw_n; i += nthreads) wsm[i] = to_float(wp[i * w_st]);
    }
    __syncthreads();

    const float b = bias != nullptr ? to_float(bias[c]) : 0.f;
    float acc[kRowsPerThread];
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r) acc[r] = b;
    const int row0 = ty * kRowsPerThread * sh;  // first tile row read by this thread
    const int col0 = tx * sw;
    if constexpr (!kGeneric) {
      float wr[KH * KW];
#pragma unroll
      for (int i = 0; i < KH * KW; ++i) wr[i] = to_float(wp[i * w_st]);
      // Register blocking: each tile row is read once and feeds every output
      // row of this thread that uses it ((R-1)*S + K rows for R outputs).
#pragma unroll
      for (int ir = 0; ir < (kRowsPerThread - 1) * SH + KH; ++ir) {
        float row[KW];
#pragma unroll
        for (int k = 0; k < KW; ++k) row[k] = tile[(row0 + ir) * in_tile_w + col0 + k];
#pragma unroll
        for (int r = 0; r < kRowsPerThread; ++r) {
          const int k_h = ir - r * SH;
          if (k_h >= 0 && k_h < KH) {
#pragma unroll
            for (int k = 0; k < KW; ++k) acc[r] = fmaf(wr[k_h * KW + k], row[k], acc[r]);
          }
        }
      }
    } else {
      for (int k_h = 0; k_h < kh_n; ++k_h) {
        for (int k_w = 0; k_w < kw_n; ++k_w) {
          const float wv = wsm[k_h * kw_n + k_w];
          const float* tp = tile + (row0 + k_h * dh) * in_tile_w + col0 + k_w * dw;
#pragma unroll
          for (int r = 0; r < kRowsPerThread; ++r) acc[r] = fmaf(wv, tp[r * sh * in_tile_w], acc[r]);
        }
      }
    }
    const int ow = tw0 + tx;
    scalar_t* yp = y + n * static_cast<index_t>(p.y_sn) + c * static_cast<index_t>(p.y_sc);
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r) {
      const int oh = th0 + ty * kRowsPerThread + r;
      if (oh < p.ho && ow < p.wo) {
        yp[static_cast<index_t>(oh) * static_cast<index_t>(p.y_sh) + static_cast<index_t>(ow) * static_cast<index_t>(p.y_sw)] =
            static_cast<scalar_t>(relu_if(acc[r], relu));
      }
    }
    __syncthreads();  // the tile is reloaded for the next plane
  }
}

// ---- forward, channels_last, channel vectors ---------------------------------
// The weights of channels [c0, c0 + VEC) of one tap, converted in registers.
// w_packed (host-checked: w_sc == 1, w_st and the pointer aligned for VEC, as in
// the tap-major layout): one vector load; otherwise VEC strided scalar loads.
template <typename scalar_t, typename index_t, int VEC>
__device__ __forceinline__ void load_tap_weights(const DwParams& p, const scalar_t* __restrict__ w, bool w_packed,
                                                 index_t c0, int tap, float (&out)[VEC]) {
  const scalar_t* wp = w + c0 * static_cast<index_t>(p.w_sc) + static_cast<index_t>(tap) * static_cast<index_t>(p.w_st);
  if constexpr (VEC > 1) {
    if (w_packed) {
      const Pack<scalar_t, VEC> wv = load_pack<scalar_t, VEC>(wp);
#pragma unroll
      for (int v = 0; v < VEC; ++v) out[v] = to_float(wv.v[v]);
      return;
    }
  }
#pragma unroll
  for (int v = 0; v < VEC; ++v) out[v] = to_float(wp[v * static_cast<index_t>(p.w_sc)]);
}

// VEC channels per thread, VEC * sizeof(scalar_t) = 16, 8 or 4 bytes (or one
// channel). KH == 0 selects the generic kernel (OWB 1).
template <typename scalar_t, typename index_t, int VEC, int KH, int KW, int SH, int SW, int OWB>
__global__ void dw_fwd_nhwc_kernel(const DwParams p, const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
                                   bool w_packed, const scalar_t* __restrict__ bias, scalar_t* __restrict__ y,
                                   bool relu) {
  constexpr bool kGeneric = KH == 0;
  const index_t cvecs = static_cast<index_t>(p.c / VEC);
  const index_t wblocks = static_cast<index_t>((p.wo + OWB - 1) / OWB);
  const index_t ho = static_cast<index_t>(p.ho);
  const index_t total = static_cast<index_t>(p.n) * ho * wblocks * cvecs;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t cv = i % cvecs;
    index_t t = i / cvecs;
    const index_t wb = t % wblocks;
    t /= wblocks;
    const index_t oh = t % ho;
    const index_t n = t / ho;
    const index_t c0 = cv * VEC;
    const int ow0 = static_cast<int>(wb) * OWB;
    const scalar_t* xp = x + n * static_cast<index_t>(p.x_sn) + c0;

    float acc[OWB][VEC];
#pragma unroll
    for (int v = 0; v < VEC; ++v) {
      const float b = bias != nullptr ? to_float(bias[c0 + v]) : 0.f;
#pragma unroll
      for (int o = 0; o < OWB; ++o) acc[o][v] = b;
    }
    if constexpr (!kGeneric) {
#pragma unroll
      for (int k_h = 0; k_h < KH; ++k_h) {
        const int ih = static_cast<int>(oh) * SH - p.ph + k_h;
        if (ih < 0 || ih >= p.h) continue;
        float wv[KW][VEC];
#pragma unroll
        for (int k = 0; k < KW; ++k) load_tap_weights<scalar_t, index_t, VEC>(p, w, w_packed, c0, k_h * KW + k, wv[k]);
        const scalar_t* rp = xp + static_cast<index_t>(ih) * static_cast<index_t>(p.x_sh);
        // Input columns of this row are loaded once and shared by the OWB outputs.
#pragma unroll
        for (int j = 0; j < (OWB - 1) * SW + KW; ++j) {
          const int iw = ow0 * SW - p.pw + j;
          if (iw < 0 || iw >= p.w) continue;
          const Pack<scalar_t, VEC> xv =
              load_pack<scalar_t, VEC>(rp + static_cast<index_t>(iw) * static_cast<index_t>(p.x_sw));
#pragma unroll
          for (int o = 0; o < OWB; ++o) {
            const int k = j - o * SW;
            if (k >= 0 && k < KW) {
#pragma unroll
              for (int v = 0; v < VEC; ++v) acc[o][v] = fmaf(wv[k][v], to_float(xv.v[v]), acc[o][v]);
            }
          }
        }
      }
    } else {
      for (int k_h = 0; k_h < p.kh; ++k_h) {
        const int ih = static_cast<int>(oh) * p.sh - p.ph + k_h * p.dh;
        if (ih < 0 || ih >= p.h) continue;
        for (int k_w = 0; k_w < p.kw; ++k_w) {
          const int iw = ow0 * p.sw - p.pw + k_w * p.dw;
          if (iw < 0 || iw >= p.w) continue;
          const Pack<scalar_t, VEC> xv = load_pack<scalar_t, VEC>(
              xp + static_cast<index_t>(ih) * static_cast<index_t>(p.x_sh) +
              static_cast<index_t>(iw) * static_cast<index_t>(p.x_sw));
          float wv[VEC];
          load_tap_weights<scalar_t, index_t, VEC>(p, w, w_packed, c0, k_h * p.kw + k_w, wv);
#pragma unroll
          for (int v = 0; v < VEC; ++v) acc[0][v] = fmaf(wv[v], to_float(xv.v[v]), acc[0][v]);
        }
      }
    }
    scalar_t* yp = y + n * static_cast<index_t>(p.y_sn) + oh * static_cast<index_t>(p.y_sh) + c0;
#pragma unroll
    for (int o = 0; o < OWB; ++o) {
      const int ow = ow0 + o;
      if (ow < p.wo) {
        Pack<scalar_t, VEC> out;
#pragma unroll
        for (int v = 0; v < VEC; ++v) out.v[v] = static_cast<scalar_t>(relu_if(acc[o][v], relu));
        store_pack<scalar_t, VEC>(yp + static_cast<index_t>(ow) * static_cast<index_t>(p.y_sw), out);
      }
    }
  }
}

// ---- forward fallback: one thread per output, any strides --------------------
// Only for tiles that would not fit in shared memory (very large dilation).
template <typename scalar_t, typename index_t>
__global__ void dw_fwd_direct_kernel(const DwParams p, const scalar_t* __restrict__ x,
                                     const scalar_t* __restrict__ weight, const scalar_t* __restrict__ bias,
                                     scalar_t* __restrict__ y, bool relu) {
  const index_t wo = static_cast<index_t>(p.wo), ho = static_cast<index_t>(p.ho), cc = static_cast<index_t>(p.c);
  const index_t total = static_cast<index_t>(p.n) * cc * ho * wo;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t ow = i % wo;
    const index_t oh = (i / wo) % ho;
    const index_t c = (i / (wo * ho)) % cc;
    const index_t n = i / (wo * ho * cc);
    float acc = bias != nullptr ? to_float(bias[c]) : 0.f;
    for (int k_h = 0; k_h < p.kh; ++k_h) {
      const int64_t ih = conv_input_index(oh, k_h, p.sh, p.ph, p.dh);
      if (ih < 0 || ih >= p.h) continue;
      for (int k_w = 0; k_w < p.kw; ++k_w) {
        const int64_t iw = conv_input_index(ow, k_w, p.sw, p.pw, p.dw);
        if (iw < 0 || iw >= p.w) continue;
        acc = fmaf(to_float(weight[c * p.w_sc + (k_h * p.kw + k_w) * p.w_st]),
                   to_float(x[n * p.x_sn + c * p.x_sc + ih * p.x_sh + iw * p.x_sw]), acc);
      }
    }
    y[n * p.y_sn + c * p.y_sc + oh * p.y_sh + ow * p.y_sw] = static_cast<scalar_t>(relu_if(acc, relu));
  }
}

// ---- backward input: transposed conv as a gather ----------------------------
// One thread per input element, in memory order of the layout (CL: channels
// fastest) so both the reads of grad_output and the writes are coalesced.
// grad_output and relu_output share the strides stored in p.y_*.
template <typename scalar_t, typename index_t, bool CL>
__global__ void dw_bwd_input_kernel(const DwParams p, const scalar_t* __restrict__ grad,
                                    const scalar_t* __restrict__ relu_out, const scalar_t* __restrict__ weight,
                                    scalar_t* __restrict__ grad_input, int64_t gi_sn, int64_t gi_sc, int64_t gi_sh,
                                    int64_t gi_sw) {
  const index_t w = static_cast<index_t>(p.w), h = static_cast<index_t>(p.h), cc = static_cast<index_t>(p.c);
  const index_t h_out = static_cast<index_t>(p.ho), w_out = static_cast<index_t>(p.wo);
  const index_t total = static_cast<index_t>(p.n) * cc * h * w;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    index_t n, c, ih, iw;
    if constexpr (CL) {
      c = i % cc;
      iw = (i / cc) % w;
      ih = (i / (cc * w)) % h;
      n = i / (cc * w * h);
    } else {
      iw = i % w;
      ih = (i / w) % h;
      c = (i / (w * h)) % cc;
      n = i / (w * h * cc);
    }
    const scalar_t* gp = grad + n * static_cast<index_t>(p.y_sn) + c * static_cast<index_t>(p.y_sc);
    const scalar_t* mp =
        relu_out != nullptr ? relu_out + n * static_cast<index_t>(p.y_sn) + c * static_cast<index_t>(p.y_sc) : nullptr;
    const scalar_t* wp = weight + c * static_cast<index_t>(p.w_sc);
    const int w_st = static_cast<int>(p.w_st);
    float acc = 0.f;
    // In index_t: the 32-bit instantiation divides in 32 bits.
    static_assert(std::is_same_v<decltype(conv_output_index_for_input<index_t>(0, 0, 0, 0, 0, 0)), index_t>);
    for (int k_h = 0; k_h < p.kh; ++k_h) {
      const index_t oh = conv_output_index_for_input<index_t>(ih, k_h, p.sh, p.ph, p.dh, h_out);
      if (oh < 0) continue;
      for (int k_w = 0; k_w < p.kw; ++k_w) {
        const index_t ow = conv_output_index_for_input<index_t>(iw, k_w, p.sw, p.pw, p.dw, w_out);
        if (ow < 0) continue;
        const index_t off = oh * static_cast<index_t>(p.y_sh) + ow * static_cast<index_t>(p.y_sw);
        acc = fmaf(to_float(wp[(k_h * p.kw + k_w) * w_st]), relu_masked(to_float(gp[off]), mp, off), acc);
      }
    }
    grad_input[n * gi_sn + c * gi_sc + ih * gi_sh + iw * gi_sw] = static_cast<scalar_t>(acc);
  }
}

// ---- backward weight and bias: stage 1 (per-block partial sums) -------------
// Each block reduces a contiguous range of output positions (n, oh, ow) of its
// channel(s) into KH*KW weight partials plus one bias partial, written to
// ws[split][c][taps + 1]. KHM x KWM bound the run-time kernel size so the
// accumulators stay in registers (indexed only by unrolled loop counters).
//   NCHW: blockDim 256, one channel per block, threads along positions.
//   channels_last: blockDim (32, 4), 32 channels per block (coalesced loads).
constexpr int kWgradClThreadsY = 4;

template <typename scalar_t, typename index_t, int KHM, int KWM>
__device__ __forceinline__ void dw_wgrad_accumulate(const DwParams& p, const scalar_t* __restrict__ x,
                                                    const scalar_t* __restrict__ grad,
                                                    const scalar_t* __restrict__ relu_out, index_t n, index_t c,
                                                    index_t oh, index_t ow, float (&acc)[KHM][KWM], float& acc_b) {
  const index_t goff = n * static_cast<index_t>(p.y_sn) + c * static_cast<index_t>(p.y_sc) +
                       oh * static_cast<index_t>(p.y_sh) + ow * static_cast<index_t>(p.y_sw);
  const float gv = relu_masked(to_float(grad[goff]), relu_out, goff);
  acc_b += gv;
  const scalar_t* xp = x + n * static_cast<index_t>(p.x_sn) + c * static_cast<index_t>(p.x_sc);
#pragma unroll
  for (int k_h = 0; k_h < KHM; ++k_h) {
    if (k_h >= p.kh) break;
    const int ih = static_cast<int>(oh) * p.sh - p.ph + k_h * p.dh;
    if (ih < 0 || ih >= p.h) continue;
#pragma unroll
    for (int k_w = 0; k_w < KWM; ++k_w) {
      if (k_w >= p.kw) break;
      const int iw = static_cast<int>(ow) * p.sw - p.pw + k_w * p.dw;
      if (iw < 0 || iw >= p.w) continue;
      acc[k_h][k_w] = fmaf(gv, to_float(xp[static_cast<index_t>(ih) * static_cast<index_t>(p.x_sh) +
                                           static_cast<index_t>(iw) * static_cast<index_t>(p.x_sw)]),
                           acc[k_h][k_w]);
    }
  }
}

template <typename scalar_t, typename index_t, bool CL, int KHM, int KWM>
__global__ void dw_wgrad_partial_kernel(const DwParams p, const scalar_t* __restrict__ x,
                                        const scalar_t* __restrict__ grad, const scalar_t* __restrict__ relu_out,
                                        float* __restrict__ ws, int64_t positions_per_split) {
  constexpr int kTapsMax = KHM * KWM + 1;
  const int taps = p.kh * p.kw;
  const index_t wo = static_cast<index_t>(p.wo), ho = static_cast<index_t>(p.ho);
  const index_t positions = static_cast<index_t>(p.n) * ho * wo;
  const index_t begin = static_cast<index_t>(blockIdx.y) * static_cast<index_t>(positions_per_split);
  const index_t end_raw = begin + static_cast<index_t>(positions_per_split);
  const index_t end = end_raw < positions ? end_raw : positions;

  float acc[KHM][KWM];
  float acc_b = 0.f;
#pragma unroll
  for (int i = 0; i < KHM; ++i) {
#pragma unroll
    for (int j = 0; j < KWM; ++j) acc[i][j] = 0.f;
  }

  if constexpr (!CL) {
    const index_t c = blockIdx.x;
    for (index_t q = begin + threadIdx.x; q < end; q += blockDim.x) {
      const index_t n = q / (ho * wo);
      const index_t r = q - n * ho * wo;
      const index_t oh = r / wo;
      dw_wgrad_accumulate<scalar_t, index_t, KHM, KWM>(p, x, grad, relu_out, n, c, oh, r - oh * wo, acc, acc_b);
    }
    // Warp butterfly then a fixed-order sum over warps: the same inputs always
    // give the same bits.
    SHUFFLENET_SHARED(float, red, [kThreads / 32][kTapsMax]);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int i = 0; i < KHM; ++i) {
#pragma unroll
      for (int j = 0; j < KWM; ++j) {
        float v = acc[i][j];
#pragma unroll
        for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
        if (lane == 0 && i < p.kh && j < p.kw) red[warp][i * p.kw + j] = v;
      }
    }
    float vb = acc_b;
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) vb += __shfl_xor_sync(0xffffffffu, vb, m);
    if (lane == 0) red[warp][taps] = vb;
    __syncthreads();
    const int warps = blockDim.x / 32;
    for (int t = threadIdx.x; t <= taps; t += blockDim.x) {
      float s = 0.f;
      for (int k = 0; k < warps; ++k) s += red[k][t];
      ws[(static_cast<int64_t>(blockIdx.y) * p.c + c) * (taps + 1) + t] = s;
    }
  } else {
    const index_t c = static_cast<index_t>(blockIdx.x) * 32 + threadIdx.x;
    const bool active = c < static_cast<index_t>(p.c);
    if (active) {
      for (index_t q = begin + threadIdx.y; q < end; q += blockDim.y) {
        const index_t n = q / (ho * wo);
        const index_t r = q - n * ho * wo;
        const index_t oh = r / wo;
        dw_wgrad_accumulate<scalar_t, index_t, KHM, KWM>(p, x, grad, relu_out, n, c, oh, r - oh * wo, acc, acc_b);
      }
    }
    SHUFFLENET_SHARED(float, red, [kWgradClThreadsY][kTapsMax][32]);
#pragma unroll
    for (int i = 0; i < KHM; ++i) {
#pragma unroll
      for (int j = 0; j < KWM; ++j) {
        if (i < p.kh && j < p.kw) red[threadIdx.y][i * p.kw + j][threadIdx.x] = acc[i][j];
      }
    }
    red[threadIdx.y][taps][threadIdx.x] = acc_b;
    __syncthreads();
    if (active) {
      for (int t = threadIdx.y; t <= taps; t += blockDim.y) {
        float s = 0.f;
        for (int k = 0; k < static_cast<int>(blockDim.y); ++k) s += red[k][t][threadIdx.x];
        ws[(static_cast<int64_t>(blockIdx.y) * p.c + c) * (taps + 1) + t] = s;
      }
    }
  }
}

// ---- backward weight and bias: stage 2 (fixed-order sum over splits) -------
template <typename scalar_t>
__global__ void dw_wgrad_finish_kernel(const float* __restrict__ ws, int64_t splits, int64_t channels, int taps,
                                       scalar_t* __restrict__ grad_weight, scalar_t* __restrict__ grad_bias) {
  const int64_t total = channels * (taps + 1);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i / (taps + 1);
    const int t = static_cast<int>(i - c * (taps + 1));
    float s = 0.f;
    for (int64_t k = 0; k < splits; ++k) s += ws[(k * channels + c) * (taps + 1) + t];
    if (t < taps) {
      if (grad_weight != nullptr) grad_weight[c * taps + t] = static_cast<scalar_t>(s);
    } else if (grad_bias != nullptr) {
      grad_bias[c] = static_cast<scalar_t>(s);
    }
  }
}

// ---- host launchers ----------------------------------------------------------

// w_taps: weight_taps(weight), read through p.w_sc / p.w_st.
template <typename scalar_t, typename index_t>
void launch_forward(const DwParams& p, const at::Tensor& x, const at::Tensor& w_taps,
                    const c10::optional<at::Tensor>& bias, at::Tensor& y, bool relu, bool channels_last) {
  auto stream = at::cuda::getCurrentCUDAStream();
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* bp = optional_ptr<scalar_t>(bias);
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
  const bool fast3x3 = p.kh == 3 && p.kw == 3 && p.dh == 1 && p.dw == 1 && p.sh == p.sw && (p.sh == 1 || p.sh == 2);

  const scalar_t* wp = w_taps.const_data_ptr<scalar_t>();

  if (channels_last) {
    // Channel vectors of 16, 8 or 4 bytes need C, every pixel offset and both
    // base pointers aligned for the width (widest_vec); otherwise one channel
    // per thread. ShuffleNet V2's channel counts, dense or a half of
    // x.chunk(2, 1) alike (the half's offset and pitch are multiples of C):
    //   fp16/bf16: C = 24, 48, 96, 192, 232, 464, 488: 16 bytes (8 channels);
    //              C = 116, 244: 8 bytes (4 channels); C = 58, 122: 4 bytes
    //              (2 channels): a pitch of 116 or 244 bytes leaves every other
    //              pixel only 4-byte aligned, so no wider access fits.
    //   fp32:      C = 24, 48, 96, 116, 192, 232, 244, 464, 488: 16 bytes
    //              (4 channels); C = 58, 122: 8 bytes (2 channels).
    const int vec = p.x_sc == 1 && p.y_sc == 1
                        ? widest_vec<scalar_t>({p.c, p.x_sn, p.x_sh, p.x_sw, p.y_sn, p.y_sh, p.y_sw}, {xp, yp})
                        : 1;
    auto launch = [&](auto vec_tag) {
      constexpr int V = decltype(vec_tag)::value;
      const int64_t cvecs = p.c / V;
      // One vector load per tap when the VEC channel weights of a tap are
      // contiguous and aligned (the tap-major layout).
      const bool w_packed = V > 1 && p.w_sc == 1 && p.w_st % V == 0 &&
                            is_aligned(wp, static_cast<int64_t>(V * sizeof(scalar_t)));
      // NOTE: 4 output columns per thread at stride 1 (6 input columns loaded
      // for 4 outputs instead of 12), 2 at stride 2. ptxas (sm_90a, int32
      // indexing, 16-byte vectors): 80 registers for fp16/bf16 at stride 1, 64
      // at stride 2, 56 for fp32 at both; 8-byte fp16 vectors 64/52, 4-byte
      // 42/44; no spills; more columns would cut occupancy further.
      if (fast3x3 && p.sh == 1) {
        const int64_t work = p.n * p.ho * ceil_div(p.wo, 4) * cvecs;
        SHUFFLENET_LAUNCH(grid_for(work, kThreads), kThreads, 0, stream,
                          dw_fwd_nhwc_kernel<scalar_t, index_t, V, 3, 3, 1, 1, 4>)(p, xp, wp, w_packed, bp, yp, relu);
      } else if (fast3x3) {
        const int64_t work = p.n * p.ho * ceil_div(p.wo, 2) * cvecs;
        SHUFFLENET_LAUNCH(grid_for(work, kThreads), kThreads, 0, stream,
                          dw_fwd_nhwc_kernel<scalar_t, index_t, V, 3, 3, 2, 2, 2>)(p, xp, wp, w_packed, bp, yp, relu);
      } else {
        const int64_t work = p.n * p.ho * p.wo * cvecs;
        SHUFFLENET_LAUNCH(grid_for(work, kThreads), kThreads, 0, stream,
                          dw_fwd_nhwc_kernel<scalar_t, index_t, V, 0, 0, 0, 0, 1>)(p, xp, wp, w_packed, bp, yp, relu);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    dispatch_vec<scalar_t>(vec, launch);
    return;
  }

  // NCHW: tile width the power of two >= W_out in [8, 32], tile height likewise
  // so that small planes (7x7, 14x14) do not leave most of a block idle.
  int tile_w = 8;
  while (tile_w < p.wo && tile_w < 32) tile_w *= 2;
  int ty = 1;
  while (ty * kRowsPerThread < p.ho && ty * tile_w < kThreads) ty *= 2;
  while (ty * tile_w < 32) ty *= 2;  // at least one full warp
  const int tile_h = ty * kRowsPerThread;
  const int64_t in_tile_h = static_cast<int64_t>(tile_h - 1) * p.sh + static_cast<int64_t>(p.kh - 1) * p.dh + 1;
  const int64_t in_tile_w = static_cast<int64_t>(tile_w - 1) * p.sw + static_cast<int64_t>(p.kw - 1) * p.dw + 1;
  const int64_t smem = (in_tile_h * in_tile_w + kMaxTaps) * static_cast<int64_t>(sizeof(float));
  if (smem > 48 * 1024) {
    SHUFFLENET_LAUNCH(grid_for(p.n * p.c * p.ho * p.wo, kThreads), kThreads, 0, stream,
                      dw_fwd_direct_kernel<scalar_t, index_t>)(p, xp, wp, bp, yp, relu);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  const int tiles_w = static_cast<int>(ceil_div(p.wo, tile_w));
  const int64_t tiles = tiles_w * ceil_div(p.ho, tile_h);
  TORCH_CHECK(tiles <= std::numeric_limits<int32_t>::max(), "depthwise_conv2d: output plane ", p.ho, "x", p.wo,
              " is too large for the CUDA kernels");
  const dim3 grid(static_cast<unsigned>(tiles),
                  static_cast<unsigned>(std::min<int64_t>(p.n * p.c, max_grid_yz())));
  const dim3 block(tile_w, ty);
  const int ith = static_cast<int>(in_tile_h), itw = static_cast<int>(in_tile_w);
  if (fast3x3 && p.sh == 1) {
    SHUFFLENET_LAUNCH(grid, block, smem, stream,
                      dw_fwd_nchw_kernel<scalar_t, index_t, 3, 3, 1, 1>)(p, xp, wp, bp, yp, relu, tiles_w, ith, itw);
  } else if (fast3x3) {
    SHUFFLENET_LAUNCH(grid, block, smem, stream,
                      dw_fwd_nchw_kernel<scalar_t, index_t, 3, 3, 2, 2>)(p, xp, wp, bp, yp, relu, tiles_w, ith, itw);
  } else {
    SHUFFLENET_LAUNCH(grid, block, smem, stream,
                      dw_fwd_nchw_kernel<scalar_t, index_t, 0, 0, 0, 0>)(p, xp, wp, bp, yp, relu, tiles_w, ith, itw);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor depthwise_conv2d_cuda(const at::Tensor& input, const at::Tensor& weight,
                                 const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation, bool relu) {
  const auto out_hw = check_depthwise_conv2d_args(input, weight, bias, stride, padding, dilation);
  check_int_range(stride, "stride");
  check_int_range(padding, "padding");
  check_int_range(dilation, "dilation");
  const c10::cuda::CUDAGuard guard(input.device());
  const at::MemoryFormat fmt = output_memory_format(input);
  at::Tensor y = empty_in_format({input.size(0), input.size(1), out_hw[0], out_hw[1]}, input, fmt);
  if (y.numel() == 0) return y;
  const at::Tensor x = with_plain_strides(input, fmt);  // channel slices stay views
  const at::Tensor w = weight_taps(weight);  // no copy for the contiguous and tap-major layouts
  c10::optional<at::Tensor> b;
  if (bias.has_value() && bias->defined()) b = bias->contiguous();
  const DwParams p = make_params(x, y, weight, w, stride, padding, dilation);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const bool use32 = fits_int32({&x, &y});
  SHUFFLENET_DISPATCH_CUDA_TYPES(x.scalar_type(), "depthwise_conv2d_cuda", [&] {
    dispatch_index_type(use32, [&](auto index_tag) {
      launch_forward<scalar_t, decltype(index_tag)>(p, x, w, b, y, relu, cl);
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> depthwise_conv2d_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const c10::optional<at::Tensor>& relu_output, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, std::array<bool, 3> output_mask) {
  constexpr const char* op = "depthwise_conv2d_backward";
  const auto out_hw = check_depthwise_conv2d_args(input, weight, c10::nullopt, stride, padding, dilation);
  check_int_range(stride, "stride");
  check_int_range(padding, "padding");
  check_int_range(dilation, "dilation");
  const std::vector<int64_t> out_sizes = {input.size(0), input.size(1), out_hw[0], out_hw[1]};
  check_grad_output(grad_output, out_sizes, input, op);
  check_relu_output(relu_output, out_sizes, input, op);
  const bool has_relu = relu_output.has_value() && relu_output->defined();
  const c10::cuda::CUDAGuard guard(input.device());
  const at::MemoryFormat fmt = output_memory_format(input);
  // grad_output (and the ReLU mask) in the forward output's layout: a no-op
  // when autograd hands it over as the forward produced it.
  const at::Tensor g = grad_output.contiguous(fmt);
  const at::Tensor mask = has_relu ? relu_output->contiguous(fmt) : at::Tensor();
  const at::Tensor x = with_plain_strides(input, fmt);
  const at::Tensor w = weight_taps(weight);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;

  at::Tensor grad_input = output_mask[0] ? empty_in_format(input.sizes(), input, fmt) : at::empty({0}, input.options());
  at::Tensor grad_weight = output_mask[1] ? at::empty(weight.sizes(), weight.options()) : at::empty({0}, weight.options());
  at::Tensor grad_bias = output_mask[2] ? at::empty({weight.size(0)}, weight.options()) : at::empty({0}, weight.options());

  const DwParams p = make_params(x, g, weight, w, stride, padding, dilation);
  const bool any_positions = g.numel() > 0;
  if (!any_positions) {
    // N = 0: no position contributes; the weight and bias gradients are zero.
    if (output_mask[1]) grad_weight.zero_();
    if (output_mask[2]) grad_bias.zero_();
    return {grad_input, grad_weight, grad_bias};
  }
  const bool use32 = fits_int32({&x, &g, &grad_input});
  auto stream = at::cuda::getCurrentCUDAStream();

  SHUFFLENET_DISPATCH_CUDA_TYPES(x.scalar_type(), "depthwise_conv2d_backward_cuda", [&] {
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const scalar_t* mp = has_relu ? mask.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    dispatch_index_type(use32, [&](auto index_tag) {
      using index_t = decltype(index_tag);
      if (output_mask[0]) {
        const int64_t total = grad_input.numel();
        auto* gi = grad_input.mutable_data_ptr<scalar_t>();
        const auto launch = [&](auto cl_tag) {
          SHUFFLENET_LAUNCH(grid_for(total, kThreads), kThreads, 0, stream,
                            dw_bwd_input_kernel<scalar_t, index_t, decltype(cl_tag)::value>)
          (p, gp, mp, w.const_data_ptr<scalar_t>(), gi,
                                                                   grad_input.stride(0), grad_input.stride(1),
                                                                   grad_input.stride(2), grad_input.stride(3));
        };
        if (cl) {
          launch(std::true_type{});
        } else {
          launch(std::false_type{});
        }
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      if (output_mask[1] || output_mask[2]) {
        const int64_t positions = p.n * p.ho * p.wo;
        const int64_t cblocks = cl ? ceil_div(p.c, 32) : p.c;
        const int64_t min_per_split = cl ? 512 : 2048;  // positions per block worth a launch
        const int64_t splits = std::max<int64_t>(
            1, std::min<int64_t>({ceil_div(4 * int64_t{num_sms()}, cblocks), ceil_div(positions, min_per_split),
                                  max_grid_yz()}));
        const int64_t per_split = ceil_div(positions, splits);
        const int taps = p.kh * p.kw;
        at::Tensor ws = at::empty({splits, p.c, taps + 1}, x.options().dtype(at::kFloat));
        const bool small = p.kh <= 3 && p.kw <= 3;
        const dim3 grid(static_cast<unsigned>(cblocks), static_cast<unsigned>(splits));
        const dim3 block = cl ? dim3(32, kWgradClThreadsY) : dim3(kThreads);
        float* wsp = ws.mutable_data_ptr<float>();
        if (cl && small) {
          SHUFFLENET_LAUNCH(grid, block, 0, stream,
                            dw_wgrad_partial_kernel<scalar_t, index_t, true, 3, 3>)(p, xp, gp, mp, wsp, per_split);
        } else if (cl) {
          SHUFFLENET_LAUNCH(grid, block, 0, stream,
                            dw_wgrad_partial_kernel<scalar_t, index_t, true, kMaxDepthwiseKernel, kMaxDepthwiseKernel>)
          (p, xp, gp, mp, wsp, per_split);
        } else if (small) {
          SHUFFLENET_LAUNCH(grid, block, 0, stream,
                            dw_wgrad_partial_kernel<scalar_t, index_t, false, 3, 3>)(p, xp, gp, mp, wsp, per_split);
        } else {
          SHUFFLENET_LAUNCH(grid, block, 0, stream,
                            dw_wgrad_partial_kernel<scalar_t, index_t, false, kMaxDepthwiseKernel, kMaxDepthwiseKernel>)
          (p, xp, gp, mp, wsp, per_split);
        }
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        SHUFFLENET_LAUNCH(grid_for(p.c * (taps + 1), kThreads), kThreads, 0, stream, dw_wgrad_finish_kernel<scalar_t>)(
            wsp, splits, p.c, taps, output_mask[1] ? grad_weight.mutable_data_ptr<scalar_t>() : nullptr,
            output_mask[2] ? grad_bias.mutable_data_ptr<scalar_t>() : nullptr);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    });
  });
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace

SHUFFLENET_CUDA_LIBRARY_IMPL(m) {
  m.impl("depthwise_conv2d", &depthwise_conv2d_cuda);
  m.impl("depthwise_conv2d_backward", &depthwise_conv2d_backward_cuda);
}

}  // namespace shufflenet::cuda
