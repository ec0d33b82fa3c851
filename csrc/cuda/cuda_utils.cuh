// Device utilities shared by the CUDA kernel files: index-type selection,
// alignment tests for 16-byte vector access, launch sizing and small device
// helpers. Private to csrc/cuda.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdint>
#include <limits>

// The CUDA kernels' dtypes: float32, float16, bfloat16 (float64 is CPU only and
// rejected by the shared argument checks, so it is not compiled here).
#define SHUFFLENET_DISPATCH_CUDA_TYPES(TYPE, NAME, ...)                  \
  AT_DISPATCH_SWITCH(TYPE, NAME, AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) \
                         AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__)          \
                             AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))

namespace shufflenet::cuda {

// Threads of a one-dimensional launch unless a kernel says otherwise.
constexpr int kThreads = 256;
// Largest grid extent in y and z.
constexpr int64_t kMaxGridYZ = 65535;

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// One past the largest element offset `t` can address (0 for an empty tensor).
inline int64_t storage_reach(const at::Tensor& t) {
  if (t.numel() == 0) return 0;
  int64_t reach = 1;
  for (int64_t d = 0; d < t.dim(); ++d) reach += (t.size(d) - 1) * t.stride(d);
  return reach;
}

// True when every offset (and every index up to numel) of every tensor fits in
// int32: the kernels then use 32-bit index arithmetic, which is several times
// cheaper than 64-bit division on the GPU. Tensors beyond 2^31 elements take
// the int64 instantiation.
inline bool fits_int32(std::initializer_list<const at::Tensor*> tensors) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  for (const at::Tensor* t : tensors) {
    if (t == nullptr || !t->defined()) continue;
    if (storage_reach(*t) > kMax || t->numel() > kMax) return false;
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

inline int num_sms() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

// Grid size for a grid-stride loop over `work` items with `threads` per block:
// enough blocks to fill the device several times, never more than the work.
inline int64_t grid_for(int64_t work, int threads) {
  const int64_t needed = ceil_div(work, threads);
  const int64_t cap = static_cast<int64_t>(num_sms()) * 32;
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
  return *reinterpret_cast<const Pack<T, VEC>*>(p);
}

template <typename T, int VEC>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, VEC>& v) {
  *reinterpret_cast<Pack<T, VEC>*>(p) = v;
}

// Elements of T in 16 bytes.
template <typename T>
constexpr int vec16() {
  return static_cast<int>(16 / sizeof(T));
}

// Gradient masked by the forward's ReLU: zero where the forward output was <= 0.
template <typename T>
__device__ __forceinline__ float relu_masked(float grad, const T* relu_out, int64_t offset) {
  return (relu_out != nullptr && !(to_float(relu_out[offset]) > 0.f)) ? 0.f : grad;
}

}  // namespace shufflenet::cuda
