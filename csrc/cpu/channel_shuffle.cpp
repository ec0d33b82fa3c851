// Channel-gather family on CPU: channel_shuffle, concat_shuffle and
// concat_shuffle_backward are all "output channel c copies channel table[c] of
// one of the sources", one pass over the data.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/EmptyTensor.h>
#include <ATen/Parallel.h>
#include <c10/util/SmallVector.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "common/index.h"
#include "cpu/cpu_kernels.h"
#include "cpu/output_cache.h"

namespace shufflenet::cpu {
namespace {

// Elements moved per parallel task; small planes are batched into one task.
constexpr int64_t kGatherGrain = 1 << 15;

template <typename scalar_t>
struct GatherSource {
  const scalar_t* data;
  ChannelView view;
};

// Channels-last output: per pixel, a permutation of C contiguous values. The
// permutations of this family come in two shapes that vectorise once their
// step is a compile-time constant:
//   interleave:   out[b*A + a] = row_a[b]   (A rows of B contiguous channels)
//   strided runs: out[r*L + j] = run_r[j*K] (C/L runs read with step K)
// channel_shuffle and concat_shuffle are interleaves (A = groups), their
// inverses are strided runs (K = groups); anything else goes through a table.
enum class PixelPlanKind { kTable, kInterleave, kStridedRuns };

struct PixelPlan {
  PixelPlanKind kind = PixelPlanKind::kTable;
  int64_t ways = 0;  // A (interleave) or K (strided runs)
  int64_t len = 0;   // B (interleave) or L (strided runs)
  std::vector<ChannelSource> starts;  // first source channel of each row / run
};

bool same_source(const ChannelSource& x, const ChannelSource& first, int64_t offset) {
  return x.operand == first.operand && x.channel == first.channel + offset;
}

PixelPlan plan_interleave(const std::vector<ChannelSource>& table) {
  const int64_t c_size = static_cast<int64_t>(table.size());
  int64_t ways = 1;  // the first channel that continues row 0
  while (ways < c_size && !same_source(table[ways], table[0], 1)) ++ways;
  if (ways < 2 || ways >= c_size || c_size % ways != 0) return {};
  for (int64_t c = 0; c < c_size; ++c) {
    if (!same_source(table[c], table[c % ways], c / ways)) return {};
  }
  return {PixelPlanKind::kInterleave, ways, c_size / ways, {table.begin(), table.begin() + ways}};
}

PixelPlan plan_strided_runs(const std::vector<ChannelSource>& table) {
  const int64_t c_size = static_cast<int64_t>(table.size());
  if (c_size < 2 || table[1].operand != table[0].operand) return {};
  const int64_t step = table[1].channel - table[0].channel;
  if (step < 1) return {};
  int64_t len = 2;
  while (len < c_size && same_source(table[len], table[0], len * step)) ++len;
  if (c_size % len != 0) return {};
  PixelPlan plan{PixelPlanKind::kStridedRuns, step, len, {}};
  for (int64_t c = 0; c < c_size; ++c) {
    if (!same_source(table[c], table[c - c % len], (c % len) * step)) return {};
    if (c % len == 0) plan.starts.push_back(table[c]);
  }
  return plan;
}

// Steps up to this many elements stay in the vectorised kernels.
constexpr int64_t kMaxPlanStep = 16;

// The plan of `table` for sources whose channels are contiguous in a pixel.
PixelPlan plan_for_table(const std::vector<ChannelSource>& table) {
  // Eight rows of at least eight values: 8x8 transposes in registers (32-bit
  // values), ahead of the strided runs the same permutation also is.
  PixelPlan rows = plan_interleave(table);
  if (rows.kind == PixelPlanKind::kInterleave && rows.ways == 8 && rows.len >= 8) return rows;
  PixelPlan runs = plan_strided_runs(table);
  if (runs.kind != PixelPlanKind::kTable && runs.ways <= kMaxPlanStep) return runs;
  if (rows.kind != PixelPlanKind::kTable && rows.ways <= kMaxPlanStep) return rows;
  return runs.kind != PixelPlanKind::kTable ? runs : rows;
}

template <typename T>
bool unit_channel_stride(const std::vector<GatherSource<T>>& srcs) {
  return std::all_of(srcs.begin(), srcs.end(), [](const GatherSource<T>& s) { return s.view.stride_c == 1; });
}

// A channel table with its pixel plan (for sources of unit channel stride).
struct GatherTable {
  std::vector<ChannelSource> table;
  PixelPlan plan;
};

// The table of output channel -> source for (kind, channels, groups, channels_a),
// built by source(c) for each c, remembered per thread for the last few shapes:
// building one costs integer divisions per channel (and planning a pass over
// it), as much as the copy itself for the small tensors of batch-1 inference.
enum class TableKind { kShuffle, kConcatShuffle, kConcatShuffleBackward };

template <typename F>
const GatherTable& cached_table(TableKind kind, int64_t channels, int64_t groups, int64_t channels_a, const F& source) {
  using Key = std::array<int64_t, 4>;
  constexpr size_t kEntries = 16;
  thread_local std::array<std::pair<Key, std::unique_ptr<GatherTable>>, kEntries> cache;
  thread_local size_t next = 0;
  const Key key{static_cast<int64_t>(kind), channels, groups, channels_a};
  for (const auto& entry : cache) {
    if (entry.second && entry.first == key) return *entry.second;
  }
  auto value = std::make_unique<GatherTable>();
  value->table.resize(channels);
  for (int64_t c = 0; c < channels; ++c) value->table[c] = source(c);
  value->plan = plan_for_table(value->table);
  auto& slot = cache[next];
  next = (next + 1) % kEntries;
  slot = {key, std::move(value)};
  return *slot.second;
}

// Unsigned integer of twice T's width, and a pointer target that may alias
// anything and sit at any T-aligned address.
template <typename T>
struct WiderUnsigned;
template <>
struct WiderUnsigned<uint16_t> {
  using type = uint32_t;
};
template <>
struct WiderUnsigned<uint32_t> {
  using type = uint64_t;
};
template <typename W>
using UnalignedAlias __attribute__((may_alias, aligned(2))) = W;

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the paired moves below assume little-endian order");

// One row of pixels of one image: `pixels` pixels; row / run r reads from
// src[r], moving src_stride[r] per pixel, and (strided runs) writes to dst[r],
// moving dst_stride[r] per pixel. Interleaves and tables write to dst[0] alone.
template <typename T>
struct PixelSpan {
  T* const* dst;
  const int64_t* dst_stride;
  const T* const* src;
  const int64_t* src_stride;
  int64_t pixels;
};

// Eight rows of eight 32-bit values, transposed in registers: out[j][a] =
// row[a][j]. Three rounds of two-source shuffles (unpack, pair, half swap: the
// AVX 8x8 transpose, 24 shuffles per 64 values), written with the vector
// extension so that every multiversioned clone lowers them to its own
// instructions.
typedef uint32_t U32x8 __attribute__((vector_size(8 * sizeof(uint32_t))));

C10_ALWAYS_INLINE void transpose_8x8(const U32x8 (&r)[8], U32x8 (&o)[8]) {
  U32x8 t[8], u[8];
  for (int a = 0; a < 8; a += 2) {
    t[a] = __builtin_shufflevector(r[a], r[a + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[a + 1] = __builtin_shufflevector(r[a], r[a + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int a = 0; a < 8; a += 4) {
    for (int h = 0; h < 2; ++h) {
      u[a + 2 * h] = __builtin_shufflevector(t[a + h], t[a + h + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      u[a + 2 * h + 1] = __builtin_shufflevector(t[a + h], t[a + h + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  }
  for (int j = 0; j < 4; ++j) {
    o[j] = __builtin_shufflevector(u[j], u[j + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    o[j + 4] = __builtin_shufflevector(u[j], u[j + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// Interleave of 8 rows of len >= 8 32-bit values per pixel: blocks of 8 columns
// go through transpose_8x8, the last block overlapping the one before when len
// is not a multiple of 8 (it rewrites the same values).
SHUFFLENET_CPU_MULTIVERSION void interleave8_u32_pixels(const PixelSpan<uint32_t>& span, int64_t len) {
  for (int64_t p = 0; p < span.pixels; ++p) {
    uint32_t* __restrict__ d = span.dst[0] + p * span.dst_stride[0];
    const uint32_t* row[8];
    for (int a = 0; a < 8; ++a) row[a] = span.src[a] + p * span.src_stride[a];
    for (int64_t b = 0; b < len; b += 8) {
      const int64_t c0 = std::min(b, len - 8);
      U32x8 r[8], o[8];
      for (int a = 0; a < 8; ++a) std::memcpy(&r[a], row[a] + c0, sizeof(U32x8));
      transpose_8x8(r, o);
      for (int j = 0; j < 8; ++j) std::memcpy(d + (c0 + j) * 8, &o[j], sizeof(U32x8));
    }
  }
}

// Interleave of 2 rows of len >= 8 32-bit values per pixel: per 8 columns, two
// two-source shuffles (one vpermt2d each with AVX-512, unpack and lane swap
// with AVX2) rather than widening moves, shifts and ors; the last block
// overlaps the one before.
SHUFFLENET_CPU_MULTIVERSION void interleave2_u32_pixels(const PixelSpan<uint32_t>& span, int64_t len) {
  for (int64_t p = 0; p < span.pixels; ++p) {
    uint32_t* __restrict__ d = span.dst[0] + p * span.dst_stride[0];
    const uint32_t* lo = span.src[0] + p * span.src_stride[0];
    const uint32_t* hi = span.src[1] + p * span.src_stride[1];
    for (int64_t b = 0; b < len; b += 8) {
      const int64_t c0 = std::min(b, len - 8);
      U32x8 x, y;
      std::memcpy(&x, lo + c0, sizeof x);
      std::memcpy(&y, hi + c0, sizeof y);
      const U32x8 o0 = __builtin_shufflevector(x, y, 0, 8, 1, 9, 2, 10, 3, 11);
      const U32x8 o1 = __builtin_shufflevector(x, y, 4, 12, 5, 13, 6, 14, 7, 15);
      std::memcpy(d + 2 * c0, &o0, sizeof o0);
      std::memcpy(d + 2 * c0 + 8, &o1, sizeof o1);
    }
  }
}

template <typename T, int kWays>
SHUFFLENET_CPU_MULTIVERSION void interleave_pixels(const PixelSpan<T>& span, int64_t ways, int64_t len) {
  if constexpr (kWays == 8 && std::is_same_v<T, uint32_t>) {
    if (len >= 8) return interleave8_u32_pixels(span, len);
  }
  if constexpr (kWays == 2 && std::is_same_v<T, uint32_t>) {
    if (len >= 8) return interleave2_u32_pixels(span, len);
  }
  for (int64_t p = 0; p < span.pixels; ++p) {
    T* __restrict__ d = span.dst[0] + p * span.dst_stride[0];
    if constexpr (kWays == 2 && sizeof(T) <= 4) {
      // Two rows of narrow values: each output pair is one value of twice the
      // width (little-endian), which compiles to widening moves and an or.
      using W = typename WiderUnsigned<T>::type;
      auto* __restrict__ w = reinterpret_cast<UnalignedAlias<W>*>(d);
      const T* __restrict__ lo = span.src[0] + p * span.src_stride[0];
      const T* __restrict__ hi = span.src[1] + p * span.src_stride[1];
      for (int64_t b = 0; b < len; ++b) w[b] = W(lo[b]) | (W(hi[b]) << (8 * sizeof(T)));
    } else if constexpr (kWays > 0) {
      const T* row[kWays];
      for (int a = 0; a < kWays; ++a) row[a] = span.src[a] + p * span.src_stride[a];
      for (int64_t b = 0; b < len; ++b) {
        for (int a = 0; a < kWays; ++a) d[b * kWays + a] = row[a][b];
      }
    } else {
      for (int64_t a = 0; a < ways; ++a) {
        const T* __restrict__ row = span.src[a] + p * span.src_stride[a];
        for (int64_t b = 0; b < len; ++b) d[b * ways + a] = row[b];
      }
    }
  }
}

// Whether runs r .. r+count-1 read consecutive values of the same pixel, so
// that together they cover every value of their source range once.
template <typename T>
bool runs_interleaved(const PixelSpan<T>& span, int64_t r, int64_t count, int64_t runs) {
  if (r + count > runs) return false;
  for (int64_t i = 1; i < count; ++i) {
    if (span.src[r + i] != span.src[r] + i || span.src_stride[r + i] != span.src_stride[r]) return false;
  }
  return true;
}

template <typename T, int kStep>
SHUFFLENET_CPU_MULTIVERSION void strided_runs_pixels(
    const PixelSpan<T>& span, int64_t runs, int64_t step, int64_t len) {
  for (int64_t p = 0; p < span.pixels; ++p) {
    for (int64_t r = 0; r < runs; ++r) {
      T* __restrict__ d = span.dst[r] + p * span.dst_stride[r];
      const T* __restrict__ s = span.src[r] + p * span.src_stride[r];
      if constexpr (kStep == 1) {
        std::memcpy(d, s, len * sizeof(T));
      } else if constexpr (kStep == 2 && sizeof(T) <= 4) {
        if (runs_interleaved(span, r, 2, runs)) {
          // Two runs that de-interleave one contiguous range: its pairs read
          // as values of twice the width (little-endian) and split, which
          // compiles to narrowing moves and a shift. (Wider steps stay strided
          // loads: the compiler's transposes for them measured slower.)
          using W = typename WiderUnsigned<T>::type;
          const auto* __restrict__ pairs = reinterpret_cast<const UnalignedAlias<W>*>(s);
          T* __restrict__ hi = span.dst[r + 1] + p * span.dst_stride[r + 1];
          for (int64_t j = 0; j < len; ++j) {
            const W pair = pairs[j];
            d[j] = static_cast<T>(pair);
            hi[j] = static_cast<T>(pair >> (8 * sizeof(T)));
          }
          ++r;
        } else {
          for (int64_t j = 0; j < len; ++j) d[j] = s[j * 2];
        }
      } else if constexpr (kStep > 1) {
        for (int64_t j = 0; j < len; ++j) d[j] = s[j * kStep];
      } else {
        for (int64_t j = 0; j < len; ++j) d[j] = s[j * step];
      }
    }
  }
}

// Fallback: any table. src[k] is operand k's pixel, offset[c] the element of
// output channel c inside the pixel of operand[c].
template <typename T>
void table_pixels(const PixelSpan<T>& span, const int64_t* operand, const int64_t* offset, int64_t c_size) {
  for (int64_t p = 0; p < span.pixels; ++p) {
    T* d = span.dst[0] + p * span.dst_stride[0];
    for (int64_t c = 0; c < c_size; ++c) d[c] = span.src[operand[c]][p * span.src_stride[operand[c]] + offset[c]];
  }
}

template <typename T>
void run_pixel_plan(const PixelPlan& plan, const PixelSpan<T>& span) {
  const int64_t ways = plan.ways, len = plan.len;
  if (plan.kind == PixelPlanKind::kInterleave) {
    switch (ways) {
      case 2: return interleave_pixels<T, 2>(span, ways, len);
      case 3: return interleave_pixels<T, 3>(span, ways, len);
      case 4: return interleave_pixels<T, 4>(span, ways, len);
      case 8: return interleave_pixels<T, 8>(span, ways, len);
      default: return interleave_pixels<T, 0>(span, ways, len);
    }
  }
  const int64_t runs = static_cast<int64_t>(plan.starts.size());
  switch (ways) {
    case 1: return strided_runs_pixels<T, 1>(span, runs, ways, len);
    case 2: return strided_runs_pixels<T, 2>(span, runs, ways, len);
    case 3: return strided_runs_pixels<T, 3>(span, runs, ways, len);
    case 4: return strided_runs_pixels<T, 4>(span, runs, ways, len);
    case 8: return strided_runs_pixels<T, 8>(span, runs, ways, len);
    default: return strided_runs_pixels<T, 0>(span, runs, ways, len);
  }
}

// A destination tensor seen as [N, C, S], dense in NCHW or NHWC order.
template <typename T>
struct GatherTarget {
  T* data;
  ChannelView view;
};

// Channels-last destinations (all of the same N and S): the channels of
// dsts[0], dsts[1], ... in order are the C entries of `table`.
template <typename T>
void gather_pixels(const std::vector<GatherTarget<T>>& dsts, const std::vector<GatherSource<T>>& srcs,
                   const std::vector<ChannelSource>& table, const PixelPlan* table_plan = nullptr) {
  const int64_t c_size = static_cast<int64_t>(table.size());
  // Where each destination's channels start in the table.
  std::vector<int64_t> first_channel{0};
  for (const auto& d : dsts) first_channel.push_back(first_channel.back() + d.view.c);
  // table_plan: plan_for_table(table), when the caller has it. Sources with
  // strided channels take the table kernel.
  PixelPlan own_plan;
  const PixelPlan* plan_ptr = &own_plan;
  if (unit_channel_stride(srcs)) {
    if (table_plan != nullptr) {
      plan_ptr = table_plan;
    } else {
      own_plan = plan_for_table(table);
    }
  }
  const PixelPlan& plan = *plan_ptr;
  // A plan runs in one pass over the pixels when every row / run it writes
  // lies inside one destination; otherwise each destination is done alone.
  bool one_pass = plan.kind == PixelPlanKind::kStridedRuns || dsts.size() == 1;
  if (plan.kind == PixelPlanKind::kStridedRuns) {
    for (int64_t k = 0; k + 1 < static_cast<int64_t>(first_channel.size()); ++k) {
      one_pass = one_pass && first_channel[k] % plan.len == 0;
    }
  }
  if (!one_pass) {
    for (size_t k = 0; k < dsts.size(); ++k) {
      gather_pixels<T>({dsts[k]}, srcs, {table.begin() + first_channel[k], table.begin() + first_channel[k + 1]});
    }
    return;
  }
  const bool use_table = plan.kind == PixelPlanKind::kTable;
  // Per row / run (per operand for the table): source operand and element
  // offset in its pixel; destination and element offset in its pixel.
  std::vector<int64_t> operand, offset, target, target_offset;
  if (use_table) {
    for (size_t k = 0; k < srcs.size(); ++k) {
      operand.push_back(static_cast<int64_t>(k));
      offset.push_back(0);
    }
  } else {
    for (size_t r = 0; r < plan.starts.size(); ++r) {
      operand.push_back(plan.starts[r].operand);
      offset.push_back(plan.starts[r].channel);
    }
  }
  const int64_t dst_rows = plan.kind == PixelPlanKind::kStridedRuns ? static_cast<int64_t>(plan.starts.size()) : 1;
  for (int64_t r = 0; r < dst_rows; ++r) {
    const int64_t c = r * plan.len;  // first channel written by run r (0 for one destination)
    int64_t k = 0;
    while (first_channel[k + 1] <= c) ++k;
    target.push_back(k);
    target_offset.push_back(c - first_channel[k]);
  }
  std::vector<int64_t> table_operand, table_offset;
  if (use_table) {
    for (const auto& entry : table) {
      table_operand.push_back(entry.operand);
      table_offset.push_back(entry.channel * srcs[entry.operand].view.stride_c);
    }
  }
  const int64_t s_size = dsts[0].view.s;
  const int64_t grain = std::max<int64_t>(1, kGatherGrain / std::max<int64_t>(c_size, 1));
  at::parallel_for(0, dsts[0].view.n * s_size, grain, [&](int64_t begin, int64_t end) {
    std::vector<const T*> src(operand.size());
    std::vector<int64_t> src_stride(operand.size());
    std::vector<T*> dst(target.size());
    std::vector<int64_t> dst_stride(target.size());
    for (int64_t i = begin; i < end;) {
      const int64_t n = i / s_size, s = i % s_size;
      const int64_t pixels = std::min(end - i, s_size - s);
      for (size_t r = 0; r < operand.size(); ++r) {
        const auto& source = srcs[operand[r]];
        src[r] = source.data + n * source.view.stride_n + s * source.view.stride_s + offset[r];
        src_stride[r] = source.view.stride_s;
      }
      for (size_t r = 0; r < target.size(); ++r) {
        const auto& d = dsts[target[r]];
        dst[r] = d.data + n * d.view.stride_n + s * d.view.stride_s + target_offset[r] * d.view.stride_c;
        dst_stride[r] = d.view.stride_s;
      }
      const PixelSpan<T> span{dst.data(), dst_stride.data(), src.data(), src_stride.data(), pixels};
      if (use_table) {
        table_pixels(span, table_operand.data(), table_offset.data(), c_size);
      } else {
        run_pixel_plan(plan, span);
      }
      i += pixels;
    }
  });
}

// Copies n values: 64-byte block moves of a constant size (inlined vector loads
// and stores, the last block overlapping the one before) rather than a library
// call per plane, which dominates for the small planes of the late stages.
template <typename T>
C10_ALWAYS_INLINE void copy_values(T* __restrict__ d, const T* __restrict__ s, int64_t n) {
  constexpr int64_t kBlock = 64 / sizeof(T);
  if (n >= kBlock) {
    int64_t i = 0;
    for (; i + kBlock <= n; i += kBlock) std::memcpy(d + i, s + i, 64);
    if (i < n) std::memcpy(d + n - kBlock, s + n - kBlock, 64);
    return;
  }
  for (int64_t i = 0; i < n; ++i) d[i] = s[i];
}

// Planes [begin, end) of the flattened (n, c) range: plane (n, c) copies
// src[c] + n * src_stride_n[c] (stride_s apart) to dst[c] + n * dst_stride_n[c].
template <typename T>
struct PlaneCopies {
  const T* const* src;
  const int64_t* src_stride_n;
  T* const* dst;
  const int64_t* dst_stride_n;
  int64_t c_size, s_size, stride_s;
};

template <typename T>
SHUFFLENET_CPU_MULTIVERSION void copy_planes(const PlaneCopies<T>& job, int64_t begin, int64_t end) {
  int64_t n = begin / job.c_size, c = begin % job.c_size;  // one division per task, not per plane
  for (int64_t i = begin; i < end; ++i) {
    const T* sp = job.src[c] + n * job.src_stride_n[c];
    T* dp = job.dst[c] + n * job.dst_stride_n[c];
    if (job.stride_s == 1) {
      copy_values(dp, sp, job.s_size);
    } else {
      for (int64_t s = 0; s < job.s_size; ++s) dp[s] = sp[s * job.stride_s];
    }
    if (++c == job.c_size) {
      c = 0;
      ++n;
    }
  }
}

// Planar destinations: each output channel plane is one contiguous run copied
// from one source plane. Tasks cover many planes (kGatherGrain elements), so
// small planes cost their copy and little else.
template <typename T>
void gather_planes(const std::vector<GatherTarget<T>>& dsts, const std::vector<GatherSource<T>>& srcs,
                   const std::vector<ChannelSource>& table) {
  const int64_t c_size = static_cast<int64_t>(table.size());
  c10::SmallVector<const T*, 512> src(c_size);
  c10::SmallVector<T*, 512> dst(c_size);
  c10::SmallVector<int64_t, 512> src_stride_n(c_size), dst_stride_n(c_size);
  // Sources that are read with another spatial stride than the first one's are
  // rare (exotic strides are copied to a dense layout before this point): one
  // stride for all, else the strided loop with each source's own.
  bool same_stride = true;
  int64_t c = 0;
  for (const auto& d : dsts) {
    for (int64_t k = 0; k < d.view.c; ++k, ++c) {
      const auto& source = srcs[table[c].operand];
      src[c] = source.data + table[c].channel * source.view.stride_c;
      src_stride_n[c] = source.view.stride_n;
      dst[c] = d.data + k * d.view.stride_c;
      dst_stride_n[c] = d.view.stride_n;
      same_stride = same_stride && source.view.stride_s == srcs[table[0].operand].view.stride_s;
    }
  }
  const int64_t s_size = dsts[0].view.s;
  const int64_t grain = std::max<int64_t>(1, kGatherGrain / std::max<int64_t>(s_size, 1));
  if (same_stride) {
    const PlaneCopies<T> job{src.data(), src_stride_n.data(), dst.data(), dst_stride_n.data(), c_size, s_size,
                             srcs[table[0].operand].view.stride_s};
    at::parallel_for(0, dsts[0].view.n * c_size, grain,
                     [&](int64_t begin, int64_t end) { copy_planes(job, begin, end); });
    return;
  }
  at::parallel_for(0, dsts[0].view.n * c_size, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = i / c_size, ch = i % c_size;
      const int64_t stride_s = srcs[table[ch].operand].view.stride_s;
      const T* sp = src[ch] + n * src_stride_n[ch];
      T* dp = dst[ch] + n * dst_stride_n[ch];
      for (int64_t s = 0; s < s_size; ++s) dp[s] = sp[s * stride_s];
    }
  });
}

// Fills `dsts` (allocated, dense, all NCHW or all channels-last, same N and
// spatial size): channel c of the destinations taken in order gets channel
// table[c].channel of sources[table[c].operand]. One pass over the data.
void gather_into(const std::vector<at::Tensor>& dsts, const std::vector<at::Tensor>& sources,
                 const GatherTable& gather) {
  const std::vector<ChannelSource>& table = gather.table;
  if (std::all_of(dsts.begin(), dsts.end(), [](const at::Tensor& d) { return d.numel() == 0; })) return;
  std::vector<ChannelView> dst_views;
  for (const auto& d : dsts) dst_views.push_back(as_channel_view(d).second);  // dense: never a copy
  std::vector<std::pair<at::Tensor, ChannelView>> views;
  views.reserve(sources.size());
  for (const auto& s : sources) views.push_back(as_channel_view(s));
  // Planar when every destination is (a one-channel tensor is both layouts).
  const bool planar = std::all_of(dst_views.begin(), dst_views.end(),
                                  [](const ChannelView& v) { return v.stride_s == 1 && v.s > 1; });
  for (const auto& v : dst_views) {
    TORCH_INTERNAL_ASSERT(planar || v.c <= 1 || v.stride_c == 1, "gather_into: mixed destination layouts");
  }
  // Moving values needs only their width: one instantiation per element size.
  const auto run = [&](auto tag) {
    using T = decltype(tag);
    std::vector<GatherSource<T>> srcs;
    for (const auto& v : views) srcs.push_back({static_cast<const T*>(v.first.const_data_ptr()), v.second});
    std::vector<GatherTarget<T>> targets;
    for (size_t k = 0; k < dsts.size(); ++k) targets.push_back({static_cast<T*>(dsts[k].mutable_data_ptr()), dst_views[k]});
    if (planar) {
      gather_planes<T>(targets, srcs, table);
    } else {
      gather_pixels<T>(targets, srcs, table, &gather.plan);
    }
  };
  switch (dsts[0].element_size()) {
    case 2: return run(uint16_t{});
    case 4: return run(uint32_t{});
    case 8: return run(uint64_t{});
    default:
      TORCH_CHECK(false, "shufflenet: unsupported element size ", dsts[0].element_size(), " of ", dsts[0].scalar_type());
  }
}

// ---- channel_shuffle of a dense tensor --------------------------------------
// The common case (a dense NCHW or channels-last tensor) skips gather_into's
// general bookkeeping (views, vectors of per-channel pointers, an allocation
// per vector), which at batch 1 costs as much as moving a late-stage map:
// planes and pixels follow each other, so plain offsets locate everything.

// Elements per parallel task: tasks are split over the threads from 32 KiB of
// float32 on (PyTorch's kernel splits any size), so that at batch 1 two
// threads share the late-stage maps too, while the tiniest maps stay on one.
constexpr int64_t kDenseGrain = 1 << 13;

// Output planes [begin, end) of the flattened (n, c) range: output plane
// o = i * groups + g of image n copies input plane g * (channels / groups) + i.
template <typename T>
SHUFFLENET_CPU_MULTIVERSION void shuffle_planes_dense(const T* src, T* dst, int64_t channels, int64_t groups,
                                                      int64_t plane, int64_t begin, int64_t end) {
  const int64_t per_group = channels / groups;
  const int64_t o = begin % channels;  // divisions once per task, not per plane
  int64_t i = o / groups, g = o % groups;
  const T* image = src + (begin / channels) * channels * plane;
  T* d = dst + begin * plane;
  for (int64_t k = begin; k < end; ++k, d += plane) {
    copy_values(d, image + (g * per_group + i) * plane, plane);
    if (++g == groups) {
      g = 0;
      if (++i == per_group) {
        i = 0;
        image += channels * plane;
      }
    }
  }
}

// Pixels [begin, end) of dense pixel-major data (`channels` values per pixel)
// through `plan` (not a table): row / run r reads from the pixel's channel
// plan.starts[r].channel; strided run r writes from channel r * plan.len.
template <typename T>
void shuffle_pixels_dense(const T* src, T* dst, int64_t channels, const PixelPlan& plan, int64_t begin, int64_t end) {
  const int64_t rows = static_cast<int64_t>(plan.starts.size());
  const int64_t dst_rows = plan.kind == PixelPlanKind::kStridedRuns ? rows : 1;
  c10::SmallVector<const T*, 16> s(rows);
  c10::SmallVector<T*, 16> d(dst_rows);
  const c10::SmallVector<int64_t, 16> stride(rows, channels);
  for (int64_t r = 0; r < rows; ++r) s[r] = src + begin * channels + plan.starts[r].channel;
  for (int64_t r = 0; r < dst_rows; ++r) d[r] = dst + begin * channels + r * plan.len;
  run_pixel_plan(plan, PixelSpan<T>{d.data(), stride.data(), s.data(), stride.data(), end - begin});
}

// `out` = channel_shuffle(input, groups) for input and out dense in the same
// memory format, neither empty; false (nothing written) when the permutation
// has no pixel plan (a table: the general gather handles it).
bool shuffle_dense(const at::Tensor& input, at::Tensor& out, int64_t groups, const GatherTable& gather,
                   at::MemoryFormat format) {
  const int64_t n = input.size(0), channels = input.size(1), s = input.numel() / (n * channels);
  // NCHW planes of one value are pixel-major too.
  const bool planar = format == at::MemoryFormat::Contiguous && s > 1;
  if (!planar && gather.plan.kind == PixelPlanKind::kTable) return false;
  const auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* src = static_cast<const T*>(input.const_data_ptr());
    T* dst = static_cast<T*>(out.mutable_data_ptr());
    if (planar) {
      at::parallel_for(0, n * channels, std::max<int64_t>(1, kDenseGrain / s), [&](int64_t begin, int64_t end) {
        shuffle_planes_dense(src, dst, channels, groups, s, begin, end);
      });
    } else {
      at::parallel_for(0, n * s, std::max<int64_t>(1, kDenseGrain / channels), [&](int64_t begin, int64_t end) {
        shuffle_pixels_dense(src, dst, channels, gather.plan, begin, end);
      });
    }
  };
  switch (input.element_size()) {
    case 2: run(uint16_t{}); return true;
    case 4: run(uint32_t{}); return true;
    case 8: run(uint64_t{}); return true;
    default: return false;
  }
}

const GatherTable& shuffle_table(int64_t channels, int64_t groups) {
  return cached_table(TableKind::kShuffle, channels, groups, 0, [&](int64_t c) {
    return ChannelSource{0, shuffle_source_channel(c, channels, groups)};
  });
}

at::Tensor concat_shuffle_cpu(const at::Tensor& a, const at::Tensor& b, int64_t groups) {
  check_concat_shuffle_args(a, b, groups);
  const int64_t channels_a = a.size(1), channels = a.size(1) + b.size(1);
  auto sizes = a.sizes().vec();
  sizes[1] = channels;
  at::Tensor out = empty_cached(sizes, a, output_memory_format(a));
  const GatherTable& table = cached_table(TableKind::kConcatShuffle, channels, groups, channels_a, [&](int64_t c) {
    return concat_shuffle_source(c, channels_a, channels, groups);
  });
  gather_into({out}, {a, b}, table);
  return out;
}

std::tuple<at::Tensor, at::Tensor> concat_shuffle_backward_cpu(
    const at::Tensor& grad_output, int64_t groups, int64_t channels_a) {
  check_concat_shuffle_backward_args(grad_output, groups, channels_a);
  const int64_t channels = grad_output.size(1);
  const at::MemoryFormat fmt = output_memory_format(grad_output);
  auto sizes_a = grad_output.sizes().vec();
  auto sizes_b = grad_output.sizes().vec();
  sizes_a[1] = channels_a;
  sizes_b[1] = channels - channels_a;
  at::Tensor grad_a = empty_in_format(sizes_a, grad_output, fmt);
  at::Tensor grad_b = empty_in_format(sizes_b, grad_output, fmt);
  // Concatenated channel j (of grad_a, then grad_b) sits at output channel
  // shuffle_dest_channel(j); both are filled in one pass over grad_output.
  const GatherTable& table = cached_table(TableKind::kConcatShuffleBackward, channels, groups, 0, [&](int64_t j) {
    return ChannelSource{0, shuffle_dest_channel(j, channels, groups)};
  });
  gather_into({grad_a, grad_b}, {grad_output}, table);
  return {grad_a, grad_b};
}

}  // namespace

at::Tensor channel_shuffle_cpu(const at::Tensor& input, int64_t groups) {
  check_channel_shuffle_args(input, groups);
  const int64_t channels = input.size(1);
  const at::MemoryFormat format = output_memory_format(input);
  // The CPU allocation itself, not at::empty's trip through the dispatcher.
  at::Tensor out = at::detail::empty_cpu(input.sizes(), input.scalar_type(), false, format);
  if (out.numel() == 0) return out;
  const GatherTable& table = shuffle_table(channels, groups);
  if (input.is_contiguous(format) && shuffle_dense(input, out, groups, table, format)) return out;
  gather_into({out}, {input}, table);
  return out;
}

void channel_shuffle_rows_into(const at::Tensor& src, at::Tensor& dst, int64_t groups) {
  const int64_t rows = src.size(0), channels = src.size(1);
  // As [1, C, rows, 1] channels-last tensors: one image of `rows` pixels.
  const auto as_image = [&](const at::Tensor& t) { return t.as_strided({1, channels, rows, 1}, {rows * channels, 1, channels, channels}); };
  const GatherTable& table = shuffle_table(channels, groups);
  gather_into({as_image(dst)}, {as_image(src)}, table);
}

TORCH_LIBRARY_IMPL(shufflenet, CPU, m) {
  m.impl("channel_shuffle", &channel_shuffle_cpu);
  m.impl("concat_shuffle", &concat_shuffle_cpu);
  m.impl("concat_shuffle_backward", &concat_shuffle_backward_cpu);
}

}  // namespace shufflenet::cpu
