// Memory for the CPU kernels' outputs, kept after their tensors are freed and handed
// to the next output of the same size (output_cache.cpp says why).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/MemoryFormat.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>

namespace shufflenet::cpu {

// An uninitialized CPU tensor of `sizes`, `like`'s dtype, in `format`, as at::empty
// makes it; its memory comes from the output cache when it is large enough to be
// worth keeping, and goes back there when the tensor's storage is freed.
at::Tensor empty_cached(at::IntArrayRef sizes, const at::Tensor& like, at::MemoryFormat format);

// Bytes the cache holds for reuse (memory of freed outputs), and its limit.
int64_t output_cache_bytes();
int64_t output_cache_limit();

// Returns every block the cache holds to the system allocator.
void output_cache_clear();

}  // namespace shufflenet::cpu
