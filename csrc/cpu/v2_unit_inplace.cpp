// The ShuffleNet V2 stride-1 unit in place on CPU (v2_unit_, eval mode, BN folded).
//
// v2_unit_(buffer, branch_channels, pw1, pw1_bias, dw, dw_bias, pw2, pw2_bias):
// with x = buffer[:, branch_channels] (B channels, in the index table's order),
// y = relu(pw2(dw3x3(relu(pw1(x))))), then buffer[:, branch_channels[i]] = y[i].
// The other channels of the buffer are neither read nor written. A whole stage of
// stride-1 units runs so on one buffer: the concat and channel shuffle of each unit
// become a permutation of the buffer's channels tracked when the model is converted
// (nn.zero_copy), so the kept half never moves.
//
// Work is split into (image, band of rows) tasks over at::parallel_for. A band is
// walked down in steps of a few rows, each step in per-thread scratch (pixel-major,
// channels padded to whole blocks of 16), as v2_unit.cpp does for the stride-1 unit:
//   1. gather the branch channels of the input rows the step needs that the previous
//      step has not already taken (runs of consecutive channels are copied together,
//      converted to float32), and run the first 1x1 conv (+bias, ReLU) on them; the
//      rows the step shares with the previous step stay in the buffer of pw1 results;
//   2. the 3x3 depthwise conv (+bias) of the step's rows;
//   3. the second 1x1 conv (+bias, ReLU), then scatter its output to the branch
//      channels of the step's rows, which no later step of the band reads again.
// In place, a band must not overwrite rows that a neighbouring band still has to read
// (the row above it and the row below it, its halo). Before writing anything, a band
// that has a band below it gathers that band's first row (its lower halo) and its own
// last row (the next band's upper halo) into a side buffer, then flags itself started;
// a band with a band above it waits for that flag before it starts, and reads its upper
// halo from the side buffer. A band waits only for the band before it, and
// at::parallel_for gives each thread an ascending range of bands, so no band waits for
// one that its own thread has still to run.
//
// float32, float16 and bfloat16 run this kernel (computing in float32, rounding once
// on the scatter); float64 runs the composition of ATen convolutions, for checks.
//
// Shared with v2_unit.cpp (v2_unit_parts.h): the packed-weight layouts and their cache,
// and the 3x3 depthwise conv.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "common/checks.h"
#include "cpu/cpu_kernels.h"
#include "cpu/float_vec.h"
#include "cpu/gemm_tile.h"
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

// Branch channels [k0, k0 + len) are buffer channels [c0, c0 + len).
struct Run {
  int64_t k0, c0, len;
};

// Gather: branch channels of rows [r0, r1) of image n into float [rows][w][cb_p].
// Scatter: rows [r0, r1) of image n from float [rows * w][cb_p] into the branch channels.
using GatherFn = void (*)(const void* ctx, int64_t n, int64_t r0, int64_t r1, float* dst);
using ScatterFn = void (*)(const void* ctx, int64_t n, int64_t r0, int64_t r1, const float* src);

struct Plan {
  int64_t h, w;
  int64_t c_branch, c_mid, cb_p, cm_p;
  PackedPointwise pw1, pw2;
  const float *dw, *dw_bias;  // [blocks][9][16], [blocks * 16]
  int64_t rows_per_step, bands, band_rows;
  // Per task (image, band), [2][w][cb_p]: the band's own last row and the row below it,
  // as they were before any band wrote; with a flag per task, set once both are taken.
  // Null with one band per image (no neighbour to race with).
  float* halo;
  std::atomic<int>* started;
  GatherFn gather;
  ScatterFn scatter;
  const void* ctx;
};

// Floats of per-thread scratch, each part starting on a 64-byte boundary.
struct ScratchLayout {
  int64_t in, mid, dw, y, total;
};

ScratchLayout scratch_layout(const Plan& p) {
  const int64_t cap = p.rows_per_step + 2;  // input rows one step reads
  const int64_t px = p.rows_per_step * p.w;
  const auto round = [](int64_t v) { return (v + kBlock - 1) / kBlock * kBlock; };
  ScratchLayout s{};
  int64_t at = 0;
  const auto take = [&](int64_t floats) {
    const int64_t start = at;
    at += round(floats);
    return start;
  };
  s.in = take(cap * p.w * p.cb_p);
  s.mid = take(cap * p.w * p.cm_p);
  s.dw = take(px * p.cm_p);
  s.y = take(px * p.cb_p);
  s.total = at;
  return s;
}

