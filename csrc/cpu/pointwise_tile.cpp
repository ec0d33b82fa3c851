// Grouped 1x1 convolution with bias, ReLU and the channel shuffle fused, over
// channels_last pixel rows on CPU, on the register-blocked tiles of gemm_tile.h.
//
// The pixels are cut into one part per thread (equal to within 6 pixels), and each part into
// tiles of at most kTilePixels (so that batch 1 at 7x7 still fills two threads), spread
// over at::parallel_for.
// Per tile, every group's GEMM runs over the weight packed once per weight tensor
// ([groups][blocks][K][16], each group's output channels padded to whole blocks of 16;
// PackCache), the bias loaded into the accumulators and the ReLU applied in registers:
// * float32 without a shuffle: the accumulators go straight into the output (the last
//   block of a group with a masked store);
// * otherwise: into a per-thread tile buffer in conv-channel order, from which the output
//   row is written in output-channel order, 16 channels a vector gathered from the buffer
//   (output channel o reads conv channel shuffle_source_channel(o)), rounded once to the
//   output dtype. The buffer is a few KiB: it stays in L1.
// Half types: each tile's input rows are first converted to float32 in a per-thread
// buffer; products are accumulated in float32.
#include "cpu/pointwise_tile.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common/index.h"
#include "cpu/float_vec.h"
#include "cpu/gemm_tile.h"
#include "cpu/pack_cache.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SHUFFLENET_POINTWISE_TILE_ISAS 1  // AVX-512 and AVX2 versions of the kernel
#endif
#if defined(SHUFFLENET_POINTWISE_TILE_ISAS) && !defined(__clang__)
#define SHUFFLENET_POINTWISE_TILE_X86 1  // and their masked stores and gathers
#include <immintrin.h>
#endif

