// The output cache: memory of freed CPU outputs, kept for the next output of the
// same size.
//
// Why: a batch of ShuffleNet activations is megabytes per tensor. glibc hands blocks
// that large back to the kernel (it unmaps them, or trims the top of the heap) unless
// its adaptive thresholds have grown past them, which depends on what the process
// allocated before; each reuse of returned memory then faults every page in again.
// With two threads at batch 8 the fused units of ShuffleNetV2 x1.0 lost about 10 % of
// their time so (1344 faults per forward; README, "CPU allocator settings"). Keeping
// freed outputs of the same size is what the allocators of ONNX Runtime and OpenVINO
// (arenas) and PyTorch's own CUDA caching allocator do.
//
// Blocks of at least kMinBytes (smaller ones glibc serves from its heap without
// faults) are rounded up to whole pages and kept, after their tensor dies, in a free
// list per size, up to SHUFFLENET_CPU_OUTPUT_CACHE_MB megabytes in all (default 64; 0
// turns the cache off). A block that would exceed the limit is freed at once.
// torch.ops.shufflenet._output_cache_clear() (shufflenet_kernels.empty_cpu_cache())
// returns every kept block. Thread-safe: outputs are freed on whichever thread drops
// their last reference.
#include "cpu/output_cache.h"

#include <ATen/EmptyTensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/Allocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/accumulate.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace shufflenet::cpu {
namespace {

constexpr size_t kMinBytes = size_t{256} << 10;
constexpr size_t kPage = 4096;
// Each block starts with its size; the data follows one cache line later, so that it
// keeps c10's 64-byte alignment.
constexpr size_t kHeader = 64;

int64_t limit_from_env() {
  const char* env = std::getenv("SHUFFLENET_CPU_OUTPUT_CACHE_MB");
  if (env == nullptr || *env == '\0') return int64_t{64} << 20;
  try {
    return std::max<int64_t>(0, std::stoll(env)) << 20;
  } catch (const std::exception&) {
    TORCH_CHECK(false, "SHUFFLENET_CPU_OUTPUT_CACHE_MB must be a whole number of megabytes, got '", env, "'");
  }
  return 0;
}

class OutputCache final : public c10::Allocator {
 public:
  OutputCache() : limit_(limit_from_env()) {}

  c10::DataPtr allocate(size_t nbytes) override {
    const size_t bytes = (nbytes + kPage - 1) / kPage * kPage;
    void* base = take(bytes);
    if (base == nullptr) {
      base = c10::alloc_cpu(bytes + kHeader);
      *static_cast<size_t*>(base) = bytes;
    }
    return {static_cast<char*>(base) + kHeader, base, &release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  bool wants(size_t nbytes) const { return limit_ > 0 && nbytes >= kMinBytes; }

  int64_t held() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return static_cast<int64_t>(held_);
  }

  int64_t limit() const { return limit_; }

  void clear() {
    std::unordered_map<size_t, std::vector<void*>> blocks;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(free_);
      held_ = 0;
    }
    for (auto& [bytes, list] : blocks) {
      for (void* base : list) c10::free_cpu(base);
    }
  }

 private:
  void* take(size_t bytes) {
    const std::lock_guard<std::mutex> lock(mutex_);
    const auto it = free_.find(bytes);
    if (it == free_.end() || it->second.empty()) return nullptr;
    void* base = it->second.back();
    it->second.pop_back();
    held_ -= bytes;
    return base;
  }

  void give_back(void* base) {
    const size_t bytes = *static_cast<const size_t*>(base);
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (static_cast<int64_t>(held_ + bytes) <= limit_) {
        free_[bytes].push_back(base);
        held_ += bytes;
        return;
      }
    }
    c10::free_cpu(base);
  }

  static void release(void* base);

  const int64_t limit_;
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;  // by block size: blocks ready for reuse
  size_t held_ = 0;                                       // bytes in free_
};

// Never destroyed: tensors holding its blocks may outlive static destruction.
OutputCache& cache() {
  static OutputCache* const instance = std::make_unique<OutputCache>().release();
  return *instance;
}

void OutputCache::release(void* base) { cache().give_back(base); }

}  // namespace

at::Tensor empty_cached(at::IntArrayRef sizes, const at::Tensor& like, at::MemoryFormat format) {
  const at::TensorOptions options = like.options().memory_format(format);
  OutputCache& c = cache();
  const auto nbytes = static_cast<size_t>(c10::multiply_integers(sizes)) * like.element_size();
  if (!like.is_cpu() || !c.wants(nbytes)) return at::empty(sizes, options);
  return at::detail::empty_generic(sizes, &c, c10::DispatchKeySet(c10::DispatchKey::CPU), like.scalar_type(), format);
}

int64_t output_cache_bytes() { return cache().held(); }

int64_t output_cache_limit() { return cache().limit(); }

void output_cache_clear() { cache().clear(); }

}  // namespace shufflenet::cpu
