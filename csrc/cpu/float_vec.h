// Sixteen-float vectors for the hot loops of the CPU kernels, written with the
// GCC/Clang vector extension so that each multiversioned clone
// (SHUFFLENET_CPU_MULTIVERSION) lowers them to its own registers: one zmm
// (AVX-512), two ymm (AVX2) or four xmm (baseline SSE2). Loads and stores convert
// from and to the tensor's dtype: half through the hardware conversion where the
// clone has one, bfloat16 rounded to nearest even as c10 does.
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>

namespace shufflenet::cpu {

constexpr int64_t kFloatLanes = 16;
typedef float FloatVec __attribute__((vector_size(kFloatLanes * sizeof(float))));
typedef uint32_t U32Vec __attribute__((vector_size(kFloatLanes * sizeof(uint32_t))));
typedef int32_t I32Vec __attribute__((vector_size(kFloatLanes * sizeof(int32_t))));
typedef uint16_t U16Vec __attribute__((vector_size(kFloatLanes * sizeof(uint16_t))));
typedef _Float16 HalfVec __attribute__((vector_size(kFloatLanes * sizeof(_Float16))));

template <typename V, typename T>
C10_ALWAYS_INLINE V load_bits(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

C10_ALWAYS_INLINE FloatVec load_floats(const float* p) { return load_bits<FloatVec>(p); }
C10_ALWAYS_INLINE FloatVec load_floats(const c10::Half* p) {
  return __builtin_convertvector(load_bits<HalfVec>(p), FloatVec);
}
C10_ALWAYS_INLINE FloatVec load_floats(const c10::BFloat16* p) {
  const U32Vec bits = __builtin_convertvector(load_bits<U16Vec>(p), U32Vec) << 16;
  return load_bits<FloatVec>(&bits);
}

C10_ALWAYS_INLINE void store_floats(float* p, FloatVec v) { std::memcpy(p, &v, sizeof v); }
C10_ALWAYS_INLINE void store_floats(c10::Half* p, FloatVec v) {
  const HalfVec h = __builtin_convertvector(v, HalfVec);
  std::memcpy(p, &h, sizeof h);
}
C10_ALWAYS_INLINE void store_floats(c10::BFloat16* p, FloatVec v) {
  const U32Vec bits = load_bits<U32Vec>(&v);
  U32Vec rounded = (bits + (0x7FFFu + ((bits >> 16) & 1u))) >> 16;
  const U32Vec nan = reinterpret_cast<U32Vec>(v != v);  // all ones where v is NaN
  rounded = (rounded & ~nan) | ((U32Vec{} + 0x7FC0u) & nan);  // c10's NaN
  const U16Vec h = __builtin_convertvector(rounded, U16Vec);
  std::memcpy(p, &h, sizeof h);
}

// Lanes p[0], p[stride], ..., p[15 * stride]; reads nothing past p[15 * stride].
template <typename scalar_t>
C10_ALWAYS_INLINE FloatVec load_floats_strided(const scalar_t* p, int64_t stride) {
  if (stride == 1) return load_floats(p);
  if (stride == 2) {
    // Even lanes of p[0..15] and of p[15..30] (the second load starts at 15 so
    // that p[31] is never read).
    return __builtin_shufflevector(load_floats(p), load_floats(p + 15), 0, 2, 4, 6, 8, 10, 12, 14, 17, 19, 21, 23,
                                   25, 27, 29, 31);
  }
  float lanes[kFloatLanes];
  for (int64_t j = 0; j < kFloatLanes; ++j) lanes[j] = static_cast<float>(p[j * stride]);
  return load_floats(lanes);
}

// Lanes [0, count) of v, zero elsewhere.
C10_ALWAYS_INLINE FloatVec first_lanes(FloatVec v, int64_t count) {
  const I32Vec lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  return lane < static_cast<int32_t>(count) ? v : FloatVec{};
}

C10_ALWAYS_INLINE double sum_lanes(FloatVec v) {
  double s = 0.0;
  for (int64_t j = 0; j < kFloatLanes; ++j) s += v[j];
  return s;
}

C10_ALWAYS_INLINE FloatVec relu_vec(FloatVec v, bool relu) { return relu ? (v < 0 ? FloatVec{} : v) : v; }

}  // namespace shufflenet::cpu