namespace shufflenet::cpu {
namespace {

using gemm::blocks_of;
using gemm::kBlock;
using gemm::PackedPointwise;
using gemm::padded;

// Pixels per tile: 8 MR=6 tiles deep, the tile's input rows (K <= 80 channels on
// ShuffleNet V1) and its buffer stay in L1.
constexpr int64_t kTilePixels = 48;
// At most this many pixels in all: one tile, its output channels split over the threads.
constexpr int64_t kSlicedPixels = 64;

// ---- packed weights ------------------------------------------------------------------

// [C_out, C_in/groups, 1, 1] -> float [groups][blocks][C_in/groups][16], each group's
// output channels zero padded to whole blocks of 16.
at::Tensor pack_grouped_weight(const at::Tensor& w, int64_t groups) {
  const int64_t c_out = w.size(0), k = w.size(1), cg = c_out / groups;
  const at::Tensor w3 = w.reshape({groups, cg, k}).to(at::kFloat);
  return at::constant_pad_nd(w3, {0, 0, 0, padded(cg) - cg})
      .view({groups, blocks_of(cg), kBlock, k})
      .permute({0, 1, 3, 2})
      .contiguous();
}

// [C_out] -> float [groups][padded(C_out/groups)], zero padded.
at::Tensor pack_grouped_bias(const at::Tensor& b, int64_t groups) {
  const int64_t cg = b.size(0) / groups;
  return at::constant_pad_nd(b.reshape({groups, cg}).to(at::kFloat), {0, padded(cg) - cg}).contiguous();
}

PackCache& pack_cache() {
  static PackCache cache;
  return cache;
}

// ---- the plan of one call ------------------------------------------------------------

template <typename scalar_t>
struct Plan {
  int64_t pixels, c_in, c_out, groups;
  int64_t k;       // input channels per group
  int64_t cg;      // output channels per group
  int64_t cg_p;    // padded(cg)
  int64_t blocks;  // blocks_of(cg)
  // The pixels are cut into parts of part_pixels (one per thread; the last may be
  // shorter), each part into tiles_per_part tiles of at most `tile` pixels.
  int64_t part_pixels, tiles_per_part, tile;
  // Direct float32 without groups: each task is one tile and one slice of slice_blocks
  // blocks of output channels (slices > 1 only for few pixels; see below).
  int64_t slices, slice_blocks;
  const scalar_t* x;
  int64_t x_pixel;  // input pixel stride (channels 1 apart)
  scalar_t* out;    // dense [pixels][c_out]
  const float* weight;
  const float* bias;
  const int32_t* source;  // [padded(c_out)]: tile-buffer column of each output channel
  bool relu;
  bool direct;  // float32 without a shuffle: tiles stored straight into the output
  int64_t a_floats, y_floats;  // per-thread scratch: converted input rows, tile buffer
};

// ---- vector helpers (inlined into each instruction set's version) ---------------------

template <typename V>
C10_ALWAYS_INLINE V act(V v, bool relu) {
  return relu ? gemm::vrelu(v) : v;
}

#ifdef SHUFFLENET_POINTWISE_TILE_X86
// Masked stores and gathers through GCC's x86 builtins rather than the intrinsics:
// an intrinsic is only inlined into a function built for its instruction set, and
// these helpers are templates shared by all versions; a builtin is checked where it
// ends up, in the AVX-512 or AVX2 tile kernel (the only callers of these paths).
typedef float Float8 __attribute__((vector_size(8 * sizeof(float))));
typedef int32_t Int8 __attribute__((vector_size(8 * sizeof(int32_t))));

C10_ALWAYS_INLINE void masked_store_avx512(float* p, FloatVec v, int64_t n) {
  __builtin_ia32_storeups512_mask(p, reinterpret_cast<__v16sf>(v), static_cast<__mmask16>((1u << n) - 1));
}

C10_ALWAYS_INLINE void masked_store_avx2(float* p, Float8 v, int64_t n) {
  const Int8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
  const Int8 mask = lane < static_cast<int32_t>(n);
  __builtin_ia32_maskstoreps256(reinterpret_cast<__v8sf*>(p), reinterpret_cast<__v8si>(mask),
                                reinterpret_cast<__v8sf>(v));
}

C10_ALWAYS_INLINE FloatVec gather_avx512(const float* row, const int32_t* idx) {
  const I32Vec i = load_bits<I32Vec>(idx);
  return reinterpret_cast<FloatVec>(__builtin_ia32_gathersiv16sf(reinterpret_cast<__v16sf>(FloatVec{}), row,
                                                                 reinterpret_cast<__v16si>(i),
                                                                 static_cast<__mmask16>(0xFFFF), 4));
}

C10_ALWAYS_INLINE Float8 gather_avx2(const float* row, const int32_t* idx) {
  const Int8 i = load_bits<Int8>(idx);
  const Int8 all = Int8{} - 1;
  return reinterpret_cast<Float8>(__builtin_ia32_gathersiv8sf(reinterpret_cast<__v8sf>(Float8{}), row,
                                                              reinterpret_cast<__v8si>(i),
                                                              reinterpret_cast<__v8sf>(all), 4));
}
#endif

// The first n lanes of v (n <= L) at p; writes only those.
template <typename V>
C10_ALWAYS_INLINE void vstore_first(float* p, V v, int64_t n) {
  constexpr int L = sizeof(V) / sizeof(float);
  if (n >= L) {
    gemm::vstore(p, v);
    return;
  }
  if (n <= 0) return;
#ifdef SHUFFLENET_POINTWISE_TILE_X86
  if constexpr (L == 16) {
    masked_store_avx512(p, v, n);
    return;
  } else if constexpr (L == 8) {
    masked_store_avx2(p, v, n);
    return;
  }
#endif
  float lanes[L];
  gemm::vstore(lanes, v);
  std::memcpy(p, lanes, static_cast<size_t>(n) * sizeof(float));
}

// Tile rows straight into float32 output rows: block `block` of the group at `dst`,
// channels past `cols` not written.
struct StoreOut {
  float* dst;
  int64_t ld;
  int64_t cols;
  bool relu;
  template <typename V, int P>
  C10_ALWAYS_INLINE void put(int64_t m, int64_t block, const V* parts) const {
    constexpr int L = kBlock / P;
    float* d = dst + m * ld + block * kBlock;
    const int64_t n = cols - block * kBlock;
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) vstore_first(d + p * L, act(parts[p], relu), n - p * L);
  }
};

// Tile rows into the float32 tile buffer (whole blocks).
struct StoreBuffer {
  float* dst;
  int64_t ld;
  bool relu;
  template <typename V, int P>
  C10_ALWAYS_INLINE void put(int64_t m, int64_t block, const V* parts) const {
    constexpr int L = kBlock / P;
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) gemm::vstore(dst + m * ld + block * kBlock + p * L, act(parts[p], relu));
  }
};