// ---- the band kernel (compiled once per instruction set) -------------------------------

// Before band t (rows [b0, b1) of image n) writes: its halo rows saved, its flag set,
// and the band above it (task t - 1) started.
C10_ALWAYS_INLINE void take_halo(const Plan& p, int64_t t, int64_t n, int64_t b0, int64_t b1) {
  if (p.halo == nullptr) return;
  const int64_t row = p.w * p.cb_p;
  if (b1 < p.h) p.gather(p.ctx, n, b1 - 1, b1 + 1, p.halo + (t * 2) * row);
  p.started[t].store(1, std::memory_order_release);
  if (b0 > 0) {
    while (p.started[t - 1].load(std::memory_order_acquire) == 0) std::this_thread::yield();
  }
}

// Input rows [r0, r1) of image n (task t, band rows [b0, b1)) into dst: the band's own
// rows from the buffer, the halo rows b0 - 1 and b1 from the side buffer.
C10_ALWAYS_INLINE void load_rows(const Plan& p, int64_t t, int64_t n, int64_t b0, int64_t b1, int64_t r0, int64_t r1,
                                 float* dst) {
  const int64_t row = p.w * p.cb_p;
  if (p.halo != nullptr && r0 < b0) {  // r0 == b0 - 1: the last row of band t - 1
    std::memcpy(dst, p.halo + ((t - 1) * 2) * row, row * sizeof(float));
    dst += row;
    ++r0;
  }
  const bool below = p.halo != nullptr && r1 > b1;  // r1 == b1 + 1
  const int64_t own_end = below ? b1 : r1;
  if (own_end > r0) {
    p.gather(p.ctx, n, r0, own_end, dst);
    dst += (own_end - r0) * row;
  }
  if (below) std::memcpy(dst, p.halo + (t * 2 + 1) * row, row * sizeof(float));
}

// Rows [b0, b1) of image n, task t (see the file comment for the steps).
template <int L, int MR, int NB>
C10_ALWAYS_INLINE void run_band(const Plan& p, const ScratchLayout& sl, float* scratch, int64_t t, int64_t n,
                                int64_t b0, int64_t b1) {
  const int64_t w = p.w;
  float* in_buf = scratch + sl.in;
  float* mid = scratch + sl.mid;
  float* dw_out = scratch + sl.dw;
  float* y = scratch + sl.y;
  const int64_t mid_row = w * p.cm_p;
  take_halo(p, t, n, b0, b1);
  int64_t first = 0, end = 0;  // pw1 results of input rows [first, end) are in mid
  for (int64_t a = b0; a < b1; a += p.rows_per_step) {
    const int64_t b = std::min(a + p.rows_per_step, b1);
    const int64_t lo = std::max<int64_t>(a - 1, 0);
    const int64_t hi = std::min<int64_t>(b + 1, p.h);
    if (end <= lo || end == first) {
      first = end = lo;
    } else if (lo > first) {  // keep the rows this step shares with the last one
      std::memmove(mid, mid + (lo - first) * mid_row, (end - lo) * mid_row * sizeof(float));
      first = lo;
    }
    if (hi > end) {
      load_rows(p, t, n, b0, b1, end, hi, in_buf);
      gemm::relu_gemm<L, MR, NB>(in_buf, p.cb_p, (hi - end) * w, p.pw1,
                                 gemm::StoreRows{mid + (end - first) * mid_row, p.cm_p});
      end = hi;
    }
    depthwise3x3<L, 1>(mid, first, mid_row, p.cm_p, p.h, w, a, b, w, p.dw, p.dw_bias, p.c_mid, dw_out, p.cm_p);
    gemm::relu_gemm<L, MR, NB>(dw_out, p.cm_p, (b - a) * w, p.pw2, gemm::StoreRows{y, p.cb_p});
    p.scatter(p.ctx, n, a, b, y);
  }
}

