// Channel-gather family on CUDA: channel_shuffle, concat_shuffle and
// concat_shuffle_backward. All three are "concatenate up to two sources along
// channels, permute the channels with a shuffle, split the result into up to two
// destinations along channels", done in one pass over the data.
//
// Planar destinations (NCHW-like): every output channel plane is a contiguous
// run copied from one source plane, large planes split over several blocks.
// Channels-last destinations: per pixel the C values are a permutation of C
// contiguous source values; a tile of pixels goes through shared memory so that
// the global reads (whole source pixel rows) and writes (whole output pixel rows)
// are both coalesced.
//
// Both move vectors of 16, 8 or 4 bytes: the widest that every operand's
// extents, strides and pointer allow (widest_vec). For ShuffleNet V2 (dense
// tensors and x.chunk(2, 1) halves alike):
//   channels-last, by channel count per operand:
//     fp16/bf16: 24, 48, 96, 192, 232, 464, 488: 16 bytes; 116, 244: 8 bytes;
//                58, 122: 4 bytes (a pixel pitch of 116 or 244 bytes leaves
//                every other pixel only 4-byte aligned, so no wider access fits);
//     fp32:      58, 122: 8 bytes; every other V2 count: 16 bytes.
//   planar, by plane size: 112x112, 56x56 and 28x28 planes: 16 bytes in every
//   dtype; 14x14: 8 bytes for fp16/bf16, 16 for fp32; 7x7 (an odd plane): one
//   element per access.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/checks.h"
#include "common/index.h"
#include "cuda/cuda_utils.cuh"

