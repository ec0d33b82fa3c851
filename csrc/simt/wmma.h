// nvcuda::wmma for the SIMT emulation (included by simt.h): the warp-level
// matrix API of <mma.h> for the shapes the kernels use (m16n16k16 with
// __half / __nv_bfloat16 inputs, m16n16k8 with precision::tf32 inputs, float
// accumulators).
//
// Semantics kept from the GPU:
//  * load_matrix_sync, mma_sync and store_matrix_sync are warp collectives: all
//    32 lanes of a full warp must call them with the same pointer and ldm (a
//    divergent call deadlocks and is reported like any other collective
//    divergence; different arguments raise).
//  * a load reads memory and a store writes memory at the call (the accesses are
//    seen by the shared-memory checks); each lane touches only the elements it
//    holds, so a tile stored by one lane and loaded by another needs a barrier,
//    as on the GPU. The pointer must be 256-bit aligned and ldm a multiple of
//    16 bytes.
//  * mma_sync multiplies in float and accumulates in float in k order; a
//    precision::tf32 input keeps only its top 19 bits (the tensor core ignores
//    the low 13 mantissa bits), and __float_to_tf32 rounds to nearest, ties away
//    from zero (cvt.rna.tf32.f32). fp16, bf16 and tf32 products are exact in
//    float, so results differ from the GPU's only by summation order.
//
// The per-lane element mapping of a fragment is unspecified by CUDA. Here every
// lane's fragment spans the whole tile (num_elements = rows * cols, row-major
// order), but a lane holds valid values only in the elements it owns on the
// accumulator (element e of the M x N tile belongs to lane e % 32) and in the
// rows of A and columns of B those need; the rest are NaN. Kernel code that
// applies the same operation to every element (x[i] scaling, __float_to_tf32)
// works; code that assumes which elements a lane holds gets NaN.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

namespace detail {

template <typename T>
struct Storage {
  using type = T;
};
template <>
struct Storage<precision::tf32> {
  using type = float;
};

template <typename Use, int M, int N, int K>
struct Shape;
template <int M, int N, int K>
struct Shape<matrix_a, M, N, K> {
  static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct Shape<matrix_b, M, N, K> {
  static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct Shape<accumulator, M, N, K> {
  static constexpr int rows = M, cols = N;
};

// The shapes <mma.h> offers for these element types.
template <int M, int N, int K, typename T>
constexpr bool supported() {
  if constexpr (std::is_same_v<T, precision::tf32>) {
    return M == 16 && N == 16 && K == 8;
  } else if constexpr (std::is_same_v<T, float>) {  // accumulator
    return (M == 16 && N == 16 && (K == 16 || K == 8)) || (M == 32 && N == 8 && K == 16) ||
           (M == 8 && N == 32 && K == 16);
  } else {
    return (M == 16 && N == 16 && K == 16) || (M == 32 && N == 8 && K == 16) || (M == 8 && N == 32 && K == 16);
  }
}

inline int lane() { return static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) % 32; }

// Accumulator element (r, c) of an M x N tile belongs to lane (r * N + c) % 32.
template <int N>
bool owns(int r, int c, int l) {
  return (r * N + c) % 32 == l;
}
// Row r of A is needed by lane l if l owns an element of row r of the product.
template <int N>
bool needs_row(int r, int l) {
  for (int c = 0; c < N; ++c) {
    if (owns<N>(r, c, l)) return true;
  }
  return false;
}
// Column c of B is needed by lane l if l owns an element of column c of the product.
template <int M, int N>
bool needs_col(int c, int l) {
  for (int r = 0; r < M; ++r) {
    if (owns<N>(r, c, l)) return true;
  }
  return false;
}

template <typename T>
T poison() {
  return T(std::numeric_limits<float>::quiet_NaN());
}

inline float tf32_truncate(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  u &= 0xffffe000u;
  std::memcpy(&v, &u, 4);
  return v;
}

// The warp-collective part of every call: all 32 lanes, one pointer and ldm.
inline void collective(const char* name, const void* ptr, unsigned ldm) {
  const uint64_t key = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(ptr)) * 1000003u + ldm;
  const uint64_t lane0 = ::simt::warp_collective(::simt::WarpOp::kShflIdx, 0xffffffffu, key, 0, 32, name);
  if (lane0 != key) {
    ::simt::fail(std::string(name) + ": lane " + std::to_string(lane()) +
                 " passes a pointer or ldm different from lane 0's (they must be the same in every lane)");
  }
}

inline void check_memory(const char* name, const void* ptr, unsigned ldm, size_t elem) {
  if (reinterpret_cast<uintptr_t>(ptr) % 32 != 0) {
    ::simt::fail(std::string(name) + ": misaligned address " + std::to_string(reinterpret_cast<uintptr_t>(ptr)) +
                 " (the tile pointer must be 256-bit aligned)");
  }
  if ((ldm * elem) % 16 != 0) {
    ::simt::fail(std::string(name) + ": ldm " + std::to_string(ldm) + " is not a multiple of 16 bytes");
  }
}

}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
class fragment {
  static_assert(detail::supported<M, N, K, T>(), "wmma: shape not supported for this element type");

