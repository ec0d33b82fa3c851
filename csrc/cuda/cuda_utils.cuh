// Device utilities shared by the CUDA kernel files: index-type selection,
// alignment tests and width selection for vector access (16, 8 or 4 bytes),
// launch sizing and small device helpers. Private to csrc/cuda.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <type_traits>

#ifdef SHUFFLENET_SIMT
// The emulation build (csrc/simt): the same kernels on the CPU. simt.h defines
// the macros below for it.
#include "simt/simt.h"
#else
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

// The few places where the kernel text differs from plain CUDA, so that the
// emulation build compiles the same source:
//   SHUFFLENET_LAUNCH(grid, block, smem, stream, kernel)(args)
//       = kernel<<<grid, block, smem, stream>>>(args)
//   SHUFFLENET_SHARED(type, name, dims)   = __shared__ type name dims
//   SHUFFLENET_DYNAMIC_SHARED(type, name) = extern __shared__ __align__(16) type name[]
#define SHUFFLENET_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#define SHUFFLENET_SHARED(type, name, dims) __shared__ type name dims
#define SHUFFLENET_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
#define SHUFFLENET_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(shufflenet, CUDA, m)
#endif

// The CUDA kernels' dtypes: float32, float16, bfloat16 (float64 is CPU only and
// rejected by the shared argument checks, so it is not compiled here).
#define SHUFFLENET_DISPATCH_CUDA_TYPES(TYPE, NAME, ...)                  \
  AT_DISPATCH_SWITCH(TYPE, NAME, AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) \
                         AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__)          \
                             AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))

