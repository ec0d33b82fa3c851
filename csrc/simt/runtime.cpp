// The SIMT emulation runtime (see simt.h): launches, the per-block fiber
// scheduler, barriers and warp collectives, shared memory, and the access hooks
// behind the shared-memory checks.
//
// Fibers: every CUDA thread of a block runs on its own stack; a switch saves the
// callee-saved registers and the floating-point control words (x86-64 assembly
// below, ucontext elsewhere). A block runs on one worker thread from start to end.
//
// Access hooks: the emulation build compiles the kernel sources with gcc's
// address-sanitizer instrumentation in its out-of-line form
// (`-fsanitize=address --param asan-instrumentation-with-call-threshold=0` with the
// stack, globals and use-after-scope parts off), so every load and store calls
// __asan_load<N>/__asan_store<N>(address). This file implements those functions
// itself (no sanitizer runtime is involved): outside a kernel they return at
// once; inside one they check vector alignment and, for addresses in the block's
// shared-memory arena, bounds, initialisation and races against a per-byte shadow.
#include "simt/simt.h"

#include <ATen/Parallel.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <sstream>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif
#if defined(SHUFFLENET_SIMT_ASAN)
#include <sanitizer/asan_interface.h>
#endif

#if defined(__SANITIZE_ADDRESS__) && !defined(SHUFFLENET_SIMT_ASAN)
#define SIMT_HOOKS 1
#define SIMT_NO_INSTRUMENT __attribute__((no_sanitize_address, noinline))
#else
#define SIMT_HOOKS 0
#define SIMT_NO_INSTRUMENT
#endif

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

// ---- context switch ------------------------------------------------------------
#if defined(__x86_64__)
// simt_switch(void** save_sp, void* load_sp): saves the callee-saved registers,
// MXCSR and the x87 control word on the current stack, stores the stack pointer
// in *save_sp, and resumes the context whose stack pointer is load_sp.
extern "C" void simt_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .p2align 4
  .globl simt_switch
  .hidden simt_switch
  .type simt_switch, @function
simt_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size simt_switch, .-simt_switch
)");
#endif

namespace simt {
namespace {

constexpr int kMaxThreads = 1024;
constexpr int kMaxWarps = kMaxThreads / 32;
constexpr size_t kStackBytes = 128 * 1024;
constexpr size_t kPage = 4096;
constexpr int64_t kDefaultSmem = 48 * 1024;
// Shared-memory region: a front redzone, then the arena (dynamic shared memory at
// offset 0, static variables after it, 16 bytes apart), then room for
// out-of-bounds accesses to land in.
constexpr size_t kFront = 4096;
constexpr size_t kRegionBytes = kFront + 227 * 1024 + 64 * 1024 + 4096;
constexpr uint16_t kMultiple = 0xffff;

enum class State : uint8_t { kReady, kBarrier, kWarp, kDone };

struct Fiber {
  void* sp = nullptr;
#if !defined(__x86_64__)
  ucontext_t ctx;
#endif
  uint3 tid{};
  State state = State::kDone;
  uint64_t value = 0, result = 0;
  int arg = 0, width = 32;
};

struct WarpState {
  unsigned arrived = 0, mask = 0;
  WarpOp op = WarpOp::kSync;
  const char* name = "";
  uint32_t gen = 0;  // completed collectives: orders the accesses of its lanes
};

// Per byte of the shared-memory region; epochs count block starts and barriers.
struct Shadow {
  uint32_t alloc;   // epoch at which the byte was allocated (valid in this block if >= epoch0)
  uint32_t write;   // epoch of the last write
  uint32_t read;    // epoch of the last read
  uint32_t wgen;    // writer's warp generation at the write
  uint32_t rgen;    // largest reader warp generation in the read epoch
  uint16_t writer;  // linear thread id
  uint16_t reader;  // linear thread id, or kMultiple
  int16_t rwarp;    // warp of all readers in the read epoch, or -1
  uint16_t pad;
};

struct StaticVar {
  const void* tag;
  size_t offset, bytes;
  const char* name;
};

struct Worker {
  Fiber fibers[kMaxThreads];
  WarpState warps[kMaxWarps];
  char* stacks = nullptr;
  char* region = nullptr;
  Shadow* shadow = nullptr;
  void* sched_sp = nullptr;
#if !defined(__x86_64__)
  ucontext_t sched_ctx;
#endif
  // the running block
  const KernelCall* call = nullptr;
  int nthreads = 0;
  int current = -1;  // linear id of the running fiber, -1 on the scheduler
  size_t dyn = 0, static_top = 0, static_total = 0;
  int64_t smem_limit = kDefaultSmem;
  std::vector<StaticVar> statics;
  uint32_t epoch = 0, epoch0 = 0;
  std::string error;
  // First read of shared memory not written in the block, reported at the end of
  // its barrier interval unless a race report (another thread writing it in the
  // same interval: a missing barrier) comes first.
  std::string uninitialised;