// row[idx[0..15]].
template <int L>
C10_ALWAYS_INLINE FloatVec gather16(const float* row, const int32_t* idx) {
#ifdef SHUFFLENET_POINTWISE_TILE_X86
  if constexpr (L == 16) {
    return gather_avx512(row, idx);
  } else if constexpr (L == 8) {
    const Float8 parts[2] = {gather_avx2(row, idx), gather_avx2(row, idx + 8)};
    FloatVec v;
    std::memcpy(&v, parts, sizeof v);
    return v;
  }
#endif
  float lanes[kBlock];
  for (int j = 0; j < kBlock; ++j) lanes[j] = row[idx[j]];
  return load_floats(lanes);
}

// The first n (>= 1) lanes of v at p in scalar_t, rounded once.
template <int L, typename scalar_t>
C10_ALWAYS_INLINE void store_out(scalar_t* p, FloatVec v, int64_t n) {
  if (n >= kBlock) {
    store_floats(p, v);
    return;
  }
  if constexpr (std::is_same_v<scalar_t, float>) {
    using V = typename gemm::Lanes<L>::V;
    V parts[kBlock / L];
    std::memcpy(parts, &v, sizeof v);
    for (int q = 0; q < kBlock / L; ++q) vstore_first(p + q * L, parts[q], n - q * L);
  } else {
    scalar_t lanes[kBlock];
    store_floats(lanes, v);
    std::memcpy(p, lanes, static_cast<size_t>(n) * sizeof(scalar_t));
  }
}

// m rows of the tile buffer (conv order) to output rows (output order) in scalar_t.
template <int L, typename scalar_t>
C10_ALWAYS_INLINE void write_rows(const float* y, int64_t y_ld, int64_t m, const int32_t* source, int64_t c_out,
                                  scalar_t* out) {
  for (int64_t i = 0; i < m; ++i) {
    const float* row = y + i * y_ld;
    scalar_t* o = out + i * c_out;
    for (int64_t c0 = 0; c0 < c_out; c0 += kBlock) store_out<L>(o + c0, gather16<L>(row, source + c0), c_out - c0);
  }
}

// m input rows of c channels to float32 rows of c.
template <typename scalar_t>
C10_ALWAYS_INLINE void convert_rows(const scalar_t* x, int64_t x_pixel, int64_t m, int64_t c, float* dst) {
  for (int64_t i = 0; i < m; ++i) {
    const scalar_t* s = x + i * x_pixel;
    float* d = dst + i * c;
    int64_t c0 = 0;
    for (; c0 + kBlock <= c; c0 += kBlock) store_floats(d + c0, load_floats(s + c0));
    for (; c0 < c; ++c0) d[c0] = static_cast<float>(s[c0]);
  }
}

// ---- the tile kernel (compiled once per instruction set) -------------------------------

template <int L, int MR, int NB, typename scalar_t>
C10_ALWAYS_INLINE void run_tiles(const Plan<scalar_t>& p, float* scratch, int64_t t0, int64_t t1) {
  float* a_buf = scratch;
  float* y_buf = scratch + p.a_floats;
  const int64_t y_ld = p.groups * p.cg_p;
  for (int64_t task = t0; task < t1; ++task) {
    const int64_t t = task / p.slices;
    const int64_t part = t / p.tiles_per_part;
    const int64_t first = part * p.part_pixels + (t % p.tiles_per_part) * p.tile;
    const int64_t m = std::min({p.tile, (part + 1) * p.part_pixels - first, p.pixels - first});
    if (m <= 0) continue;
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (p.slices > 1) {  // direct, one group: this task's slice of the output channels
        const int64_t blk0 = (task % p.slices) * p.slice_blocks;
        const int64_t nblk = std::min(p.slice_blocks, p.blocks - blk0);
        if (nblk <= 0) continue;
        const int64_t c0 = blk0 * kBlock, cols = std::min(p.cg - c0, nblk * kBlock);
        const PackedPointwise w{p.weight + blk0 * p.k * kBlock, p.bias + c0, p.k, cols, nblk};
        gemm::relu_gemm<L, MR, NB>(p.x + first * p.x_pixel, p.x_pixel, m, w,
                                   StoreOut{p.out + first * p.c_out + c0, p.c_out, cols, p.relu});
        continue;
      }
    }
    const float* a;
    int64_t a_pixel;
    if constexpr (std::is_same_v<scalar_t, float>) {
      a = p.x + first * p.x_pixel;
      a_pixel = p.x_pixel;
    } else {
      convert_rows(p.x + first * p.x_pixel, p.x_pixel, m, p.c_in, a_buf);
      a = a_buf;
      a_pixel = p.c_in;
    }
    for (int64_t g = 0; g < p.groups; ++g) {
      const PackedPointwise w{p.weight + g * p.blocks * p.k * kBlock, p.bias + g * p.cg_p, p.k, p.cg, p.blocks};
      if constexpr (std::is_same_v<scalar_t, float>) {
        if (p.direct) {
          gemm::relu_gemm<L, MR, NB>(a + g * p.k, a_pixel, m, w,
                                     StoreOut{p.out + first * p.c_out + g * p.cg, p.c_out, p.cg, p.relu});
          continue;
        }
      }
      gemm::relu_gemm<L, MR, NB>(a + g * p.k, a_pixel, m, w, StoreBuffer{y_buf + g * p.cg_p, y_ld, p.relu});
    }
    if (!p.direct) write_rows<L>(y_buf, y_ld, m, p.source, p.c_out, p.out + first * p.c_out);
  }
}

