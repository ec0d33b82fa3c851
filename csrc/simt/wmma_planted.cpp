// Test-only kernels for the nvcuda::wmma emulation (simt/wmma.h), compiled only
// into the emulation build: a correct control per operand type whose results
// tests/test_simt_tensorcore.py checks against torch, and kernels with planted
// wmma misuse that the emulator must report.
//
// torch.ops.shufflenet_simt_testing.wmma_planted(name, a, b) -> Tensor
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>

#include "cuda/cuda_utils.cuh"

namespace shufflenet::simt_tests {
namespace {

namespace wmma = nvcuda::wmma;

// out[16][16] = 2 * (A @ B + 1) with A [16][K] row-major and B [K][16] stored
// column-major (b_t is B^T, row-major), fp16 / bf16 (K = 16) operands.
template <typename T>
__global__ void half_control_kernel(const T* a, const T* b_t, float* out) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 1.f);
  wmma::load_matrix_sync(fa, a, 16);
  wmma::load_matrix_sync(fb, b_t, 16);
  wmma::mma_sync(acc, fa, fb, acc);
  for (int i = 0; i < acc.num_elements; ++i) acc.x[i] *= 2.f;
  wmma::store_matrix_sync(out, acc, 16, wmma::mem_row_major);
}

// TF32: out^T = A @ B with the operands rounded by __float_to_tf32 (two k steps
// of 8, the result stored column-major), A [16][16], B [16][16] row-major.
__global__ void tf32_control_kernel(const float* a, const float* b, float* out) {
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
  wmma::fill_fragment(acc, 0.f);
  for (int k = 0; k < 16; k += 8) {
    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb;
    wmma::load_matrix_sync(fa, a + k, 16);
    wmma::load_matrix_sync(fb, b + k * 16, 16);
    for (int i = 0; i < fa.num_elements; ++i) fa.x[i] = wmma::__float_to_tf32(fa.x[i]);
    for (int i = 0; i < fb.num_elements; ++i) fb.x[i] = wmma::__float_to_tf32(fb.x[i]);
    wmma::mma_sync(acc, fa, fb, acc);
  }
  wmma::store_matrix_sync(out, acc, 16, wmma::mem_col_major);
}

// TF32 without __float_to_tf32: the tensor core ignores the low 13 mantissa bits.
__global__ void tf32_truncating_kernel(const float* a, const float* b, float* out) {
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb;
  wmma::load_matrix_sync(acc, out, 16, wmma::mem_row_major);  // accumulate onto out
  wmma::load_matrix_sync(fa, a, 16);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(out, acc, 16, wmma::mem_row_major);
}

// Bug: lanes 16..31 skip the load.
__global__ void divergent_kernel(const __half* a, float* out) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
  if (threadIdx.x % 32 < 16) wmma::load_matrix_sync(fa, a, 16);
  out[threadIdx.x] = 1.f;
}

// Bug: the tile pointer is 16 bytes past a 256-bit boundary.
__global__ void misaligned_kernel(const __half* a, float* out) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
  wmma::load_matrix_sync(fa, a + 8, 16);
  out[threadIdx.x] = 1.f;
}

// Bug: every lane passes its own row as the tile.
__global__ void nonuniform_kernel(const __half* a, float* out) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
  wmma::load_matrix_sync(fa, a + 16 * (threadIdx.x % 2), 16);
  out[threadIdx.x] = 1.f;
}

// Bug: warp 0 stores its accumulator to shared memory and warp 1 loads it without
// the __syncthreads() between them.
__global__ void store_load_race_kernel(float* out) {
  SHUFFLENET_SHARED(float, tile, [16 * 16 + 32]);
  float* p = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(tile) + 31) & ~uintptr_t{31});
  const int warp = threadIdx.x / 32;
  if (warp == 0) {
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
    wmma::fill_fragment(acc, 1.f);
    wmma::store_matrix_sync(p, acc, 16, wmma::mem_row_major);
  } else {
    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
    wmma::load_matrix_sync(fa, p, 16);
  }
  out[threadIdx.x] = 1.f;
}