  Worker() {
    const size_t per = kStackBytes + kPage;  // a guard page below every stack
    stacks = static_cast<char*>(
        mmap(nullptr, per * kMaxThreads, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    TORCH_CHECK(stacks != MAP_FAILED, "SIMT emulation: cannot map the fiber stacks");
    for (int t = 0; t < kMaxThreads; ++t) mprotect(stacks + t * per, kPage, PROT_NONE);
    region = static_cast<char*>(
        mmap(nullptr, kRegionBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    TORCH_CHECK(region != MAP_FAILED, "SIMT emulation: cannot map the shared-memory arena");
    shadow = static_cast<Shadow*>(
        mmap(nullptr, kRegionBytes * sizeof(Shadow), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    TORCH_CHECK(shadow != MAP_FAILED, "SIMT emulation: cannot map the shared-memory shadow");
  }
  char* arena() const { return region + kFront; }
  char* stack_top(int t) const { return stacks + (t + 1) * (kStackBytes + kPage); }
};

thread_local Worker* tls_worker = nullptr;
// The worker whose block is running on this thread (the hooks look only at it).
thread_local Worker* tls_active = nullptr;

Worker& worker() {
  if (tls_worker == nullptr) tls_worker = new Worker();  // one per worker thread, kept for the process
  return *tls_worker;
}

std::mutex g_mutex;
std::map<std::string, int64_t>& launch_counts_map() {
  static std::map<std::string, int64_t> counts;
  return counts;
}
std::map<const void*, int64_t>& smem_attr_map() {
  static std::map<const void*, int64_t> attrs;
  return attrs;
}
std::atomic<int64_t> g_index32_limit{std::numeric_limits<int32_t>::max()};
std::atomic<int64_t> g_grid_yz_limit{65535};
std::atomic<int64_t> g_grid_x_limit{0};

std::string dim_str(unsigned x, unsigned y, unsigned z) {
  std::ostringstream s;
  s << "(" << x << ", " << y << ", " << z << ")";
  return s.str();
}

std::string where(const Worker& w) {
  std::ostringstream s;
  s << w.call->name << ", block " << dim_str(blockIdx.x, blockIdx.y, blockIdx.z);
  if (w.current >= 0) {
    const uint3& t = w.fibers[w.current].tid;
    s << ", thread " << dim_str(t.x, t.y, t.z);
  }
  return s.str();
}

[[maybe_unused]] std::string thread_str(const Worker& w, int linear) {
  const uint3& t = w.fibers[linear].tid;
  return dim_str(t.x, t.y, t.z);
}

void switch_to_scheduler(Worker& w) {
  Fiber& f = w.fibers[w.current];
#if defined(__x86_64__)
  simt_switch(&f.sp, w.sched_sp);
#else
  swapcontext(&f.ctx, &w.sched_ctx);
#endif
}

[[noreturn]] void fiber_exit(Worker& w) {
  w.fibers[w.current].state = State::kDone;
  switch_to_scheduler(w);
  __builtin_unreachable();
}

// Runs the kernel in a frame of its own that returns normally (fiber_entry never
// returns: under AddressSanitizer a frame with locals there would leave its stack
// redzones poisoned for the next block on the same stack).
__attribute__((noinline)) void run_kernel(Worker& w) {
  try {
    w.call->thunk(w.call->args);
  } catch (const std::exception& e) {  // must not unwind past the fiber's first frame
    if (w.error.empty()) w.error = where(w) + ": " + e.what();
  }
}

void fiber_entry() {
  Worker& w = *tls_active;
  run_kernel(w);
  fiber_exit(w);
}

#if defined(__x86_64__)
// Initial frame popped by simt_switch: control words, six registers, then the
// "return address" fiber_entry, placed so that fiber_entry starts with the stack
// alignment of a called function.
void* initial_sp(char* top) {
  auto* sp = reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(top) & ~uintptr_t{15});
  *--sp = 0;  // fiber_entry's own return address: never used
  *--sp = reinterpret_cast<uint64_t>(&fiber_entry);
  for (int i = 0; i < 6; ++i) *--sp = 0;
  uint32_t mxcsr;
  uint16_t fpucw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  *--sp = static_cast<uint64_t>(mxcsr) | (static_cast<uint64_t>(fpucw) << 32);
  return sp;
}
#endif

std::string mask_lanes(unsigned mask) {
  std::ostringstream s;
  s << "{";
  bool first = true;
  for (int l = 0; l < 32; ++l) {
    if ((mask >> l) & 1u) {
      s << (first ? "" : ", ") << l;
      first = false;
    }
  }
  s << "}";
  return s.str();
}

std::string hex(unsigned v) {
  std::ostringstream s;
  s << "0x" << std::hex << v;
  return s.str();
}

// Describes a shared-memory offset (relative to the arena) for error messages.
[[maybe_unused]] std::string describe_shared(const Worker& w, int64_t off) {
  std::ostringstream s;
  if (off >= 0 && static_cast<size_t>(off) < w.dyn) {
    s << "dynamic shared memory + " << off << " (of " << w.dyn << " bytes)";
    return s.str();
  }
  const StaticVar* best = nullptr;
  for (const StaticVar& v : w.statics) {
    if (off >= static_cast<int64_t>(v.offset) && off < static_cast<int64_t>(v.offset + v.bytes)) {
      s << "`" << v.name << "` + " << off - static_cast<int64_t>(v.offset) << " (of " << v.bytes << " bytes)";
      return s.str();
    }
    if (off >= static_cast<int64_t>(v.offset + v.bytes) && (best == nullptr || v.offset > best->offset)) best = &v;
  }
  if (best != nullptr) {
    s << off - static_cast<int64_t>(best->offset + best->bytes) << " bytes past the end of `" << best->name << "` ("
      << best->bytes << " bytes)";
  } else if (off >= static_cast<int64_t>(w.dyn) && w.dyn > 0) {
    s << off - static_cast<int64_t>(w.dyn) << " bytes past the end of dynamic shared memory (" << w.dyn
      << " bytes)";
  } else if (off < 0) {
    s << -off << " bytes before the start of shared memory";
  } else {
    s << "offset " << off << " of an unallocated part of shared memory";
  }
  return s.str();
}

void run_block(Worker& w, const KernelCall& call, const LaunchConfig& cfg, int64_t dyn, uint3 bidx) {
  blockIdx = bidx;
  blockDim = cfg.block;
  gridDim = cfg.grid;
  w.call = &call;
  w.nthreads = static_cast<int>(cfg.block.x * cfg.block.y * cfg.block.z);
  w.dyn = static_cast<size_t>(dyn);
  w.static_top = (w.dyn + 15) / 16 * 16 + 16;
  w.static_total = 0;
  w.statics.clear();
  w.error.clear();
  w.uninitialised.clear();
  w.epoch += 2;
  w.epoch0 = w.epoch;
  for (int k = 0; k < (w.nthreads + 31) / 32; ++k) w.warps[k] = WarpState{};
  for (size_t i = 0; i < w.dyn; ++i) w.shadow[kFront + i].alloc = w.epoch;

  for (int t = 0; t < w.nthreads; ++t) {
    Fiber& f = w.fibers[t];
    f.tid = uint3{static_cast<unsigned>(t % cfg.block.x), static_cast<unsigned>((t / cfg.block.x) % cfg.block.y),
                  static_cast<unsigned>(t / (cfg.block.x * cfg.block.y))};
    f.state = State::kReady;
#if defined(__x86_64__)
    f.sp = initial_sp(w.stack_top(t));
#else
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = w.stack_top(t) - kStackBytes;
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, &fiber_entry, 0);
#endif
  }

  tls_active = &w;
  for (;;) {
    bool ran = false;
    for (int t = 0; t < w.nthreads; ++t) {
      Fiber& f = w.fibers[t];
      if (f.state != State::kReady) continue;
      w.current = t;
      threadIdx = f.tid;
#if defined(__x86_64__)
      simt_switch(&w.sched_sp, f.sp);
#else
      swapcontext(&w.sched_ctx, &f.ctx);
#endif
      w.current = -1;
      ran = true;
      if (!w.error.empty()) {
#if defined(SHUFFLENET_SIMT_ASAN)
        // The block's fibers are abandoned mid-frame: clear their stack redzones.
        __asan_unpoison_memory_region(w.stacks, (kStackBytes + kPage) * w.nthreads);
#endif
        tls_active = nullptr;
        return;
      }
    }
    if (ran) continue;
    if (!w.uninitialised.empty()) {
      w.error = w.uninitialised;
      break;
    }
    int done = 0, at_barrier = 0, at_warp = 0;
    for (int t = 0; t < w.nthreads; ++t) {
      const State s = w.fibers[t].state;
      done += s == State::kDone;
      at_barrier += s == State::kBarrier;
      at_warp += s == State::kWarp;
    }
    if (done == w.nthreads) break;
    if (at_warp == 0 && done == 0) {  // every thread waits at __syncthreads()
      for (int t = 0; t < w.nthreads; ++t) w.fibers[t].state = State::kReady;
      ++w.epoch;
      continue;
    }
    std::ostringstream s;
    s << where(w) << ": deadlock: ";
    if (at_warp > 0) {
      for (int k = 0; k < (w.nthreads + 31) / 32; ++k) {
        const WarpState& ws = w.warps[k];
        if (ws.arrived == 0) continue;
        s << "warp " << k << ": lanes " << mask_lanes(ws.arrived) << " wait in " << ws.name << "(mask " << hex(ws.mask)
          << ") for lanes " << mask_lanes(ws.mask & ~ws.arrived)
          << ", which exited or wait elsewhere (a warp collective must be reached by every lane of its mask); ";
      }
    }
    if (at_barrier > 0) {
      s << at_barrier << " of " << w.nthreads << " threads wait at __syncthreads() while " << done
        << " exited and " << at_warp
        << " wait in warp collectives (__syncthreads() must be reached by every thread of the block)";
    }
    w.error = s.str();
    break;
  }
#if defined(SHUFFLENET_SIMT_ASAN)
  if (!w.error.empty()) __asan_unpoison_memory_region(w.stacks, (kStackBytes + kPage) * w.nthreads);
#endif
  tls_active = nullptr;
}

}  // namespace

// ---- fiber-side API ---------------------------------------------------------------

[[noreturn]] void fail(const std::string& what) {
  Worker* w = tls_active;
  if (w == nullptr || w->current < 0) TORCH_CHECK(false, "SIMT emulation: ", what);
  if (w->error.empty()) w->error = where(*w) + ": " + what;
  fiber_exit(*w);
}

void syncthreads() {
  Worker& w = *tls_active;
  w.fibers[w.current].state = State::kBarrier;
  switch_to_scheduler(w);
}

uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char* name) {
  Worker& w = *tls_active;
  const int me = w.current;
  const int warp = me / 32, lane = me % 32;
  const int warp_threads = std::min(32, w.nthreads - warp * 32);
  const unsigned existing = warp_threads == 32 ? 0xffffffffu : ((1u << warp_threads) - 1u);
  if (((mask >> lane) & 1u) == 0) {
    fail(std::string(name) + ": mask " + hex(mask) + " does not include the calling lane " + std::to_string(lane));
  }
  if ((mask & ~existing) != 0) {
    fail(std::string(name) + ": mask " + hex(mask) + " names lanes " + mask_lanes(mask & ~existing) +
         " that this warp does not have (block of " + std::to_string(w.nthreads) + " threads)");
  }
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
    fail(std::string(name) + ": width " + std::to_string(width) + " is not a power of two in [1, 32]");
  }
  WarpState& ws = w.warps[warp];
  if (ws.arrived == 0) {
    ws.mask = mask;
    ws.op = op;
    ws.name = name;
  } else if (ws.mask != mask || ws.op != op) {
    fail(std::string(name) + "(mask " + hex(mask) + ") while lanes " + mask_lanes(ws.arrived) + " of warp " +
         std::to_string(warp) + " wait in " + ws.name + "(mask " + hex(ws.mask) +
         "): the lanes of a warp collective must call the same collective with the same mask");
  }
  Fiber& me_f = w.fibers[me];
  me_f.value = value;
  me_f.arg = arg;
  me_f.width = width;
  ws.arrived |= 1u << lane;
  if (ws.arrived != mask) {
    me_f.state = State::kWarp;
    switch_to_scheduler(w);
    return me_f.result;
  }
  // Every lane of the mask is here: compute all results.
  const int base = warp * 32;
  uint64_t ballot = 0;
  bool any = false, all = true;
  for (int l = 0; l < 32; ++l) {
    if (((mask >> l) & 1u) == 0) continue;
    const bool pred = w.fibers[base + l].value != 0;
    ballot |= static_cast<uint64_t>(pred) << l;
    any = any || pred;
    all = all && pred;
  }
  for (int l = 0; l < 32; ++l) {
    if (((mask >> l) & 1u) == 0) continue;
    Fiber& f = w.fibers[base + l];
    const int seg = (l / f.width) * f.width;
    int src = l;
    switch (op) {
      case WarpOp::kShflIdx:
        src = seg + (((f.arg % f.width) + f.width) % f.width);
        break;
      case WarpOp::kShflUp:
        src = l - f.arg >= seg ? l - f.arg : l;
        break;
      case WarpOp::kShflDown:
        src = l + f.arg < seg + f.width ? l + f.arg : l;
        break;
      case WarpOp::kShflXor:
        src = ((l ^ f.arg) & 31) / f.width == l / f.width ? ((l ^ f.arg) & 31) : l;
        break;
      default:
        break;
    }
    if (((mask >> src) & 1u) == 0) {
      fail(std::string(name) + ": lane " + std::to_string(l) + " reads lane " + std::to_string(src) +
           ", which is not in mask " + hex(mask) + " (undefined on the GPU)");
    }
    switch (op) {
      case WarpOp::kBallot:
        f.result = ballot;
        break;
      case WarpOp::kAny:
        f.result = any;
        break;
      case WarpOp::kAll:
        f.result = all;
        break;
      case WarpOp::kSync:
        f.result = 0;
        break;
      default:
        f.result = w.fibers[base + src].value;
    }
    if (base + l != me) f.state = State::kReady;
  }
  ws.arrived = 0;
  ++ws.gen;
  return me_f.result;
}

void* dynamic_shared() { return tls_active->arena(); }

void* static_shared(const void* tag, size_t bytes, const char* name) {
  Worker& w = *tls_active;
  for (const StaticVar& v : w.statics) {
    if (v.tag == tag) return w.arena() + v.offset;
  }
  const size_t offset = w.static_top;
  w.static_total += bytes;
  const int64_t limit = max_dynamic_smem(w.call->kernel_id) > 0
                            ? static_cast<int64_t>(device_properties()->sharedMemPerBlockOptin)
                            : kDefaultSmem;
  if (static_cast<int64_t>(w.static_total) > kDefaultSmem ||
      static_cast<int64_t>(w.static_total + w.dyn) > limit) {
    fail("too many resources requested for launch: " + std::to_string(w.static_total) + " bytes of static and " +
         std::to_string(w.dyn) + " bytes of dynamic shared memory exceed the limit of " + std::to_string(limit) +
         " bytes (static shared memory at most 49152)");
  }
  w.statics.push_back(StaticVar{tag, offset, bytes, name});
  w.static_top = (offset + bytes + 15) / 16 * 16 + 16;  // 16 bytes of redzone after every variable
  for (size_t i = 0; i < bytes; ++i) w.shadow[kFront + offset + i].alloc = w.epoch0;
  return w.arena() + offset;
}

// ---- launches ---------------------------------------------------------------------

const DeviceProp* device_properties() {
  static const DeviceProp prop = [] {
    DeviceProp p{};
    std::snprintf(p.name, sizeof(p.name), "%s", "NVIDIA H200 (SIMT emulation)");
    p.major = 9;
    p.minor = 0;
    p.multiProcessorCount = 132;
    p.maxThreadsPerBlock = 1024;
    p.maxThreadsPerMultiProcessor = 2048;
    p.maxThreadsDim[0] = 1024;
    p.maxThreadsDim[1] = 1024;
    p.maxThreadsDim[2] = 64;
    p.maxGridSize[0] = std::numeric_limits<int32_t>::max();
    p.maxGridSize[1] = 65535;
    p.maxGridSize[2] = 65535;
    p.warpSize = 32;
    p.regsPerBlock = 65536;
    p.regsPerMultiprocessor = 65536;
    p.sharedMemPerBlock = 48 * 1024;
    p.sharedMemPerBlockOptin = 227 * 1024;
    p.sharedMemPerMultiprocessor = 228 * 1024;
    p.totalGlobalMem = size_t{141} << 30;
    p.l2CacheSize = 60 * 1024 * 1024;
    return p;
  }();
  return &prop;
}

int64_t max_dynamic_smem(const void* kernel_id) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = smem_attr_map().find(kernel_id);
  return it == smem_attr_map().end() ? 0 : it->second;
}

void set_max_dynamic_smem(const void* kernel_id, int64_t bytes) {
  std::lock_guard<std::mutex> lock(g_mutex);
  smem_attr_map()[kernel_id] = bytes;
}

int64_t index32_limit() { return g_index32_limit.load(); }
int64_t grid_x_limit() { return g_grid_x_limit.load(); }
int64_t grid_yz_limit() { return g_grid_yz_limit.load(); }

void launch(const KernelCall& call, const LaunchConfig& cfg) {
  const DeviceProp& prop = *device_properties();
  const dim3 g = cfg.grid, b = cfg.block;
  auto invalid = [&](const std::string& why) {
    TORCH_CHECK(false, "CUDA error: invalid configuration argument (launch of ", call.name, " with grid ",
                dim_str(g.x, g.y, g.z), ", block ", dim_str(b.x, b.y, b.z), ": ", why, ")");
  };
  if (cfg.grid_x_requested < 1 || g.x < 1 || g.y < 1 || g.z < 1) invalid("every grid dimension must be >= 1");
  if (cfg.grid_x_requested > prop.maxGridSize[0]) invalid("grid.x is at most 2^31 - 1");
  if (g.y > 65535u || g.z > 65535u) invalid("grid.y and grid.z are at most 65535");
  if (b.x < 1 || b.y < 1 || b.z < 1) invalid("every block dimension must be >= 1");
  if (b.x > 1024u || b.y > 1024u || b.z > 64u) invalid("block dimensions are at most (1024, 1024, 64)");
  const int64_t threads = int64_t{b.x} * b.y * b.z;
  if (threads > prop.maxThreadsPerBlock) {
    invalid(std::to_string(threads) + " threads per block, the limit is " + std::to_string(prop.maxThreadsPerBlock));
  }
  const int64_t attr = max_dynamic_smem(call.kernel_id);
  const int64_t smem_limit = attr > 0 ? attr : kDefaultSmem;
  TORCH_CHECK(cfg.dynamic_smem >= 0 && cfg.dynamic_smem <= smem_limit,
              "CUDA error: invalid argument (launch of ", call.name, ": ", cfg.dynamic_smem,
              " bytes of dynamic shared memory, the kernel's limit is ", smem_limit,
              attr > 0 ? "" : "; raise it with cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize)", ")");
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    ++launch_counts_map()[call.name];
  }

