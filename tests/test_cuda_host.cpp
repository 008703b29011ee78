// test_cuda_host: the CUDA part's host-side logic, which runs without a GPU: the caching allocator's policy
// (over malloc), and the clear errors a program gets on a machine without a usable device. With a device,
// the last case checks a device buffer's round trip instead.
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "blip2/backend/cuda/cuda.hpp"
#include "blip2/nn/copy_from_host.hpp"
#include "blip2/nn/copy_to_host.hpp"
#include "blip2/nn/transfer.hpp"
#include "blip2/optim/adamw.hpp"

using namespace blip2;

namespace {
// malloc with a budget: allocations beyond it fail (nullptr), as cudaMalloc does when the device is full;
// a free gives its bytes back
struct budget_raw {
  std::size_t* left;
  std::map<void*, std::size_t>* live;
  void* allocate(std::size_t n) {
    if (n > *left) return nullptr;
    *left -= n;
    void* p = std::malloc(n);
    live->emplace(p, n);
    return p;
  }
  void deallocate(void* p) {
    auto it = live->find(p);
    REQUIRE(it != live->end());
    *left += it->second;
    live->erase(it);
    std::free(p);
  }
};
}  // namespace

TEST_CASE("caching allocator: rounding, reuse of a freed block of fitting size, stats") {
  std::size_t left = 1 << 20;
  std::map<void*, std::size_t> live;
  {
    caching_allocator<budget_raw> a(budget_raw{&left, &live});
    CHECK(a.rounded(0) == 512);
    CHECK(a.rounded(1) == 512);
    CHECK(a.rounded(512) == 512);
    CHECK(a.rounded(513) == 1024);
    void* p = a.allocate(1000);  // 1024
    void* q = a.allocate(3000);  // 3072
    CHECK(a.stats().in_use == 1024 + 3072);
    CHECK(a.stats().raw_allocations == 2);
    a.deallocate(p);
    CHECK(a.stats().cached == 1024);
    // a request of the same rounded size takes the cached block back, without a raw allocation
    void* p2 = a.allocate(1024);
    CHECK(p2 == p);
    CHECK(a.stats().reuses == 1);
    CHECK(a.stats().raw_allocations == 2);
    // a block more than twice the request stays cached for bigger requests
    a.deallocate(q);
    void* small = a.allocate(512);
    CHECK(small != q);
    CHECK(a.stats().cached == 3072);
    // but one at most twice the request is taken
    void* mid = a.allocate(2000);  // 2048 <= 3072 <= 4096
    CHECK(mid == q);
    CHECK(a.stats().peak_in_use == 1024 + 3072 + 512);
    a.deallocate(p2);
    a.deallocate(small);
    a.deallocate(mid);
    CHECK(a.stats().in_use == 0);
    CHECK_THROWS_AS(a.deallocate(&left), backend_error);  // not one of its blocks
    a.release();
    CHECK(a.stats().cached == 0);
    CHECK(live.empty());
  }
  CHECK(left == 1 << 20);
}

TEST_CASE("caching allocator: a failed raw allocation releases the cache and retries; a second failure is a clear error") {
  std::size_t left = 8192;
  std::map<void*, std::size_t> live;
  caching_allocator<budget_raw> a(budget_raw{&left, &live});
  void* p = a.allocate(4096);
  a.deallocate(p);  // cached: the raw budget left is 4096
  void* big = a.allocate(6000);  // 6144 > 4096 left: the cache is released, then it fits
  CHECK(big != nullptr);
  CHECK(a.stats().raw_frees == 1);
  try {
    a.allocate(8192);
    FAIL("expected backend_error");
  } catch (const backend_error& e) {
    const std::string what = e.what();
    CHECK(what.find("out of device memory") != std::string::npos);
    CHECK(what.find("8192") != std::string::npos);
    CHECK(what.find("6144 bytes in use") != std::string::npos);
  }
  a.deallocate(big);
}

TEST_CASE("cuda backend: without a usable device, a clear error; with one, a buffer's round trip") {
  std::string why;
  if (!cuda_available(&why)) {
    MESSAGE("no CUDA device here (" << why << "): checking the errors a program gets");
    CHECK(!why.empty());
    try {
      cuda_backend be;
      FAIL("expected backend_error");
    } catch (const backend_error& e) {
      CHECK(std::string(e.what()).find("no usable CUDA device") != std::string::npos);
    }
    buffer<float, cuda_space> b;
    CHECK_THROWS_AS(b.reserve_elements(16), backend_error);
    return;
  }
  cuda_backend be;
  MESSAGE("CUDA device " << be.device() << ": " << be.device_name());
  std::vector<float> host(1000), back(1000, -1.0f);
  for (std::size_t i = 0; i < host.size(); ++i) host[i] = 0.5f * static_cast<float>(i);
  buffer<float, cuda_space> b;
  b.reserve_elements(host.size());
  copy_from_host(be, tensor_view<float, 1, cuda_space>(b.data(), {1000}), tensor_view<const float, 1>(host.data(), {1000}));
  copy_to_host(be, tensor_view<float, 1>(back.data(), {1000}), tensor_view<const float, 1, cuda_space>(b.data(), {1000}));
  CHECK(back == host);
}

TEST_CASE("adamw on the device: three steps give the host optimiser's bits (parameters and moments)") {
  std::string why;
  if (!cuda_available(&why)) {
    MESSAGE("skipped: no CUDA device (" << why << ")");
    return;
  }
  cuda_backend be;
  const index_t n = 4099;  // three segments, the middle one not decayed
  std::vector<param_segment> segs{{"a", 0, 1000, true}, {"b", 1000, 99, false}, {"c", 1099, 3000, true}};
  std::vector<float> p(n), g(n);
  for (index_t i = 0; i < n; ++i) p[i] = 0.01f * static_cast<float>(i % 97) - 0.4f;
  adamw<float> host_opt(n, {}, segs);
  adamw<float, cuda_space> dev_opt(n, {}, segs);
  auto dp = to_backend_memory(be, tensor_view<const float, 1>(p.data(), {n}));
  space_tensor<float, 1, cuda_space> dg({n});
  for (int step = 0; step < 3; ++step) {
    for (index_t i = 0; i < n; ++i) g[i] = 0.001f * static_cast<float>((i * 7 + step * 13) % 101) - 0.05f;
    copy_from_host(be, dg.view(), tensor_view<const float, 1>(g.data(), {n}));
    host_opt.step(p, g, 1e-3 * (step + 1));
    dev_opt.step(be, dp.view(), dg.view(), 1e-3 * (step + 1));
  }
  const auto back = to_host(be, dp.view());
  const auto m = to_host(be, dev_opt.exp_avg_view());
  const auto v = to_host(be, dev_opt.exp_avg_sq_view());
  CHECK(std::memcmp(back.data(), p.data(), n * sizeof(float)) == 0);
  CHECK(std::memcmp(m.data(), host_opt.exp_avg().data(), n * sizeof(float)) == 0);
  CHECK(std::memcmp(v.data(), host_opt.exp_avg_sq().data(), n * sizeof(float)) == 0);
}