at::Tensor run_wmma_planted(const std::string& name, const at::Tensor& a, const at::Tensor& b) {
  at::Tensor out = at::zeros({16, 16}, a.options().dtype(at::kFloat));
  float* op = out.mutable_data_ptr<float>();
  auto stream = at::cuda::getCurrentCUDAStream();
  const at::Tensor ac = a.contiguous(), bc = b.contiguous();
  if (name == "half_control") {
    TORCH_CHECK(a.sizes() == at::IntArrayRef({16, 16}) && b.sizes() == a.sizes() && b.dtype() == a.dtype(),
                "wmma_planted: a and b must be [16, 16] of one dtype");
    if (a.scalar_type() == at::kHalf) {
      SHUFFLENET_LAUNCH(1, 32, 0, stream, half_control_kernel<__half>)
      (ac.const_data_ptr<c10::Half>(), bc.const_data_ptr<c10::Half>(), op);
    } else {
      TORCH_CHECK(a.scalar_type() == at::kBFloat16, "wmma_planted: half_control takes float16 or bfloat16");
      SHUFFLENET_LAUNCH(1, 32, 0, stream, half_control_kernel<__nv_bfloat16>)
      (ac.const_data_ptr<c10::BFloat16>(), bc.const_data_ptr<c10::BFloat16>(), op);
    }
    return out;
  }
  if (name == "tf32_control" || name == "tf32_truncating") {
    TORCH_CHECK(a.sizes() == at::IntArrayRef({16, 16}) && b.sizes() == a.sizes() && a.scalar_type() == at::kFloat &&
                    b.scalar_type() == at::kFloat,
                "wmma_planted: a and b must be float32 [16, 16]");
    if (name == "tf32_control") {
      SHUFFLENET_LAUNCH(1, 32, 0, stream, tf32_control_kernel)(ac.const_data_ptr<float>(), bc.const_data_ptr<float>(), op);
    } else {
      SHUFFLENET_LAUNCH(1, 32, 0, stream, tf32_truncating_kernel)
      (ac.const_data_ptr<float>(), bc.const_data_ptr<float>(), op);
    }
    return out;
  }
  // The bug kernels: 64 threads, one 32-byte aligned [16, 16] fp16 tile (with room after it).
  at::Tensor buf = at::zeros({1024}, a.options().dtype(at::kHalf));
  const auto* hp = reinterpret_cast<const __half*>(
      (reinterpret_cast<uintptr_t>(buf.const_data_ptr<c10::Half>()) + 31) & ~uintptr_t{31});
  at::Tensor flags = at::zeros({64}, a.options().dtype(at::kFloat));
  float* fp = flags.mutable_data_ptr<float>();
  if (name == "divergent") {
    SHUFFLENET_LAUNCH(1, 64, 0, stream, divergent_kernel)(hp, fp);
  } else if (name == "misaligned") {
    SHUFFLENET_LAUNCH(1, 64, 0, stream, misaligned_kernel)(hp, fp);
  } else if (name == "nonuniform") {
    SHUFFLENET_LAUNCH(1, 64, 0, stream, nonuniform_kernel)(hp, fp);
  } else if (name == "store_load_race") {
    SHUFFLENET_LAUNCH(1, 64, 0, stream, store_load_race_kernel)(fp);
  } else {
    TORCH_CHECK(false, "no wmma planted kernel named ", name);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return flags;
}

}  // namespace
}  // namespace shufflenet::simt_tests

TORCH_LIBRARY_FRAGMENT(shufflenet_simt_testing, m) {
  m.def("wmma_planted(str name, Tensor a, Tensor b) -> Tensor");
  m.impl("wmma_planted", c10::DispatchKey::CompositeExplicitAutograd, &shufflenet::simt_tests::run_wmma_planted);
}
