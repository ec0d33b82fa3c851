// SIMT emulation: the CUDA execution model on the CPU, so the kernels of
// csrc/cuda run unchanged (compiled by the host C++ compiler) on CPU tensors.
//
// A launch runs its grid block by block (blocks in parallel over at::parallel_for
// workers). Inside a block every CUDA thread is a fiber with its own stack;
// fibers switch only at __syncthreads() and at warp collectives (__shfl_*_sync,
// __ballot_sync, __syncwarp, ...), which wait for exactly the lanes of their mask.
// threadIdx / blockIdx / blockDim / gridDim are per worker thread and set at every
// switch. Shared memory (static and dynamic) lives in a per-block arena.
//
// What CUDA would reject or the GPU would fault on raises a RuntimeError naming
// the kernel: invalid launch configurations, too much shared memory, misaligned
// vector accesses, barrier or warp-collective divergence. With the access hooks
// compiled in (the default build), every load and store of the kernel code is
// seen: shared-memory accesses out of their allocation, reads of shared memory
// not written in the block, and races (a write by one thread and an access by
// another in the same barrier interval) are reported too.
//
// Only csrc/simt/*.cpp include this header (through csrc/cuda/cuda_utils.cuh
// when SHUFFLENET_SIMT is defined); the CUDA build never sees it.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- CUDA keywords ----------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

// ---- built-in vector and index types -----------------------------------------
struct uint3 {
  unsigned x, y, z;
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace simt {

// Raises from host code; from kernel code (a fiber) records the error and ends
// the block, since the faulting access must not happen.
[[noreturn]] void fail(const std::string& what);

// The GPU faults on a vector access whose address is not a multiple of its size.
inline void check_vector_access(const void* p, size_t bytes, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % bytes != 0) {
    fail(std::string("misaligned address: ") + std::to_string(bytes) + "-byte vector " + what + " at " +
         std::to_string(reinterpret_cast<uintptr_t>(p)) + " (address mod " + std::to_string(bytes) + " = " +
         std::to_string(reinterpret_cast<uintptr_t>(p) % bytes) + ")");
  }
}

}  // namespace simt

// A CUDA vector type: members x, y, z, w; copying one from or into memory checks
// the alignment the GPU requires.
#define SIMT_VECTOR_TYPE(NAME, T, ALIGN, ...)                                  \
  struct alignas(ALIGN) NAME {                                                 \
    T __VA_ARGS__;                                                             \
    NAME() = default;                                                          \
    NAME(const NAME& o) {                                                      \
      ::simt::check_vector_access(&o, ALIGN, "load");                          \
      std::memcpy(static_cast<void*>(this), &o, sizeof(NAME));                 \
    }                                                                          \
    NAME& operator=(const NAME& o) {                                           \
      ::simt::check_vector_access(&o, ALIGN, "load");                          \
      ::simt::check_vector_access(this, ALIGN, "store");                       \
      std::memcpy(static_cast<void*>(this), &o, sizeof(NAME));                 \
      return *this;                                                            \
    }                                                                          \
  }

SIMT_VECTOR_TYPE(uint4, unsigned, 16, x, y, z, w);
SIMT_VECTOR_TYPE(int4, int, 16, x, y, z, w);
SIMT_VECTOR_TYPE(float4, float, 16, x, y, z, w);
SIMT_VECTOR_TYPE(uint2, unsigned, 8, x, y);
SIMT_VECTOR_TYPE(int2, int, 8, x, y);
SIMT_VECTOR_TYPE(float2, float, 8, x, y);

inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) {
  uint4 r;
  r.x = x, r.y = y, r.z = z, r.w = w;
  return r;
}
inline float4 make_float4(float x, float y, float z, float w) {
  float4 r;
  r.x = x, r.y = y, r.z = z, r.w = w;
  return r;
}
inline float2 make_float2(float x, float y) {
  float2 r;
  r.x = x, r.y = y;
  return r;
}

// ---- half types ----------------------------------------------------------------
// c10::Half and c10::BFloat16 convert from float with round-to-nearest-even, as
// __float2half_rn / __float2bfloat16_rn do; arithmetic goes through float and
// rounds once, which is exact for + - * / of two half values.
using __half = c10::Half;
using __nv_bfloat16 = c10::BFloat16;
SIMT_VECTOR_TYPE(__half2, __half, 4, x, y);
SIMT_VECTOR_TYPE(__nv_bfloat162, __nv_bfloat16, 4, x, y);

inline __half __float2half(float v) { return __half(v); }
inline __half __float2half_rn(float v) { return __half(v); }
inline float __half2float(__half v) { return static_cast<float>(v); }
inline __nv_bfloat16 __float2bfloat16(float v) { return __nv_bfloat16(v); }
inline __nv_bfloat16 __float2bfloat16_rn(float v) { return __nv_bfloat16(v); }
inline float __bfloat162float(__nv_bfloat16 v) { return static_cast<float>(v); }
inline __half2 __floats2half2_rn(float a, float b) {
  __half2 r;
  r.x = __half(a), r.y = __half(b);
  return r;
}
inline float2 __half22float2(__half2 v) { return make_float2(static_cast<float>(v.x), static_cast<float>(v.y)); }
inline __half __hadd(__half a, __half b) { return __half(static_cast<float>(a) + static_cast<float>(b)); }
inline __half __hmul(__half a, __half b) { return __half(static_cast<float>(a) * static_cast<float>(b)); }

