// Weights repacked for the CPU GEMM tiles (gemm_tile.h), cached per source tensor.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstring>
#include <functional>
#include <iterator>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace shufflenet::cpu {

// Tensors whose owner changes them only by writes that bump their version counter (the
// nn modules pin their cached folded weights, see the shufflenet::_pin_weights op): a
// pack cache entry of a pinned tensor is checked by identity, data pointer and version
// instead of by comparing its bytes, and keeps no copy of them. Compiled graphs never
// pin, so their buffers (reused for several weights, written without a version bump)
// keep the byte comparison. A pin lasts as long as the tensor: the weak reference held
// here also keeps a dead tensor's address from being reused while the entry exists.
class PinnedTensors {
 public:
  void pin(const at::Tensor& t) {
    if (!t.defined() || t.is_inference()) return;  // no version counter to rely on
    const std::lock_guard<std::mutex> lock(mutex_);
    if (pins_.size() >= kMaxPins) {
      for (auto it = pins_.begin(); it != pins_.end();) it = it->second.expired() ? pins_.erase(it) : std::next(it);
    }
    pins_.insert_or_assign(t.unsafeGetTensorImpl(), c10::weak_intrusive_ptr<c10::TensorImpl>(t.getIntrusivePtr()));
  }

  bool pinned(const at::Tensor& t) {
    const std::lock_guard<std::mutex> lock(mutex_);
    const auto it = pins_.find(t.unsafeGetTensorImpl());
    return it != pins_.end() && !it->second.expired();
  }

 private:
  static constexpr size_t kMaxPins = 4096;
  std::mutex mutex_;
  std::unordered_map<const c10::TensorImpl*, c10::weak_intrusive_ptr<c10::TensorImpl>> pins_;
};

inline PinnedTensors& pinned_tensors() {
  static PinnedTensors pins;
  return pins;
}

// Packed tensors, found by the source tensor's TensorImpl and a kind (which packing of
// it), and kept only while the source still holds the very values they were packed
// from: each lookup compares the source with a copy kept at packing time (one read of
// the weights, from cache, much cheaper than repacking). Identity, data pointer and
// version counter alone are not enough: compiled graphs reuse one buffer for several
// weights and write it without bumping its version. A model's weights are then packed
// once. Pinned tensors (PinnedTensors above) skip the byte comparison. Thread-safe.
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
    const bool pinned = pinned_tensors().pinned(t);
    const int64_t version = pinned ? static_cast<int64_t>(t._version()) : -1;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      auto it = entries_.find(key);
      if (it != entries_.end()) {
        const Entry& e = it->second;
        const bool same_layout = e.dtype == t.scalar_type() && at::IntArrayRef(e.sizes) == t.sizes() &&
                                 at::IntArrayRef(e.strides) == t.strides();
        const bool same_values = pinned ? (e.version == version && e.data == data)
                                        : (e.version < 0 && e.values.size() == nbytes &&
                                           std::memcmp(e.values.data(), data, nbytes) == 0);
        if (same_layout && same_values) return e.packed;
      }
    }
    at::Tensor packed = pack();
    Entry entry{t.scalar_type(), t.sizes().vec(), t.strides().vec(),
                pinned ? std::vector<char>() : std::vector<char>(data, data + nbytes), data, version, packed};
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
    std::vector<char> values;  // the source's bytes when it was packed (not pinned)
    const void* data;          // pinned: the source's data pointer and version counter
    int64_t version;           // -1: not pinned, checked by `values`
    at::Tensor packed;
  };

  std::mutex mutex_;
  std::unordered_map<Key, Entry, KeyHash> entries_;
};

}  // namespace shufflenet::cpu
