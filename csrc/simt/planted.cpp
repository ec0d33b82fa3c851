// Test-only kernels with planted bugs (and one correct control), compiled only
// into the emulation build: tests/test_simt.py checks that the emulator reports
// each bug with a clear error instead of running it silently.
#include <ATen/ATen.h>

#include <string>

#include "cuda/cuda_utils.cuh"

namespace shufflenet::simt_tests {
namespace {

constexpr int kTile = 256;

// Control: a shared tile, a barrier, reads of the neighbours' values, then warp
// collectives: out[t] = v + warp sum + lane 0's v + lane t+1's v, with
// v = in[(t + 1) % 256]; up[t] = lane t-2's v, plus 1000 * (any v > 100) and
// 2000 * (all v > -101) of the warp; ballots[warp] = lanes with v > 0.
__global__ void control_kernel(const float* in, float* out, float* up, unsigned* ballots) {
  SHUFFLENET_SHARED(float, tile, [kTile]);
  const int t = threadIdx.x;
  tile[t] = in[t];
  __syncthreads();
  float v = tile[(t + 1) % kTile];
  float s = v;
  for (int m = 16; m > 0; m >>= 1) s += __shfl_xor_sync(0xffffffffu, s, m);
  const float first = __shfl_sync(0xffffffffu, v, 0);
  const float down = __shfl_down_sync(0xffffffffu, v, 1);
  const unsigned ballot = __ballot_sync(0xffffffffu, v > 0.f);
  __syncwarp();
  const float upv = __shfl_up_sync(0xffffffffu, v, 2);
  const int any = __any_sync(0xffffffffu, v > 100.f);
  const int all = __all_sync(0xffffffffu, v > -101.f);
  out[t] = v + s + first + down;
  up[t] = upv + 1000.f * any + 2000.f * all;
  if (t % 32 == 0) ballots[t / 32] = ballot;
}

// Bug: every thread writes the element after its own, so the last one writes one
// past the end of the shared tile.
__global__ void shared_overflow_kernel(float* out) {
  SHUFFLENET_SHARED(float, tile, [kTile]);
  const int t = threadIdx.x;
  tile[t + 1] = static_cast<float>(t);
  __syncthreads();
  out[t] = tile[t];
}

// Bug: the same, in global memory: the last thread writes one element past the
// end of `out` (found by the AddressSanitizer build only).
[[maybe_unused]] __global__ void global_overflow_kernel(float* out) { out[threadIdx.x + 1] = 1.f; }

// Bug: neighbours' values are read without the __syncthreads() that orders them
// after the writes.
__global__ void missing_sync_kernel(const float* in, float* out) {
  SHUFFLENET_SHARED(float, tile, [kTile]);
  const int t = threadIdx.x;
  tile[t] = in[t];
  out[t] = tile[(t + 1) % kTile];
}

// Bug: a 16-byte vector load one float past a 16-byte boundary.
__global__ void misaligned_kernel(const float* in, float* out) {
  const float4 v = *reinterpret_cast<const float4*>(in + 1 + 4 * threadIdx.x);
  out[threadIdx.x] = v.x + v.y + v.z + v.w;
}

// Bug: half of the block skips the barrier.
__global__ void divergent_sync_kernel(float* out) {
  if (threadIdx.x < 128) __syncthreads();
  out[threadIdx.x] = 1.f;
}

// Bug: lanes 16..31 skip a full-mask shuffle.
__global__ void partial_warp_kernel(float* out) {
  float v = static_cast<float>(threadIdx.x);
  if (threadIdx.x % 32 < 16) v += __shfl_xor_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}

}  // namespace

// Runs planted kernel `name`; returns its output (the control kernel's results).
at::Tensor run_planted(const std::string& name) {
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  at::Tensor in = at::arange(2 * kTile + 8, opts).sub_(100.f);
  at::Tensor out = at::zeros({kTile}, opts);
  const float* ip = in.const_data_ptr<float>();
  float* op = out.mutable_data_ptr<float>();
  auto stream = at::cuda::getCurrentCUDAStream();
  if (name == "control") {
    at::Tensor up = at::zeros({kTile}, opts);
    at::Tensor ballots = at::zeros({kTile / 32}, at::TensorOptions().dtype(at::kInt));
    SHUFFLENET_LAUNCH(1, kTile, 0, stream, control_kernel)
    (ip, op, up.mutable_data_ptr<float>(), reinterpret_cast<unsigned*>(ballots.data_ptr()));
    // The ballots as two exact 16-bit halves.
    return at::cat({out, up, ballots.bitwise_and(0xffff).to(at::kFloat),
                    ballots.bitwise_right_shift(16).bitwise_and(0xffff).to(at::kFloat)});
  } else if (name == "shared_overflow") {
    SHUFFLENET_LAUNCH(1, kTile, 0, stream, shared_overflow_kernel)(op);
  } else if (name == "global_overflow") {
#ifdef SHUFFLENET_SIMT_ASAN
    SHUFFLENET_LAUNCH(1, kTile, 0, stream, global_overflow_kernel)(op);
#else
    // Without AddressSanitizer nothing would see the write: it would corrupt the heap.
    TORCH_CHECK(false, "the global_overflow kernel runs only in the AddressSanitizer build (SHUFFLENET_SIMT_ASAN=1)");
#endif
  } else if (name == "missing_sync") {
    SHUFFLENET_LAUNCH(1, kTile, 0, stream, missing_sync_kernel)(ip, op);
  } else if (name == "misaligned") {
    SHUFFLENET_LAUNCH(1, 64, 0, stream, misaligned_kernel)(ip, op);
  } else if (name == "too_many_threads") {
    SHUFFLENET_LAUNCH(1, 2048, 0, stream, divergent_sync_kernel)(op);
  } else if (name == "grid_y_zero") {
    SHUFFLENET_LAUNCH(dim3(1, 0), kTile, 0, stream, divergent_sync_kernel)(op);
  } else if (name == "too_much_shared") {
    SHUFFLENET_LAUNCH(1, kTile, 64 * 1024, stream, divergent_sync_kernel)(op);
  } else if (name == "divergent_sync") {
    SHUFFLENET_LAUNCH(1, kTile, 0, stream, divergent_sync_kernel)(op);
  } else if (name == "partial_warp") {
    SHUFFLENET_LAUNCH(1, kTile, 0, stream, partial_warp_kernel)(op);
  } else {
    TORCH_CHECK(false, "no planted kernel named ", name);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace shufflenet::simt_tests