// ---- per-thread indices (set by the scheduler at every fiber switch) -----------
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;
constexpr int warpSize = 32;

// ---- synchronisation and warp collectives --------------------------------------
namespace simt {

enum class WarpOp : int { kSync, kShflIdx, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll };

void syncthreads();
uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char* name);

template <typename T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffles move up to 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

}  // namespace simt

inline void __syncthreads() { ::simt::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::simt::warp_collective(::simt::WarpOp::kSync, mask, 0, 0, 32, "__syncwarp");
}
template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  return ::simt::from_bits<T>(
      ::simt::warp_collective(::simt::WarpOp::kShflIdx, mask, ::simt::to_bits(v), src_lane, width, "__shfl_sync"));
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::simt::from_bits<T>(::simt::warp_collective(::simt::WarpOp::kShflUp, mask, ::simt::to_bits(v),
                                                      static_cast<int>(delta), width, "__shfl_up_sync"));
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::simt::from_bits<T>(::simt::warp_collective(::simt::WarpOp::kShflDown, mask, ::simt::to_bits(v),
                                                      static_cast<int>(delta), width, "__shfl_down_sync"));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return ::simt::from_bits<T>(
      ::simt::warp_collective(::simt::WarpOp::kShflXor, mask, ::simt::to_bits(v), lane_mask, width, "__shfl_xor_sync"));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return static_cast<unsigned>(
      ::simt::warp_collective(::simt::WarpOp::kBallot, mask, pred != 0, 0, 32, "__ballot_sync"));
}
inline int __any_sync(unsigned mask, int pred) {
  return static_cast<int>(::simt::warp_collective(::simt::WarpOp::kAny, mask, pred != 0, 0, 32, "__any_sync"));
}
inline int __all_sync(unsigned mask, int pred) {
  return static_cast<int>(::simt::warp_collective(::simt::WarpOp::kAll, mask, pred != 0, 0, 32, "__all_sync"));
}

// ---- shared memory ---------------------------------------------------------------
namespace simt {

// The block's dynamic shared memory (its size comes from the launch).
void* dynamic_shared();
// Static shared variable `tag` of the running block: allocated by the first thread
// that reaches its declaration, the same storage for every other thread.
void* static_shared(const void* tag, size_t bytes, const char* name);

template <typename T>
T* static_shared_as(const void* tag, const char* name) {
  return static_cast<T*>(static_shared(tag, sizeof(T), name));
}

}  // namespace simt