  const int64_t blocks = int64_t{g.x} * g.y * g.z;
  std::atomic<bool> failed{false};
  std::string first_error;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    Worker& w = worker();
    for (int64_t i = begin; i < end && !failed.load(std::memory_order_relaxed); ++i) {
      const uint3 bidx{static_cast<unsigned>(i % g.x), static_cast<unsigned>((i / g.x) % g.y),
                       static_cast<unsigned>(i / (int64_t{g.x} * g.y))};
      run_block(w, call, cfg, cfg.dynamic_smem, bidx);
      if (!w.error.empty()) {
        std::lock_guard<std::mutex> lock(g_mutex);
        if (!failed.exchange(true)) first_error = w.error;
        break;
      }
    }
  });
  TORCH_CHECK(!failed.load(), "SIMT emulation: ", first_error);
}

// ---- access hooks -----------------------------------------------------------------

#if SIMT_HOOKS
namespace {

SIMT_NO_INSTRUMENT void shared_access(Worker& w, size_t roff, size_t n, bool write) {
  const int me = w.current;
  const int warp = me / 32;
  const uint32_t gen = w.warps[warp].gen;
  const uint32_t e = w.epoch;
  for (size_t i = 0; i < n && roff + i < kRegionBytes; ++i) {
    Shadow& s = w.shadow[roff + i];
    const int64_t off = static_cast<int64_t>(roff + i) - static_cast<int64_t>(kFront);
    if (s.alloc < w.epoch0) {
      fail(std::string("out-of-bounds shared-memory ") + (write ? "write" : "read") + " of " + std::to_string(n) +
           " bytes at " + describe_shared(w, off));
    }
    if (s.write == e && s.writer != me && !(s.writer / 32 == warp && gen > s.wgen)) {
      fail(std::string("shared-memory race: thread ") + thread_str(w, s.writer) + " wrote " + describe_shared(w, off) +
           " and thread " + thread_str(w, me) + (write ? " writes" : " reads") +
           " it in the same barrier interval (no __syncthreads() between them)");
    }
    if (write) {
      if (s.read == e && s.reader != me && !(s.rwarp == warp && gen > s.rgen)) {
        fail(std::string("shared-memory race: thread ") +
             (s.reader == kMultiple ? std::string("(several)") : thread_str(w, s.reader)) + " read " +
             describe_shared(w, off) + " and thread " + thread_str(w, me) +
             " writes it in the same barrier interval (no __syncthreads() between them)");
      }
      s.write = e;
      s.writer = static_cast<uint16_t>(me);
      s.wgen = gen;
    } else {
      if (s.write < w.epoch0 && w.uninitialised.empty()) {
        w.uninitialised = where(w) + ": read of uninitialised shared memory: " + describe_shared(w, off) +
                          " was not written by any thread of this block before the read";
      }
      if (s.read != e) {
        s.read = e;
        s.reader = static_cast<uint16_t>(me);
        s.rwarp = static_cast<int16_t>(warp);
        s.rgen = gen;
      } else {
        if (s.reader != me) s.reader = kMultiple;
        if (s.rwarp != warp) s.rwarp = -1;
        s.rgen = std::max(s.rgen, gen);
      }
    }
  }
}

SIMT_NO_INSTRUMENT void on_access(uintptr_t addr, size_t n, bool write) {
  Worker* w = tls_active;
  if (w == nullptr || w->current < 0) return;
  if (n == 16 && (addr & 15u) != 0) {
    fail(std::string("misaligned address: 16-byte ") + (write ? "store" : "load") + " at an address " +
         std::to_string(addr & 15u) + " bytes past a 16-byte boundary");
  }
  const uintptr_t roff = addr - reinterpret_cast<uintptr_t>(w->region);
  if (roff >= kRegionBytes) return;
  shared_access(*w, roff, n, write);
}

}  // namespace
#endif

}  // namespace simt