 public:
  using element_type = typename detail::Storage<T>::type;
  static constexpr int rows = detail::Shape<Use, M, N, K>::rows;
  static constexpr int cols = detail::Shape<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;
  element_type x[num_elements];  // row-major tile
};

inline float __float_to_tf32(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) {  // finite: round the magnitude half away
    u = (u + 0x1000u) & 0xffffe000u;
  }
  std::memcpy(&v, &u, 4);
  return v;
}

template <typename Use, int M, int N, int K, typename T, typename Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f,
                   const typename fragment<Use, M, N, K, T, Layout>::element_type& v) {
  for (auto& e : f.x) e = v;
}

// A or B from memory in its fragment's layout.
template <typename Use, int M, int N, int K, typename T, typename Layout>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f,
                      const typename fragment<Use, M, N, K, T, Layout>::element_type* p, unsigned ldm) {
  static_assert(std::is_same_v<Use, matrix_a> || std::is_same_v<Use, matrix_b>,
                "wmma: an accumulator load takes a layout_t");
  static_assert(std::is_same_v<Layout, row_major> || std::is_same_v<Layout, col_major>,
                "wmma: matrix_a / matrix_b fragments need row_major or col_major");
  using E = typename fragment<Use, M, N, K, T, Layout>::element_type;
  using F = fragment<Use, M, N, K, T, Layout>;
  constexpr bool row = std::is_same_v<Layout, row_major>;
  detail::check_memory("wmma::load_matrix_sync", p, ldm, sizeof(E));
  const int l = detail::lane();
  for (int r = 0; r < F::rows; ++r) {
    for (int c = 0; c < F::cols; ++c) {
      const bool need = std::is_same_v<Use, matrix_a> ? detail::needs_row<N>(r, l) : detail::needs_col<M, N>(c, l);
      f.x[r * F::cols + c] = need ? p[row ? r * ldm + c : c * ldm + r] : detail::poison<E>();
    }
  }
  detail::collective("wmma::load_matrix_sync", p, ldm);
}

// An accumulator from memory.
template <int M, int N, int K, typename T>
void load_matrix_sync(fragment<accumulator, M, N, K, T, void>& f, const T* p, unsigned ldm, layout_t layout) {
  detail::check_memory("wmma::load_matrix_sync", p, ldm, sizeof(T));
  const int l = detail::lane();
  for (int r = 0; r < M; ++r) {
    for (int c = 0; c < N; ++c) {
      f.x[r * N + c] = detail::owns<N>(r, c, l) ? p[layout == mem_row_major ? r * ldm + c : c * ldm + r]
                                                : detail::poison<T>();
    }
  }
  detail::collective("wmma::load_matrix_sync", p, ldm);
}

template <int M, int N, int K, typename T>
void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T, void>& f, unsigned ldm, layout_t layout) {
  detail::check_memory("wmma::store_matrix_sync", p, ldm, sizeof(T));
  const int l = detail::lane();
  for (int r = 0; r < M; ++r) {
    for (int c = 0; c < N; ++c) {
      if (detail::owns<N>(r, c, l)) p[layout == mem_row_major ? r * ldm + c : c * ldm + r] = f.x[r * N + c];
    }
  }
  detail::collective("wmma::store_matrix_sync", p, ldm);
}

// d = a @ b + c (d may be c).
template <int M, int N, int K, typename TA, typename LA, typename LB, typename TC>
void mma_sync(fragment<accumulator, M, N, K, TC, void>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
              const fragment<matrix_b, M, N, K, TA, LB>& b, const fragment<accumulator, M, N, K, TC, void>& c) {
  detail::collective("wmma::mma_sync", nullptr, 0);
  constexpr bool tf32 = std::is_same_v<TA, precision::tf32>;
  auto in = [](auto v) {
    const float f = static_cast<float>(v);
    return tf32 ? detail::tf32_truncate(f) : f;
  };
  const int l = detail::lane();
  for (int r = 0; r < M; ++r) {
    for (int col = 0; col < N; ++col) {
      if (!detail::owns<N>(r, col, l)) {
        d.x[r * N + col] = detail::poison<TC>();
        continue;
      }
      float acc = static_cast<float>(c.x[r * N + col]);
      for (int k = 0; k < K; ++k) acc = std::fma(in(a.x[r * K + k]), in(b.x[k * N + col]), acc);
      d.x[r * N + col] = static_cast<TC>(acc);
    }
  }
}

}  // namespace nvcuda::wmma
