// blip2/backend/cuda/caching_allocator.hpp: device memory handed out from a cache of freed blocks, so a
// training loop that frees and re-allocates the same sizes calls cudaMalloc (slow, and synchronising)
// only on its first step.
//
// The policy is host logic over any raw allocator (a cudaMalloc/cudaFree pair in the part, malloc in the
// unit test), so it is tested without a GPU:
//   - sizes are rounded up to 512 bytes (every block is 512-byte aligned for vector loads);
//   - a request takes the smallest cached block of at least its size and at most twice it (a bigger one
//     stays for bigger requests), else a new raw block;
//   - when the raw allocator fails, every cached block is released and the request tried once more; a
//     second failure is backend_error naming the size and what is in use and cached;
//   - release() frees every cached block (blocks in use stay valid).
// A cached block is reused by the next request in host order. Device work that still reads a freed block
// is ordered before the reuse only on the same stream: blip2's backends each use one stream, and a program
// that frees on one stream and allocates on another synchronises between the two.
#pragma once
#include <cstddef>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

#include "blip2/core/errors.hpp"

namespace blip2 {

struct allocator_stats {
  std::size_t in_use = 0;       // bytes handed out and not yet freed (rounded sizes)
  std::size_t cached = 0;       // bytes held in the cache, free for reuse
  std::size_t peak_in_use = 0;  // the largest in_use seen
  std::size_t raw_allocations = 0, raw_frees = 0, reuses = 0;
};

// Raw: void* allocate(std::size_t bytes) (nullptr on failure) and void deallocate(void*).
template <class Raw>
class caching_allocator {
 public:
  static constexpr std::size_t granularity = 512;

  explicit caching_allocator(Raw raw = Raw{}) : raw_(std::move(raw)) {}
  ~caching_allocator() { release(); }
  caching_allocator(const caching_allocator&) = delete;
  caching_allocator& operator=(const caching_allocator&) = delete;

  static std::size_t rounded(std::size_t bytes) {
    return bytes == 0 ? granularity : (bytes + granularity - 1) / granularity * granularity;
  }

  void* allocate(std::size_t bytes) {
    const std::size_t n = rounded(bytes);
    std::lock_guard lock(mutex_);
    void* p = nullptr;
    if (auto it = free_.lower_bound(n); it != free_.end() && it->first <= 2 * n) {
      p = it->second;
      const std::size_t size = it->first;
      free_.erase(it);
      stats_.cached -= size;
      ++stats_.reuses;
      return hand_out(p, size);
    }
    p = raw_.allocate(n);
    if (!p && !free_.empty()) {
      release_locked();
      p = raw_.allocate(n);
    }
    if (!p)
      throw backend_error("cuda: out of device memory allocating " + std::to_string(n) + " bytes (" +
                          std::to_string(stats_.in_use) + " bytes in use, cache released)");
    ++stats_.raw_allocations;
    return hand_out(p, n);
  }

  void deallocate(void* p) {
    if (!p) return;
    std::lock_guard lock(mutex_);
    auto it = live_.find(p);
    if (it == live_.end()) throw backend_error("cuda: deallocate of a pointer this allocator did not hand out");
    const std::size_t size = it->second;
    live_.erase(it);
    stats_.in_use -= size;
    stats_.cached += size;
    free_.emplace(size, p);
  }

  // Return every cached block to the raw allocator.
  void release() {
    std::lock_guard lock(mutex_);
    release_locked();
  }

  allocator_stats stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
  }

 private:
  void* hand_out(void* p, std::size_t size) {
    live_.emplace(p, size);
    stats_.in_use += size;
    if (stats_.in_use > stats_.peak_in_use) stats_.peak_in_use = stats_.in_use;
    return p;
  }
  void release_locked() {
    for (auto& [size, p] : free_) {
      raw_.deallocate(p);
      ++stats_.raw_frees;
    }
    free_.clear();
    stats_.cached = 0;
  }

  Raw raw_;
  mutable std::mutex mutex_;
  std::multimap<std::size_t, void*> free_;      // size -> cached block
  std::unordered_map<void*, std::size_t> live_; // block -> size, handed out
  allocator_stats stats_;
};

}  // namespace blip2