namespace shufflenet::cuda {

// Threads of a one-dimensional launch unless a kernel says otherwise.
constexpr int kThreads = 256;
// Largest grid extent in y and z the launchers use: the hardware limit, 65535 (a
// test hook of the emulation build can lower it, so that small tensors reach the
// loops over grid.y).
inline int64_t max_grid_yz() {
#ifdef SHUFFLENET_SIMT
  return ::simt::grid_yz_limit();
#else
  return 65535;
#endif
}

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// One past the largest element offset `t` can address (0 for an empty tensor).
inline int64_t storage_reach(const at::Tensor& t) {
  if (t.numel() == 0) return 0;
  int64_t reach = 1;
  for (int64_t d = 0; d < t.dim(); ++d) reach += (t.size(d) - 1) * t.stride(d);
  return reach;
}

inline int num_sms() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

// Most blocks a launch sized by grid_for (or by a kernel's own cap) uses: enough
// to fill the device several times (a test hook of the emulation build can lower
// it, so that small tensors run every grid-stride loop several times).
inline int64_t max_grid_blocks() {
#ifdef SHUFFLENET_SIMT
  if (::simt::grid_x_limit() > 0) return ::simt::grid_x_limit();
#endif
  return static_cast<int64_t>(num_sms()) * 32;
}

// Largest step of any grid-stride loop: every block of the largest grid with the
// most threads a block may have.
inline int64_t max_grid_stride() { return max_grid_blocks() * 1024; }

// Largest offset the 32-bit instantiations may address: INT32_MAX (a test hook of
// the emulation build can lower it).
inline int64_t index32_limit() {
#ifdef SHUFFLENET_SIMT
  return ::simt::index32_limit();
#else
  return std::numeric_limits<int32_t>::max();
#endif
}

// True when every offset (and every index up to numel) of every tensor fits in
// int32, with room for one more grid stride: a grid-stride loop computes
// `i + stride` before it tests `i < total`, and in 32 bits that sum must not
// wrap. The kernels then use 32-bit index arithmetic, which is several times
// cheaper than 64-bit division on the GPU; larger tensors take the int64
// instantiation.
inline bool fits_int32(std::initializer_list<const at::Tensor*> tensors) {
  const int64_t limit = index32_limit() - max_grid_stride();
  for (const at::Tensor* t : tensors) {
    if (t == nullptr || !t->defined()) continue;
    if (storage_reach(*t) > limit || t->numel() > limit) return false;
  }
  return true;
}

// Runs `f` with index_t = int32_t or int64_t.
template <typename F>
void dispatch_index_type(bool use32, const F& f) {
  if (use32) {
    f(int32_t{0});
  } else {
    f(int64_t{0});
  }
}

inline bool is_aligned(const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// Grid size for a grid-stride loop over `work` items with `threads` per block:
// enough blocks to fill the device several times, never more than the work.
inline int64_t grid_for(int64_t work, int threads) {
  const int64_t needed = ceil_div(work, threads);
  const int64_t cap = max_grid_blocks();
  return needed < cap ? (needed > 0 ? needed : 1) : cap;
}

// Pointer of a possibly undefined optional tensor.
template <typename T>
const T* optional_ptr(const c10::optional<at::Tensor>& t) {
  return (t.has_value() && t->defined()) ? t->const_data_ptr<T>() : nullptr;
}

// float accumulation for every storage type.
template <typename T>
__device__ __forceinline__ float to_float(T v) {
  return static_cast<float>(v);
}

// Raw bits of 16 bytes: pure data movement copies these without caring about
// the element type.
struct alignas(16) Bytes16 {
  uint4 v;
};

// VEC elements of T held together for one 16-byte (or narrower) access.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <typename T, int VEC>
__device__ __forceinline__ Pack<T, VEC> load_pack(const T* p) {
#ifdef SHUFFLENET_SIMT
  ::simt::check_vector_access(p, sizeof(Pack<T, VEC>), "load");
#endif
  return *reinterpret_cast<const Pack<T, VEC>*>(p);
}

template <typename T, int VEC>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, VEC>& v) {
#ifdef SHUFFLENET_SIMT
  ::simt::check_vector_access(p, sizeof(Pack<T, VEC>), "store");
#endif
  *reinterpret_cast<Pack<T, VEC>*>(p) = v;
}

// Elements of T in 16 bytes.
template <typename T>
constexpr int vec16() {
  return static_cast<int>(16 / sizeof(T));
}

// Elements of T in one vector access of `bytes` (16, 8 or 4), at least 1.
template <typename T>
constexpr int vec_elems(int bytes) {
  return std::max(1, bytes / static_cast<int>(sizeof(T)));
}

// The widest vector of T, in elements, that a vector path may use: 16, 8 or 4
// bytes (1 element when none fits) such that every count in `multiples` (channel
// counts, strides, extents in elements) is a multiple of it and every pointer in
// `ptrs` is aligned to its size. A pixel pitch of C elements, for example, allows
// 16 bytes only when C * sizeof(T) is a multiple of 16: ShuffleNet V2's 58 or 116
// fp16 channels (116 and 232 bytes) get 4- and 8-byte vectors.
template <typename T>
int widest_vec(std::initializer_list<int64_t> multiples, std::initializer_list<const void*> ptrs) {
  for (int bytes : {16, 8, 4}) {
    const int vec = vec_elems<T>(bytes);
    if (vec == 1) break;
    bool ok = true;
    for (int64_t m : multiples) ok = ok && m % vec == 0;
    for (const void* p : ptrs) ok = ok && is_aligned(p, static_cast<int64_t>(vec * sizeof(T)));
    if (ok) return vec;
  }
  return 1;
}

// Runs `f` with std::integral_constant<int, V>, V the widest of T's 16-, 8- and
// 4-byte vector sizes (in elements) not above `vec`, or 1: the instantiations a
// launcher compiles for every width widest_vec can choose.
template <typename T, typename F>
void dispatch_vec(int vec, const F& f) {
  constexpr int k16 = vec_elems<T>(16), k8 = vec_elems<T>(8), k4 = vec_elems<T>(4);
  if (vec >= k16) {
    f(std::integral_constant<int, k16>{});
  } else if (vec >= k8) {
    f(std::integral_constant<int, k8>{});
  } else if (vec >= k4) {
    f(std::integral_constant<int, k4>{});
  } else {
    f(std::integral_constant<int, 1>{});
  }
}

// Gradient masked by the forward's ReLU: zero where the forward output was <= 0,
// passed through elsewhere (NaN included), as the CPU kernels and
// threshold_backward do.
template <typename T>
__device__ __forceinline__ float relu_masked(float grad, const T* relu_out, int64_t offset) {
  return (relu_out != nullptr && to_float(relu_out[offset]) <= 0.f) ? 0.f : grad;
}

}  // namespace shufflenet::cuda