template <int L, int MR, int NB>
C10_ALWAYS_INLINE void run_tasks(const Plan& p, const ScratchLayout& sl, float* scratch, int64_t t0, int64_t t1) {
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t n = t / p.bands, band = t % p.bands;
    const int64_t r0 = band * p.band_rows, r1 = std::min(p.h, r0 + p.band_rows);
    if (r0 < r1) run_band<L, MR, NB>(p, sl, scratch, t, n, r0, r1);
  }
}

using RunTasksFn = void (*)(const Plan&, const ScratchLayout&, float*, int64_t, int64_t);

// Vector width and tile shapes as in v2_unit.cpp.
void run_tasks_baseline(const Plan& p, const ScratchLayout& sl, float* scratch, int64_t t0, int64_t t1) {
#if defined(__x86_64__)
  run_tasks<4, 2, 1>(p, sl, scratch, t0, t1);
#else
  run_tasks<4, 4, 1>(p, sl, scratch, t0, t1);
#endif
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SHUFFLENET_V2_INPLACE_X86 1
__attribute__((target("avx512f,avx512vl,avx2,fma"))) void run_tasks_avx512(const Plan& p, const ScratchLayout& sl,
                                                                    float* scratch, int64_t t0, int64_t t1) {
  run_tasks<16, 6, 4>(p, sl, scratch, t0, t1);
}

__attribute__((target("avx2,fma"))) void run_tasks_avx2(const Plan& p, const ScratchLayout& sl, float* scratch,
                                                         int64_t t0, int64_t t1) {
  run_tasks<8, 6, 1>(p, sl, scratch, t0, t1);
}
#endif

// The best version this CPU runs (gemm::cpu_isa; SHUFFLENET_CPU_ISA caps it).
RunTasksFn choose_isa() {
#ifdef SHUFFLENET_V2_INPLACE_X86
  switch (gemm::cpu_isa()) {
    case gemm::Isa::kAvx512:
      return &run_tasks_avx512;
    case gemm::Isa::kAvx2:
      return &run_tasks_avx2;
    default:
      break;
  }
#endif
  return &run_tasks_baseline;
}

RunTasksFn run_fn() {
  static const RunTasksFn fn = choose_isa();
  return fn;
}

// ---- typed gather and scatter -----------------------------------------------------------

template <typename scalar_t>
struct Access {
  scalar_t* base;
  int64_t s_n, s_c, s_h, s_w;  // buffer strides
  int64_t w, cb_p;
  const Run* runs;
  int64_t n_runs;
  // Channels-last-like buffers with short runs (late units of a stage): one index per
  // branch channel instead, a loop the compiler turns into gathers and scatters.
  const int64_t* index;
  int64_t c_branch;
  bool by_index;
};

template <typename scalar_t>
SHUFFLENET_CPU_MULTIVERSION void gather_rows(const void* ctx, int64_t n, int64_t r0, int64_t r1, float* dst) {
  const Access<scalar_t>& a = *static_cast<const Access<scalar_t>*>(ctx);
  const scalar_t* image = a.base + n * a.s_n;
  if (a.s_c == 1) {  // channels_last-like: runs of channels are contiguous
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t x = 0; x < a.w; ++x) {
        const scalar_t* s = image + r * a.s_h + x * a.s_w;
        float* d = dst + ((r - r0) * a.w + x) * a.cb_p;
        if (a.by_index) {
          for (int64_t k = 0; k < a.c_branch; ++k) d[k] = static_cast<float>(s[a.index[k]]);
          continue;
        }
        for (int64_t i = 0; i < a.n_runs; ++i) {
          const Run& run = a.runs[i];
          for (int64_t j = 0; j < run.len; ++j) d[run.k0 + j] = static_cast<float>(s[run.c0 + j]);
        }
      }
    }
    return;
  }
  for (int64_t i = 0; i < a.n_runs; ++i) {
    const Run& run = a.runs[i];
    for (int64_t j = 0; j < run.len; ++j) {
      const scalar_t* plane = image + (run.c0 + j) * a.s_c;
      float* d = dst + run.k0 + j;
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* s = plane + r * a.s_h;
        float* dr = d + (r - r0) * a.w * a.cb_p;
        for (int64_t x = 0; x < a.w; ++x) dr[x * a.cb_p] = static_cast<float>(s[x * a.s_w]);
      }
    }
  }
}