#if SIMT_HOOKS
extern "C" {
#define SIMT_DEFINE_HOOKS(N)                                                                                   \
  SIMT_NO_INSTRUMENT void __asan_load##N(uintptr_t a) { simt::on_access(a, N, false); }                      \
  SIMT_NO_INSTRUMENT void __asan_store##N(uintptr_t a) { simt::on_access(a, N, true); }                      \
  SIMT_NO_INSTRUMENT void __asan_load##N##_noabort(uintptr_t a) { simt::on_access(a, N, false); }            \
  SIMT_NO_INSTRUMENT void __asan_store##N##_noabort(uintptr_t a) { simt::on_access(a, N, true); }
SIMT_DEFINE_HOOKS(1)
SIMT_DEFINE_HOOKS(2)
SIMT_DEFINE_HOOKS(4)
SIMT_DEFINE_HOOKS(8)
SIMT_DEFINE_HOOKS(16)
SIMT_NO_INSTRUMENT void __asan_loadN(uintptr_t a, size_t n) { simt::on_access(a, n, false); }
SIMT_NO_INSTRUMENT void __asan_storeN(uintptr_t a, size_t n) { simt::on_access(a, n, true); }
SIMT_NO_INSTRUMENT void __asan_loadN_noabort(uintptr_t a, size_t n) { simt::on_access(a, n, false); }
SIMT_NO_INSTRUMENT void __asan_storeN_noabort(uintptr_t a, size_t n) { simt::on_access(a, n, true); }
SIMT_NO_INSTRUMENT void __asan_init() {}
SIMT_NO_INSTRUMENT void __asan_version_mismatch_check_v8() {}
SIMT_NO_INSTRUMENT void __asan_handle_no_return() {}
SIMT_NO_INSTRUMENT void __asan_before_dynamic_init(const char*) {}
SIMT_NO_INSTRUMENT void __asan_after_dynamic_init() {}
}
#endif

// ---- test hooks (csrc/simt/module.cpp) --------------------------------------------
namespace simt {

std::map<std::string, int64_t> launch_counts() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return launch_counts_map();
}
void reset_launch_counts() {
  std::lock_guard<std::mutex> lock(g_mutex);
  launch_counts_map().clear();
}
void set_index32_limit(int64_t limit) { g_index32_limit.store(limit); }
void set_grid_limits(int64_t grid_x, int64_t grid_yz) {
  g_grid_x_limit.store(grid_x);
  g_grid_yz_limit.store(grid_yz);
}
bool access_checks_enabled() { return SIMT_HOOKS != 0; }

}  // namespace simt
