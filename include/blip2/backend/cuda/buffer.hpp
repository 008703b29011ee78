// blip2/backend/cuda/buffer.hpp: buffer<T, cuda_space>, device storage from the process's caching
// allocator (caching_allocator.hpp): what a model's weights, its states and arenas own on the GPU.
#pragma once
#include <cstddef>
#include <utility>

#include "blip2/backend/cuda/caching_allocator.hpp"
#include "blip2/core/buffer.hpp"

namespace blip2 {
namespace cuda_detail {
// src/cuda/allocator.cu: the process's caching allocator over cudaMalloc / cudaFree.
void* device_allocate(std::size_t bytes);
void device_deallocate(void* p);
// A synchronous device-to-device copy (a buffer's copy constructor).
void device_copy(void* dst, const void* src, std::size_t bytes);
}  // namespace cuda_detail

// The process's device allocator: its statistics and a release of the cache.
allocator_stats cuda_allocator_stats();
void cuda_allocator_release();

template <class T>
class buffer<T, cuda_space> {
 public:
  using value_type = T;
  using memory_space_type = cuda_space;

  buffer() = default;
  ~buffer() { cuda_detail::device_deallocate(p_); }
  buffer(buffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  buffer& operator=(buffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  buffer(const buffer& o) {
    reserve_elements(o.n_);
    if (n_) {
      try {
        cuda_detail::device_copy(p_, o.p_, n_ * sizeof(T));
      } catch (...) {  // no destructor runs for a constructor that throws: give the block back here
        cuda_detail::device_deallocate(p_);
        throw;
      }
    }
  }
  buffer& operator=(const buffer& o) {
    if (this != &o) {
      buffer tmp(o);
      *this = std::move(tmp);
    }
    return *this;
  }

  T* data() { return p_; }
  const T* data() const { return p_; }
  std::size_t size() const { return n_; }
  // at least n elements; the contents are unspecified after a resize (as the host buffer's)
  void reserve_elements(std::size_t n) {
    if (n_ >= n) return;
    cuda_detail::device_deallocate(p_);
    p_ = nullptr;
    n_ = 0;
    p_ = static_cast<T*>(cuda_detail::device_allocate(n * sizeof(T)));
    n_ = n;
  }

 private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

}  // namespace blip2
