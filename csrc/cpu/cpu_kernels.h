// Entry points of the CPU kernels that other CPU kernel files reuse, and the
// scheduling helper they share.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

// Hot loops of the CPU kernels are compiled for the x86-64-v4 (AVX-512) and
// x86-64-v3 (AVX2, FMA, F16C) ISA levels as well as the baseline; the loader picks
// the best level the machine supports (GCC function multi-versioning, GCC >= 12). The attribute must sit on the function that holds the
// loops, not on a caller (a lambda handed to at::parallel_for is a function of
// its own).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && defined(__linux__)
#define SHUFFLENET_CPU_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SHUFFLENET_CPU_MULTIVERSION
#endif

// A lambda is a function of its own, built for the baseline instruction set unless it
// is inlined into the AVX-512 / AVX2 (or multiversioned) function that calls it: the
// hot ones must be.
#if defined(__GNUC__) || defined(__clang__)
#define SHUFFLENET_INLINE_LAMBDA __attribute__((always_inline))
#else
#define SHUFFLENET_INLINE_LAMBDA
#endif

namespace shufflenet::cpu {

// channel_shuffle on CPU (also the un-shuffle inside pointwise_conv_backward).
at::Tensor channel_shuffle_cpu(const at::Tensor& input, int64_t groups);

// channel_shuffle of dense [rows, C] pixel rows (channels-last data) from `src`
// into `dst`.
void channel_shuffle_rows_into(const at::Tensor& src, at::Tensor& dst, int64_t groups);

// Runs fn(task) for task in [0, tasks). Calls that each drive a BLAS GEMM are
// spread over threads only when there are enough of them to fill every thread;
// otherwise they run in order and BLAS threads each call itself.
// Worker threads do not inherit the caller's dispatch-key exclusions, so the
// ATen calls inside a task are kept below autograd here again.
template <typename F>
void for_each_gemm_task(int64_t tasks, const F& fn) {
  if (tasks >= at::get_num_threads() && tasks > 1) {
    at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
      const at::AutoDispatchBelowADInplaceOrView below_autograd;
      for (int64_t t = begin; t < end; ++t) fn(t);
    });
  } else {
    for (int64_t t = 0; t < tasks; ++t) fn(t);
  }
}

}  // namespace shufflenet::cpu
