// Weights repacked for the CPU GEMM tiles (gemm_tile.h), cached per source tensor.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstring>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace shufflenet::cpu {

// Packed tensors, found by the source tensor's TensorImpl and a kind (which packing of
// it), and kept only while the source still holds the very values they were packed
// from: each lookup compares the source with a copy kept at packing time (one read of
// the weights, from cache, much cheaper than repacking). Identity, data pointer and
// version counter alone are not enough: compiled graphs reuse one buffer for several
// weights and write it without bumping its version. A model's weights are then packed
// once. Thread-safe.
class PackCache {
 public:
  // The packing `pack()` of `t` (its result must depend only on t's values and `kind`).
  template <typename Pack>
  at::Tensor get(const at::Tensor& t, int kind, const Pack& pack) {
    // Any dense layout occupies numel() elements from its data pointer on, so the byte
    // comparison below holds for it as long as the strides match too.
    if (!t.defined() || !t.is_non_overlapping_and_dense()) return pack();
    const Key key{t.unsafeGetTensorImpl(), kind};
    const size_t nbytes = static_cast<size_t>(t.numel()) * t.element_size();
    const char* data = static_cast<const char*>(t.const_data_ptr());
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      auto it = entries_.find(key);
      if (it != entries_.end() && it->second.dtype == t.scalar_type() &&
          at::IntArrayRef(it->second.sizes) == t.sizes() && at::IntArrayRef(it->second.strides) == t.strides() &&
          it->second.values.size() == nbytes && std::memcmp(it->second.values.data(), data, nbytes) == 0) {
        return it->second.packed;
      }
    }
    at::Tensor packed = pack();
    Entry entry{t.scalar_type(), t.sizes().vec(), t.strides().vec(), std::vector<char>(data, data + nbytes), packed};
    const std::lock_guard<std::mutex> lock(mutex_);
    if (entries_.size() >= kMaxEntries) entries_.clear();
    entries_.insert_or_assign(key, std::move(entry));
    return packed;
  }

 private:
  static constexpr size_t kMaxEntries = 1024;
  struct Key {
    const c10::TensorImpl* impl;
    int kind;
    bool operator==(const Key& o) const { return impl == o.impl && kind == o.kind; }
  };
  struct KeyHash {
    size_t operator()(const Key& k) const {
      return std::hash<const void*>()(k.impl) ^ (static_cast<size_t>(k.kind) * 0x9E3779B97F4A7C15ull);
    }
  };
  struct Entry {
    at::ScalarType dtype;
    std::vector<int64_t> sizes;
    std::vector<int64_t> strides;
    std::vector<char> values;  // the source's bytes when it was packed
    at::Tensor packed;
  };

  std::mutex mutex_;
  std::unordered_map<Key, Entry, KeyHash> entries_;
};

}  // namespace shufflenet::cpu