template <typename scalar_t>
SHUFFLENET_CPU_MULTIVERSION void scatter_rows(const void* ctx, int64_t n, int64_t r0, int64_t r1, const float* src) {
  const Access<scalar_t>& a = *static_cast<const Access<scalar_t>*>(ctx);
  scalar_t* image = a.base + n * a.s_n;
  if (a.s_c == 1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t x = 0; x < a.w; ++x) {
        scalar_t* d = image + r * a.s_h + x * a.s_w;
        const float* s = src + ((r - r0) * a.w + x) * a.cb_p;
        if (a.by_index) {
          for (int64_t k = 0; k < a.c_branch; ++k) d[a.index[k]] = static_cast<scalar_t>(s[k]);
          continue;
        }
        for (int64_t i = 0; i < a.n_runs; ++i) {
          const Run& run = a.runs[i];
          for (int64_t j = 0; j < run.len; ++j) d[run.c0 + j] = static_cast<scalar_t>(s[run.k0 + j]);
        }
      }
    }
    return;
  }
  for (int64_t i = 0; i < a.n_runs; ++i) {
    const Run& run = a.runs[i];
    for (int64_t j = 0; j < run.len; ++j) {
      scalar_t* plane = image + (run.c0 + j) * a.s_c;
      const float* s = src + run.k0 + j;
      for (int64_t r = r0; r < r1; ++r) {
        scalar_t* d = plane + r * a.s_h;
        const float* sr = s + (r - r0) * a.w * a.cb_p;
        for (int64_t x = 0; x < a.w; ++x) d[x * a.s_w] = static_cast<scalar_t>(sr[x * a.cb_p]);
      }
    }
  }
}

// ---- entry ---------------------------------------------------------------------------

using OptTensor = c10::optional<at::Tensor>;

at::Tensor opt(const OptTensor& t) { return t.has_value() && t->defined() ? *t : at::Tensor(); }

// Runs shorter than this on average are gathered and scattered by index.
constexpr int64_t kShortRun = 8;

// Pixels one step should cover: enough rows that the GEMM tiles stay full.
constexpr int64_t kStepPixels = 48;

// The index table as runs of consecutive branch channels that are consecutive buffer
// channels; checks that the indices are distinct and in [0, channels).
std::vector<Run> channel_runs(const at::Tensor& branch_channels, int64_t channels) {
  const at::Tensor idx = branch_channels.contiguous();
  const int64_t* v = idx.const_data_ptr<int64_t>();
  const int64_t count = idx.numel();
  std::vector<char> seen(static_cast<size_t>(channels), 0);
  std::vector<Run> runs;
  for (int64_t k = 0; k < count; ++k) {
    const int64_t c = v[k];
    TORCH_CHECK(c >= 0 && c < channels, "v2_unit_: branch_channels[", k, "] = ", c, " is not a channel of the buffer (",
                channels, " channels)");
    TORCH_CHECK(!seen[c], "v2_unit_: branch_channels must be distinct, channel ", c, " appears twice");
    seen[c] = 1;
    if (!runs.empty() && runs.back().c0 + runs.back().len == c) {
      ++runs.back().len;
    } else {
      runs.push_back(Run{k, c, 1});
    }
  }
  return runs;
}

// float64: the definition, from ATen convolutions, for checks.
void v2_unit_inplace_composed(const at::Tensor& buffer, const at::Tensor& branch_channels, const at::Tensor& pw1_weight,
                              const OptTensor& pw1_bias, const at::Tensor& dw_weight, const OptTensor& dw_bias,
                              const at::Tensor& pw2_weight, const OptTensor& pw2_bias) {
  const at::Tensor x = buffer.index_select(1, branch_channels);
  at::Tensor t = at::conv2d(x, pw1_weight, opt(pw1_bias)).relu_();
  t = at::conv2d(t, dw_weight, opt(dw_bias), 1, 1, 1, dw_weight.size(0));
  t = at::conv2d(t, pw2_weight, opt(pw2_bias)).relu_();
  buffer.index_copy_(1, branch_channels, t);
}

