// src/cuda/allocator.cu: the process's caching allocator over cudaMalloc / cudaFree.
#include "blip2/backend/cuda/buffer.hpp"
#include "common.cuh"

namespace blip2 {
namespace cuda_detail {
namespace {
struct cuda_raw {
  void* allocate(std::size_t bytes) {
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e == cudaSuccess) return p;
    cudaGetLastError();  // clear it
    // out of memory is answered by the caller (release the cache, retry, report); anything else (no
    // device, no driver) is reported as the runtime says it
    if (e == cudaErrorMemoryAllocation) return nullptr;
    throw backend_error("cuda: cudaMalloc of " + std::to_string(bytes) + " bytes: " + cudaGetErrorString(e));
  }
  void deallocate(void* p) { cudaFree(p); }
};
// Never destroyed: buffers in static objects may be freed after main returns.
caching_allocator<cuda_raw>& the_allocator() {
  static auto* a = new caching_allocator<cuda_raw>();
  return *a;
}
}  // namespace

void* device_allocate(std::size_t bytes) { return the_allocator().allocate(bytes); }
void device_deallocate(void* p) {
  if (p) the_allocator().deallocate(p);
}
void device_copy(void* dst, const void* src, std::size_t bytes) {
  // the backends queue work on their own non-blocking streams, which the legacy default stream does not
  // wait for: finish all of it before copying what it may still write
  check(cudaDeviceSynchronize(), "a queued kernel failed");
  check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice), "device-to-device copy");
  // a device-to-device cudaMemcpy returns before the copy has run (no host-side synchronisation), on the
  // legacy default stream, which the backends' non-blocking streams do not wait for: finish it here, so a
  // kernel queued next (on any stream) reads the copy and nothing overwrites src while it is read
  check(cudaDeviceSynchronize(), "device-to-device copy");
}
}  // namespace cuda_detail

allocator_stats cuda_allocator_stats() { return cuda_detail::the_allocator().stats(); }
void cuda_allocator_release() { cuda_detail::the_allocator().release(); }

}  // namespace blip2