template <typename scalar_t>
using RunTilesFn = void (*)(const Plan<scalar_t>&, float*, int64_t, int64_t);

// Tile shapes as in v2_unit.cpp: MR pixels x NB blocks of accumulators fit the vector
// registers with room for the weight vectors and a broadcast.
template <typename scalar_t>
void run_tiles_baseline(const Plan<scalar_t>& p, float* scratch, int64_t t0, int64_t t1) {
#if defined(__x86_64__)
  run_tiles<4, 2, 1>(p, scratch, t0, t1);
#else
  run_tiles<4, 4, 1>(p, scratch, t0, t1);
#endif
}

#ifdef SHUFFLENET_POINTWISE_TILE_ISAS
template <typename scalar_t>
__attribute__((target("avx512f,avx512vl,avx2,fma,f16c"))) void run_tiles_avx512(const Plan<scalar_t>& p, float* scratch,
                                                                         int64_t t0, int64_t t1) {
  run_tiles<16, 6, 4>(p, scratch, t0, t1);
}

template <typename scalar_t>
__attribute__((target("avx2,fma,f16c"))) void run_tiles_avx2(const Plan<scalar_t>& p, float* scratch, int64_t t0,
                                                              int64_t t1) {
  run_tiles<8, 6, 1>(p, scratch, t0, t1);
}
#endif

template <typename scalar_t>
RunTilesFn<scalar_t> run_tiles_fn() {
#ifdef SHUFFLENET_POINTWISE_TILE_ISAS
  switch (gemm::cpu_isa()) {
    case gemm::Isa::kAvx512:
      return &run_tiles_avx512<scalar_t>;
    case gemm::Isa::kAvx2:
      return &run_tiles_avx2<scalar_t>;
    default:
      break;
  }
#endif
  return &run_tiles_baseline<scalar_t>;
}

// Per-thread scratch of at least `floats`, 64-byte aligned; reused across calls.
float* thread_scratch(int64_t floats) {
  thread_local std::vector<float> buffer;
  return gemm::aligned_floats(buffer, floats);
}

}  // namespace

bool pointwise_tiles_dtype(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16;
}