#define SIMT_CAT_(a, b) a##b
#define SIMT_CAT(a, b) SIMT_CAT_(a, b)
// `__shared__ type name dims;` of CUDA.
#define SHUFFLENET_SHARED(type, name, dims)         \
  static const char SIMT_CAT(simt_tag_, name) = 0; \
  type(&name) dims = *::simt::static_shared_as<type dims>(&SIMT_CAT(simt_tag_, name), #name)
// `extern __shared__ __align__(16) type name[];` of CUDA.
#define SHUFFLENET_DYNAMIC_SHARED(type, name) type* const name = static_cast<type*>(::simt::dynamic_shared())

// ---- launches ----------------------------------------------------------------------
namespace simt {

struct Stream {
  int64_t id = 0;
};

struct LaunchConfig {
  dim3 grid, block;
  int64_t grid_x_requested;  // before narrowing to unsigned: a too-large grid is an error
  int64_t dynamic_smem;
};

// Type-erased kernel: calls the kernel with the launch's arguments.
struct KernelCall {
  const char* name;       // instantiation, e.g. "gather_planes_kernel<float, int, 4>"
  const void* kernel_id;  // the kernel's address (cudaFuncSetAttribute key)
  void (*thunk)(const void* args);
  const void* args;
};

// Validates the configuration, runs every block, raises on any error.
void launch(const KernelCall& call, const LaunchConfig& config);

// The dynamic shared-memory limit set by cudaFuncSetAttribute (0: default).
int64_t max_dynamic_smem(const void* kernel_id);
void set_max_dynamic_smem(const void* kernel_id, int64_t bytes);

template <auto Kernel>
const char* kernel_name() {
  static const std::string name = [](std::string s) {
    // "... [with auto Kernel = shufflenet::cuda::{anonymous}::k<float, int>]"
    const size_t eq = s.find("Kernel = ");
    s = eq == std::string::npos ? s : s.substr(eq + 9);
    if (!s.empty() && s.back() == ']') s.pop_back();
    if (!s.empty() && s.front() == '&') s.erase(0, 1);
    const size_t lt = s.find('<');
    const size_t colon = s.rfind("::", lt);
    if (colon != std::string::npos) s = s.substr(colon + 2);
    return s;
  }(__PRETTY_FUNCTION__);
  return name.c_str();
}

template <typename F>
struct KernelTraits;
template <typename... P>
struct KernelTraits<void (*)(P...)> {
  using Args = std::tuple<std::decay_t<P>...>;
};

template <typename G>
int64_t grid_extent(const G& g) {
  if constexpr (std::is_integral_v<G>) {
    return static_cast<int64_t>(g);
  } else {
    return static_cast<int64_t>(g.x);
  }
}
inline dim3 to_dim3(const dim3& d) { return d; }
template <typename I, typename = std::enable_if_t<std::is_integral_v<I>>>
dim3 to_dim3(I v) {
  return dim3(static_cast<unsigned>(v));
}

// kernel<<<grid, block, smem, stream>>>(args...)
template <auto Kernel>
class Launch {
 public:
  template <typename G, typename B>
  Launch(const G& grid, const B& block, int64_t smem, Stream) {
    config_.grid = to_dim3(grid);
    config_.grid_x_requested = grid_extent(grid);
    config_.block = to_dim3(block);
    config_.dynamic_smem = smem;
  }

  template <typename... A>
  void operator()(A&&... args) const {
    using Args = typename KernelTraits<decltype(Kernel)>::Args;
    // Converted to the kernel's parameter types once, as the launch does.
    const Args packed(std::forward<A>(args)...);
    const KernelCall call{kernel_name<Kernel>(), reinterpret_cast<const void*>(Kernel),
                          [](const void* p) { std::apply(Kernel, *static_cast<const Args*>(p)); }, &packed};
    launch(call, config_);
  }

 private:
  LaunchConfig config_{};
};

// ---- runtime shims: what the host code asks of the CUDA runtime -----------------
// The properties of an H200 (sm_90): the launch checks and the host code's sizing
// see the device the kernels are written for.
struct DeviceProp {
  char name[64];
  int major, minor;
  int multiProcessorCount;
  int maxThreadsPerBlock;
  int maxThreadsPerMultiProcessor;
  int maxThreadsDim[3];
  int maxGridSize[3];
  int warpSize;
  int regsPerBlock;
  int regsPerMultiprocessor;
  size_t sharedMemPerBlock;
  size_t sharedMemPerBlockOptin;
  size_t sharedMemPerMultiprocessor;
  size_t totalGlobalMem;
  int l2CacheSize;
};
const DeviceProp* device_properties();

inline Stream current_stream(c10::DeviceIndex = -1) { return Stream{}; }

// CUDAGuard: the emulated kernels take CPU tensors.
class DeviceGuard {
 public:
  explicit DeviceGuard(c10::Device device) {
    TORCH_CHECK(device.is_cpu(), "the SIMT emulation runs the CUDA kernels on CPU tensors, got a tensor on ", device);
  }
};

// Test hook: the largest offset the 32-bit index instantiations may address
// (INT32_MAX unless a test lowers it; 0 forces the 64-bit instantiations).
int64_t index32_limit();
// Test hooks: the most blocks along x the launchers choose (0: the device's own
// sizing) and the largest grid.y / grid.z (65535). Tests lower them so that small
// tensors run the loops large ones run; the launch checks keep the hardware limits.
int64_t grid_x_limit();
int64_t grid_yz_limit();

}  // namespace simt

namespace at::cuda {
using ::simt::DeviceProp;
inline ::simt::Stream getCurrentCUDAStream(c10::DeviceIndex device = -1) { return ::simt::current_stream(device); }
inline const ::simt::DeviceProp* getCurrentDeviceProperties() { return ::simt::device_properties(); }
}  // namespace at::cuda
namespace c10::cuda {
using CUDAGuard = ::simt::DeviceGuard;
}  // namespace c10::cuda

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
  }
  return "unknown error";
}

template <typename... P>
cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      static_cast<size_t>(value) > ::simt::device_properties()->sharedMemPerBlockOptin) {
    return cudaErrorInvalidValue;
  }
  ::simt::set_max_dynamic_smem(reinterpret_cast<const void*>(kernel), value);
  return cudaSuccess;
}

#define C10_CUDA_CHECK(EXPR)                                                                    \
  do {                                                                                          \
    const cudaError_t simt_err_ = (EXPR);                                                       \
    TORCH_CHECK(simt_err_ == cudaSuccess, "CUDA error: ", cudaGetErrorString(simt_err_));      \
  } while (0)
// Launch errors raise at the launch itself.
#define C10_CUDA_KERNEL_LAUNCH_CHECK() \
  do {                                 \
  } while (0)

// kernel<<<grid, block, smem, stream>>>(args) is written
// SHUFFLENET_LAUNCH(grid, block, smem, stream, kernel)(args). (The address is also
// taken outside the template argument: gcc does not instantiate a function
// template whose specialisation appears only as a template argument.)
#define SHUFFLENET_LAUNCH(grid, block, smem, stream, ...) \
  (static_cast<void>(&__VA_ARGS__), ::simt::Launch<&__VA_ARGS__>(grid, block, smem, stream))

// The CUDA host functions register for CPU tensors in namespace shufflenet_simt.
#define SHUFFLENET_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(shufflenet_simt, CPU, m)

// nvcuda::wmma (the warp matrix API of <mma.h>) for the tensor-core kernels.
#include "simt/wmma.h"