void v2_unit_inplace_cpu(const at::Tensor& buffer, const at::Tensor& branch_channels, const at::Tensor& pw1_weight,
                         const OptTensor& pw1_bias, const at::Tensor& dw_weight, const OptTensor& dw_bias,
                         const at::Tensor& pw2_weight, const OptTensor& pw2_bias) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const V2UnitInplaceShape shape = check_v2_unit_inplace_args(buffer, branch_channels, pw1_weight, pw1_bias, dw_weight,
                                                              dw_bias, pw2_weight, pw2_bias);
  TORCH_CHECK(at::has_internal_overlap(buffer) != at::MemOverlap::Yes,
              "v2_unit_: buffer has overlapping memory (e.g. an expanded tensor); it is written in place");
  const std::vector<Run> runs = channel_runs(branch_channels, shape.c);
  const at::Tensor index = branch_channels.contiguous();
  if (buffer.numel() == 0) return;
  if (buffer.scalar_type() == at::kDouble) {
    v2_unit_inplace_composed(buffer, branch_channels, pw1_weight, pw1_bias, dw_weight, dw_bias, pw2_weight, pw2_bias);
    return;
  }

  UnitPackCache& cache = pack_cache();
  const at::TensorOptions opts = buffer.options();
  at::Tensor keep[6];  // the packed tensors, alive for the call
  const auto pointwise = [&](const at::Tensor& w, const OptTensor& b, at::Tensor& wp, at::Tensor& bp) {
    wp = cache.get(w, PackKind::kPointwise, w.size(0), opts);
    bp = cache.get(opt(b), PackKind::kBias, w.size(0), opts);
    return PackedPointwise{wp.const_data_ptr<float>(), bp.const_data_ptr<float>(), w.size(1), w.size(0),
                           blocks_of(w.size(0))};
  };
  Plan p{};
  p.h = shape.h;
  p.w = shape.w;
  p.c_branch = shape.c_branch;
  p.c_mid = shape.c_mid;
  p.cb_p = padded(shape.c_branch);
  p.cm_p = padded(shape.c_mid);
  p.pw1 = pointwise(pw1_weight, pw1_bias, keep[0], keep[1]);
  p.pw2 = pointwise(pw2_weight, pw2_bias, keep[2], keep[3]);
  keep[4] = cache.get(dw_weight, PackKind::kDepthwise, shape.c_mid, opts);
  keep[5] = cache.get(opt(dw_bias), PackKind::kBias, shape.c_mid, opts);
  p.dw = keep[4].const_data_ptr<float>();
  p.dw_bias = keep[5].const_data_ptr<float>();

  // Bands: enough (image, band) tasks for every thread.
  const int64_t threads = std::max(1, at::get_num_threads());
  p.bands = shape.n >= threads ? 1 : std::min(shape.h, (threads + shape.n - 1) / shape.n);
  p.band_rows = (shape.h + p.bands - 1) / p.bands;
  p.bands = (shape.h + p.band_rows - 1) / p.band_rows;  // no empty band
  p.rows_per_step = std::clamp<int64_t>((kStepPixels + shape.w - 1) / shape.w, 1, p.band_rows);
  const int64_t tasks = shape.n * p.bands;
  const ScratchLayout sl = scratch_layout(p);
  const RunTasksFn run = run_fn();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, buffer.scalar_type(), "v2_unit_cpu", [&] {
    Access<scalar_t> access{buffer.mutable_data_ptr<scalar_t>(), buffer.stride(0), buffer.stride(1), buffer.stride(2),
                            buffer.stride(3), shape.w, p.cb_p, runs.data(), static_cast<int64_t>(runs.size()),
                            index.const_data_ptr<int64_t>(), shape.c_branch,
                            static_cast<int64_t>(runs.size()) * kShortRun > shape.c_branch};
    p.gather = &gather_rows<scalar_t>;
    p.scatter = &scatter_rows<scalar_t>;
    p.ctx = &access;
    std::vector<float> halo;
    std::vector<std::atomic<int>> started;
    if (p.bands > 1) {
      halo.resize(static_cast<size_t>(tasks * 2 * shape.w * p.cb_p));
      started = std::vector<std::atomic<int>>(static_cast<size_t>(tasks));
      for (auto& f : started) f.store(0, std::memory_order_relaxed);
      p.halo = halo.data();
      p.started = started.data();
    }
    at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
      thread_local std::vector<float> scratch;
      run(p, sl, gemm::aligned_floats(scratch, sl.total), t0, t1);
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(shufflenet, CPU, m) { m.impl("v2_unit_", &v2_unit_inplace_cpu); }

}  // namespace shufflenet::cpu