void pointwise_tiles_forward(const at::Tensor& x_rows, const at::Tensor& weight, const at::Tensor& bias,
                             int64_t groups, int64_t shuffle_groups, bool relu, at::Tensor& out_rows) {
  const int64_t pixels = x_rows.size(0), c_in = x_rows.size(1), c_out = weight.size(0);
  TORCH_CHECK(x_rows.stride(1) == 1 && out_rows.is_contiguous() && pointwise_tiles_dtype(x_rows.scalar_type()),
              "pointwise_tiles_forward: x_rows needs channels 1 apart, out_rows dense rows, a float dtype");
  if (pixels == 0) return;
  const int64_t cg = c_out / groups;
  PackCache& cache = pack_cache();
  // Kinds: the packing depends on the group count (and on nothing else but the values).
  const at::Tensor wp = cache.get(weight, static_cast<int>(2 * groups), [&] { return pack_grouped_weight(weight, groups); });
  at::Tensor bp;
  const float* bias_ptr;
  if (bias.defined()) {
    bp = cache.get(bias, static_cast<int>(2 * groups + 1), [&] { return pack_grouped_bias(bias, groups); });
    bias_ptr = bp.const_data_ptr<float>();
  } else {
    thread_local std::vector<float> zeros;
    const size_t need = static_cast<size_t>(groups * padded(cg));
    if (zeros.size() < need) zeros.assign(need, 0.f);
    bias_ptr = zeros.data();
  }

  const int64_t threads = std::max(1, at::get_num_threads());
  // Few pixels and many output channels without groups (the last 1x1 conv of a network
  // at batch 1: 49 pixels, 464 -> 1024): the GEMM is bound by reading the weights, so
  // the threads split the output channels (each reads only its slice) rather than the
  // pixels (each would read all of them).
  const bool direct = x_rows.scalar_type() == at::kFloat && shuffle_groups == 1;
  const int64_t slices =
      direct && groups == 1 && threads > 1 && pixels <= kSlicedPixels && blocks_of(cg) >= 2 * threads ? threads : 1;
  // One part of the pixels per thread, cut at multiples of MR (6) pixels so that the
  // parts differ by at most one MR tile: at::parallel_for hands each thread an equal
  // run of tasks, and whole tiles of kTilePixels would leave the threads unequal (392
  // pixels in 48-pixel tiles: 240 against 152 on two threads). Each part is walked in
  // tiles of at most kTilePixels, MR dividing every tile but a part's last.
  const int64_t mr_rows = (pixels + 5) / 6;
  const int64_t parts = slices > 1 ? 1 : std::min(threads, mr_rows);
  const int64_t part_pixels = slices > 1 ? pixels : (mr_rows + parts - 1) / parts * 6;
  const int64_t tiles_per_part = slices > 1 ? 1 : (part_pixels + kTilePixels - 1) / kTilePixels;
  const int64_t tile = slices > 1 ? pixels : (part_pixels / 6 + tiles_per_part - 1) / tiles_per_part * 6;
  const int64_t tiles = parts * tiles_per_part;

  // Tile-buffer column of each output channel (padded to whole vectors with column 0).
  thread_local std::vector<int32_t> source;
  source.assign(static_cast<size_t>(padded(c_out)), 0);
  for (int64_t o = 0; o < c_out; ++o) {
    const int64_t c = shuffle_source_channel(o, c_out, shuffle_groups);
    source[o] = static_cast<int32_t>(c / cg * padded(cg) + c % cg);
  }

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_rows.scalar_type(), "pointwise_tiles", [&] {
    if constexpr (!std::is_same_v<scalar_t, double>) {
      Plan<scalar_t> p{};
      p.pixels = pixels;
      p.c_in = c_in;
      p.c_out = c_out;
      p.groups = groups;
      p.k = c_in / groups;
      p.cg = cg;
      p.cg_p = padded(cg);
      p.blocks = blocks_of(cg);
      p.part_pixels = part_pixels;
      p.tiles_per_part = tiles_per_part;
      p.tile = tile;
      p.x = x_rows.const_data_ptr<scalar_t>();
      p.x_pixel = x_rows.stride(0);
      p.out = out_rows.mutable_data_ptr<scalar_t>();
      p.weight = wp.const_data_ptr<float>();
      p.bias = bias_ptr;
      p.source = source.data();
      p.relu = relu;
      p.direct = direct;
      p.slices = slices;
      p.slice_blocks = (p.blocks + slices - 1) / slices;
      const auto round = [](int64_t v) { return (v + kBlock - 1) / kBlock * kBlock; };
      p.a_floats = std::is_same_v<scalar_t, float> ? 0 : round(tile * c_in);
      p.y_floats = p.direct ? 0 : round(tile * groups * p.cg_p);
      const RunTilesFn<scalar_t> run = run_tiles_fn<scalar_t>();
      at::parallel_for(0, tiles * slices, 1, [&](int64_t t0, int64_t t1) {
        run(p, thread_scratch(p.a_floats + p.y_floats), t0, t1);
      });
    }
  });
}

}  // namespace shufflenet::cpu