namespace shufflenet::cuda {
namespace {

struct GatherOperand {
  const void* src;  // used for sources
  void* dst;        // used for destinations
  int64_t channels;
  int64_t stride_n, stride_c, stride_s;
};

// Up to two sources concatenated along channels (source 0 holds concatenated
// channels [0, src_split)) and up to two destinations likewise (dst_split).
// Concatenated output channel o reads concatenated source channel
// shuffle_source_channel(o, channels, map_groups).
struct GatherParams {
  GatherOperand src[2];
  GatherOperand dst[2];
  int64_t src_split, dst_split;
  int64_t n, s, channels, map_groups;
};

template <typename index_t>
__device__ __forceinline__ ChannelSource gather_source(const GatherParams& p, index_t o) {
  return concat_shuffle_source(o, p.src_split, p.channels, p.map_groups);
}

// ---- planar destinations ----------------------------------------------------
// Every plane is cut into `chunks` chunks of `chunk_vecs` vectors (VEC elements
// each); blockDim = (TX, TY): each of the TY thread rows of a block moves one
// (plane, chunk) item with TX threads along it, so the channel map is computed
// once per chunk (not per element), small planes (7x7 in ShuffleNet's last
// stage) do not leave most of a block idle, and a few large planes (e.g.
// [1, 24, 112, 112]) are spread over enough blocks to fill the device.
template <typename scalar_t, typename index_t, int VEC>
__global__ void gather_planes_kernel(const GatherParams p, int chunks, int64_t chunk_vecs) {
  const index_t items = static_cast<index_t>(p.n * p.channels) * static_cast<index_t>(chunks);
  const index_t s_size = static_cast<index_t>(p.s);
  const index_t vecs = s_size / VEC;
  const index_t channels = static_cast<index_t>(p.channels);
  const index_t nchunks = static_cast<index_t>(chunks);
  for (index_t item = static_cast<index_t>(blockIdx.x) * blockDim.y + threadIdx.y; item < items;
       item += static_cast<index_t>(gridDim.x) * blockDim.y) {
    const index_t plane = item / nchunks;
    const index_t chunk = item - plane * nchunks;
    const index_t begin = chunk * static_cast<index_t>(chunk_vecs);
    const index_t end_raw = begin + static_cast<index_t>(chunk_vecs);
    const index_t end = end_raw < vecs ? end_raw : vecs;
    const index_t n = plane / channels;
    const index_t o = plane - n * channels;
    const ChannelSource cs = gather_source(p, o);
    const GatherOperand& so = p.src[cs.operand];
    const int d = o < p.dst_split ? 0 : 1;
    const GatherOperand& dop = p.dst[d];
    const index_t dch = d == 0 ? o : o - static_cast<index_t>(p.dst_split);
    const scalar_t* sp = static_cast<const scalar_t*>(so.src) + n * static_cast<index_t>(so.stride_n) +
                         static_cast<index_t>(cs.channel) * static_cast<index_t>(so.stride_c);
    scalar_t* dp = static_cast<scalar_t*>(dop.dst) + n * static_cast<index_t>(dop.stride_n) +
                   dch * static_cast<index_t>(dop.stride_c);
    if constexpr (VEC > 1) {
      // Host guarantees: source plane contiguous, both planes aligned for VEC.
      for (index_t v = begin + threadIdx.x; v < end; v += blockDim.x) {
        store_pack<scalar_t, VEC>(dp + v * VEC, load_pack<scalar_t, VEC>(sp + v * VEC));
      }
    } else {
      const index_t ss = static_cast<index_t>(so.stride_s);
      for (index_t v = begin + threadIdx.x; v < end; v += blockDim.x) dp[v] = sp[v * ss];
    }
  }
}

// ---- channels-last destinations --------------------------------------------
// One block moves `tile_pixels` consecutive pixels (flattened over n and s).
// Shared memory: the channel map (int32 per output channel), per-pixel base
// offsets of every operand, then the tile [tile_pixels][row] of source values.
// NOTE: the gather out of the tile reads shared memory with a stride of
// C/groups between neighbouring lanes, which costs bank conflicts of up to
// `groups` ways; shared-memory bandwidth is far above DRAM bandwidth, so the
// kernel stays memory-bound for ShuffleNet's groups (2 to 8). Untested on a GPU
// here: target is DRAM bandwidth for C >= 64.
template <typename scalar_t, typename index_t, int VEC>
__global__ void gather_pixels_kernel(const GatherParams p, int tile_pixels, int row) {
  SHUFFLENET_DYNAMIC_SHARED(unsigned char, smem_raw);
  const int channels = static_cast<int>(p.channels);
  int* map = reinterpret_cast<int*>(smem_raw);
  index_t* base = reinterpret_cast<index_t*>(smem_raw + ceil_div(channels * sizeof(int), 16) * 16);
  // base[k * tile_pixels + pp]: k = 0,1 sources, 2,3 destinations.
  scalar_t* tile = reinterpret_cast<scalar_t*>(
      reinterpret_cast<unsigned char*>(base) + ceil_div(4 * tile_pixels * sizeof(index_t), 16) * 16);

  for (int o = threadIdx.x; o < channels; o += blockDim.x) {
    map[o] = static_cast<int>(shuffle_source_channel(o, p.channels, p.map_groups));
  }
  const index_t pixels = static_cast<index_t>(p.n * p.s);
  const index_t s_size = static_cast<index_t>(p.s);
  const int src_ch[2] = {static_cast<int>(p.src[0].channels), static_cast<int>(p.src[1].channels)};
  const int dst_ch[2] = {static_cast<int>(p.dst[0].channels), static_cast<int>(p.dst[1].channels)};
  const int src_off[2] = {0, static_cast<int>(p.src_split)};
  const int dst_off[2] = {0, static_cast<int>(p.dst_split)};

  for (index_t first = static_cast<index_t>(blockIdx.x) * tile_pixels; first < pixels;
       first += static_cast<index_t>(gridDim.x) * tile_pixels) {
    const int count = static_cast<int>(pixels - first < tile_pixels ? pixels - first : tile_pixels);
    for (int pp = threadIdx.x; pp < count; pp += blockDim.x) {
      const index_t q = first + pp;
      const index_t n = q / s_size;
      const index_t s = q - n * s_size;
      for (int k = 0; k < 2; ++k) {
        base[k * tile_pixels + pp] =
            n * static_cast<index_t>(p.src[k].stride_n) + s * static_cast<index_t>(p.src[k].stride_s);
        base[(2 + k) * tile_pixels + pp] =
            n * static_cast<index_t>(p.dst[k].stride_n) + s * static_cast<index_t>(p.dst[k].stride_s);
      }
    }
    __syncthreads();
    // Load whole source pixel rows into the tile.
    for (int k = 0; k < 2; ++k) {
      if (src_ch[k] == 0) continue;
      const scalar_t* sp = static_cast<const scalar_t*>(p.src[k].src);
      const int per_pixel = src_ch[k] / VEC;
      const int total = count * per_pixel;
      const index_t sc = static_cast<index_t>(p.src[k].stride_c);
      for (int i = threadIdx.x; i < total; i += blockDim.x) {
        const int pp = i / per_pixel;
        const int cv = (i - pp * per_pixel) * VEC;
        const index_t off = base[k * tile_pixels + pp];
        scalar_t* tp = tile + pp * row + src_off[k] + cv;
        if constexpr (VEC > 1) {
          store_pack<scalar_t, VEC>(tp, load_pack<scalar_t, VEC>(sp + off + cv));
        } else {
          *tp = sp[off + static_cast<index_t>(cv) * sc];
        }
      }
    }
    __syncthreads();
    // Write whole destination pixel rows, gathering through the channel map.
    for (int k = 0; k < 2; ++k) {
      if (dst_ch[k] == 0) continue;
      scalar_t* dp = static_cast<scalar_t*>(p.dst[k].dst);
      const int per_pixel = dst_ch[k] / VEC;
      const int total = count * per_pixel;
      for (int i = threadIdx.x; i < total; i += blockDim.x) {
        const int pp = i / per_pixel;
        const int cv = (i - pp * per_pixel) * VEC;
        const scalar_t* tp = tile + pp * row;
        Pack<scalar_t, VEC> v;
#pragma unroll
        for (int e = 0; e < VEC; ++e) v.v[e] = tp[map[dst_off[k] + cv + e]];
        store_pack<scalar_t, VEC>(dp + base[(2 + k) * tile_pixels + pp] + cv, v);
      }
    }
    __syncthreads();  // the tile and base offsets are reused by the next pixels
  }
}

// ---- fallback: one thread per element, any strides --------------------------
// Used when a channels-last tile does not fit in shared memory (C in the tens of
// thousands) or a destination is neither planar nor channels-last.
template <typename scalar_t, typename index_t>
__global__ void gather_elements_kernel(const GatherParams p) {
  const index_t total = static_cast<index_t>(p.n * p.channels * p.s);
  const index_t s_size = static_cast<index_t>(p.s);
  const index_t channels = static_cast<index_t>(p.channels);
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t s = i % s_size;
    const index_t o = (i / s_size) % channels;
    const index_t n = i / (s_size * channels);
    const ChannelSource cs = gather_source(p, o);
    const GatherOperand& so = p.src[cs.operand];
    const int d = o < p.dst_split ? 0 : 1;
    const GatherOperand& dop = p.dst[d];
    const index_t dch = d == 0 ? o : o - static_cast<index_t>(p.dst_split);
    const scalar_t v = static_cast<const scalar_t*>(so.src)[n * so.stride_n + cs.channel * so.stride_c + s * so.stride_s];
    static_cast<scalar_t*>(dop.dst)[n * dop.stride_n + dch * dop.stride_c + s * dop.stride_s] = v;
  }
}

GatherOperand make_operand(const ChannelView& v, const void* src, void* dst) {
  return GatherOperand{src, dst, v.c, v.stride_n, v.stride_c, v.stride_s};
}

// The widest vector (elements of T: 16, 8 or 4 bytes, else 1) one operand allows.
// Planar: the plane of s elements is the vector run (stride_s 1; s, stride_c and
// stride_n multiples); channels-last: the pixel row is (stride_c 1; channels,
// stride_s and stride_n multiples). An unused operand allows any width.
template <typename T>
int operand_vec(const GatherOperand& o, const void* ptr, int64_t s, bool planar) {
  if (o.channels == 0) return vec16<T>();
  if (planar) return o.stride_s == 1 ? widest_vec<T>({s, o.stride_c, o.stride_n}, {ptr}) : 1;
  return o.stride_c == 1 ? widest_vec<T>({o.channels, o.stride_s, o.stride_n}, {ptr}) : 1;
}

// The widest vector all operands allow (the widths are nested powers of two).
template <typename T>
int gather_vec(const GatherParams& p, bool planar) {
  int vec = vec16<T>();
  for (int k = 0; k < 2; ++k) {
    vec = std::min(vec, operand_vec<T>(p.src[k], p.src[k].src, p.s, planar));
    vec = std::min(vec, operand_vec<T>(p.dst[k], p.dst[k].dst, p.s, planar));
  }
  return vec;
}

// dsts are dense and share one layout; sources are read in place through their
// channel views (a channel slice of a larger tensor is not copied).
void run_gather(const std::vector<at::Tensor>& sources, const std::vector<at::Tensor>& dsts, int64_t channels,
                int64_t map_groups) {
  const at::Tensor& d0 = dsts[0];
  const int64_t n = d0.size(0);
  int64_t s = 1;
  for (int64_t d = 2; d < d0.dim(); ++d) s *= d0.size(d);
  if (n == 0 || s == 0 || channels == 0) return;

  GatherParams p{};
  std::vector<std::pair<at::Tensor, ChannelView>> views;  // keeps copies of exotic sources alive
  for (size_t k = 0; k < 2; ++k) {
    if (k < sources.size()) {
      views.push_back(as_channel_view(sources[k]));
      p.src[k] = make_operand(views.back().second, views.back().first.const_data_ptr(), nullptr);
    } else {
      p.src[k] = GatherOperand{p.src[0].src, nullptr, 0, 0, 0, 0};
    }
  }
  std::vector<ChannelView> dviews;
  for (size_t k = 0; k < 2; ++k) {
    if (k < dsts.size()) {
      const ChannelView v = as_channel_view(dsts[k]).second;  // dense: never a copy
      p.dst[k] = make_operand(v, nullptr, dsts[k].mutable_data_ptr());
      dviews.push_back(v);
    } else {
      p.dst[k] = GatherOperand{nullptr, p.dst[0].dst, 0, 0, 0, 0};
    }
  }
  p.src_split = p.src[0].channels;
  p.dst_split = p.dst[0].channels;
  p.n = n;
  p.s = s;
  p.channels = channels;
  p.map_groups = map_groups;

  bool use32 = true;
  for (const auto& v : views) use32 = use32 && fits_int32({&v.first});
  for (const auto& t : dsts) use32 = use32 && fits_int32({&t});

  bool planar = true, pixel_rows = true;
  for (const auto& v : dviews) {
    planar = planar && (v.stride_s == 1 || s == 1);
    pixel_rows = pixel_rows && v.stride_c == 1;
  }
  // A single pixel per sample (H = W = 1) is planar and channels-last at once;
  // the planar kernel handles it.
  if (s == 1) pixel_rows = false;

  auto stream = at::cuda::getCurrentCUDAStream();
  SHUFFLENET_DISPATCH_CUDA_TYPES(d0.scalar_type(), "shufflenet_gather_cuda", [&] {
    const int64_t elem = sizeof(scalar_t);
    dispatch_index_type(use32, [&](auto index_tag) {
      using index_t = decltype(index_tag);
      if (planar) {
        const int vec = gather_vec<scalar_t>(p, true);
        const int64_t run = s / vec;
        int tx = 32;
        while (tx < run && tx < kThreads) tx *= 2;
        const dim3 block(tx, kThreads / tx);
        // Chunks per plane: enough (plane, chunk) items for about two blocks per
        // SM, but no chunk shorter than one pass of a row's TX threads.
        const int64_t planes = n * channels;
        const int64_t want_items = 2 * int64_t{num_sms()} * block.y;
        const int64_t chunks = std::clamp<int64_t>(ceil_div(want_items, planes), 1, ceil_div(run, tx));
        const int64_t chunk_vecs = ceil_div(run, chunks);
        const int64_t grid = std::min<int64_t>(ceil_div(planes * chunks, block.y), max_grid_blocks());
        dispatch_vec<scalar_t>(vec, [&](auto vec_tag) {
          constexpr int V = decltype(vec_tag)::value;
          SHUFFLENET_LAUNCH(grid, block, 0, stream, gather_planes_kernel<scalar_t, index_t, V>)
          (p, static_cast<int>(chunks), chunk_vecs);
        });
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return;
      }
      if (pixel_rows) {
        const int vec = gather_vec<scalar_t>(p, false);
        const int64_t row = ceil_div(channels, vec) * vec;
        const int64_t fixed = ceil_div(channels * 4, 16) * 16;
        // NOTE: ~32 KB of tile per block keeps several blocks resident per SM
        // (latency hiding for a pure copy) within the default 48 KB limit.
        const int64_t budget = 48 * 1024 - fixed;
        int64_t tile_pixels = std::min<int64_t>(64, (32 * 1024) / (row * elem));
        while (tile_pixels > 1 && ceil_div(4 * tile_pixels * sizeof(index_t), 16) * 16 + tile_pixels * row * elem > budget)
          --tile_pixels;
        tile_pixels = std::max<int64_t>(tile_pixels, 1);
        const int64_t smem = fixed + ceil_div(4 * tile_pixels * sizeof(index_t), 16) * 16 + tile_pixels * row * elem;
        if (smem <= 48 * 1024) {
          const int64_t grid =
              std::min<int64_t>(ceil_div(n * s, tile_pixels), std::max<int64_t>(max_grid_blocks() / 2, 1));
          dispatch_vec<scalar_t>(vec, [&](auto vec_tag) {
            constexpr int V = decltype(vec_tag)::value;
            SHUFFLENET_LAUNCH(grid, kThreads, smem, stream, gather_pixels_kernel<scalar_t, index_t, V>)
            (p, static_cast<int>(tile_pixels), static_cast<int>(row));
          });
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          return;
        }
      }
      SHUFFLENET_LAUNCH(grid_for(n * channels * s, kThreads), kThreads, 0, stream,
                        gather_elements_kernel<scalar_t, index_t>)(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

at::Tensor concat_shuffle_cuda(const at::Tensor& a, const at::Tensor& b, int64_t groups) {
  check_concat_shuffle_args(a, b, groups);
  const c10::cuda::CUDAGuard guard(a.device());
  const int64_t channels = a.size(1) + b.size(1);
  auto sizes = a.sizes().vec();
  sizes[1] = channels;
  at::Tensor out = empty_in_format(sizes, a, output_memory_format(a));
  run_gather({a, b}, {out}, channels, groups);
  return out;
}

std::tuple<at::Tensor, at::Tensor> concat_shuffle_backward_cuda(
    const at::Tensor& grad_output, int64_t groups, int64_t channels_a) {
  check_concat_shuffle_backward_args(grad_output, groups, channels_a);
  const int64_t channels = grad_output.size(1);
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const at::MemoryFormat fmt = output_memory_format(grad_output);
  auto sizes_a = grad_output.sizes().vec();
  auto sizes_b = grad_output.sizes().vec();
  sizes_a[1] = channels_a;
  sizes_b[1] = channels - channels_a;
  at::Tensor grad_a = empty_in_format(sizes_a, grad_output, fmt);
  at::Tensor grad_b = empty_in_format(sizes_b, grad_output, fmt);
  // The un-shuffle of `groups` is the shuffle with channels/groups groups:
  // concatenated channel j reads grad_output channel shuffle_dest_channel(j).
  // Both gradients come out of one pass over grad_output.
  run_gather({grad_output}, {grad_a, grad_b}, channels, channels / groups);
  return {grad_a, grad_b};
}

}  // namespace

at::Tensor channel_shuffle_cuda(const at::Tensor& input, int64_t groups) {
  check_channel_shuffle_args(input, groups);
  const c10::cuda::CUDAGuard guard(input.device());
  at::Tensor out = empty_in_format(input.sizes(), input, output_memory_format(input));
  run_gather({input}, {out}, input.size(1), groups);
  return out;
}

SHUFFLENET_CUDA_LIBRARY_IMPL(m) {
  m.impl("channel_shuffle", &channel_shuffle_cuda);
  m.impl("concat_shuffle", &concat_shuffle_cuda);
  m.impl("concat_shuffle_backward", &concat_shuffle_backward_cuda);
}

}  // namespace shufflenet::cuda
