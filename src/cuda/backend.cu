// src/cuda/backend.cu: cuda_backend's resources (stream, cuBLAS / cuBLASLt handles, workspace, scratch).
#include <cublasLt.h>
#include <cublas_v2.h>

#include <cstdlib>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "blip2/backend/cuda/buffer.hpp"
#include "common.cuh"

namespace blip2 {
namespace cuda_detail {

struct resources {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  cublasLtHandle_t lt = nullptr;
  buffer<unsigned char, cuda_space> workspace;
  std::unordered_map<int, buffer<unsigned char, cuda_space>> scratch;
  std::unordered_map<int, std::vector<unsigned char>> staging;

  ~resources() {
    // queued work may still use the workspace and the scratch buffers, which go back to the process's
    // cache after this body (and may be handed to another stream at once): wait for it first. This runs
    // also where ~cuda_backend does not: a move assignment replaces (destroys) the old resources.
    if (stream) cudaStreamSynchronize(stream);
    if (lt) cublasLtDestroy(lt);
    if (blas) cublasDestroy(blas);
    if (stream) cudaStreamDestroy(stream);
  }
};

const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialised";
    case CUBLAS_STATUS_ALLOC_FAILED: return "allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "error";
  }
}

void check_cublas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw backend_error(std::string("cuda: cuBLAS ") + what + ": " + cublas_status_name(s));
}

}  // namespace cuda_detail

bool cuda_available(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why) *why = cudaGetErrorString(e);
    cudaGetLastError();  // clear the sticky error
    return false;
  }
  if (n == 0) {
    if (why) *why = "no CUDA device";
    return false;
  }
  return true;
}

namespace {
bool env_flag(const char* var, bool fallback) {
  const char* e = std::getenv(var);
  if (!e || !*e) return fallback;
  if (std::strcmp(e, "0") == 0) return false;
  if (std::strcmp(e, "1") == 0) return true;
  throw backend_error(std::string("cuda: ") + var + " is '" + e + "', expected 0 or 1");
}
}  // namespace

cuda_backend::cuda_backend(int device) : r_(std::make_unique<cuda_detail::resources>()) {
  using namespace cuda_detail;
  std::string why;
  if (!cuda_available(&why)) throw backend_error("cuda: no usable CUDA device: " + why);
  r_->device = device;
  check(cudaSetDevice(device), "cudaSetDevice");
  check(cudaStreamCreateWithFlags(&r_->stream, cudaStreamNonBlocking), "cudaStreamCreate");
  check_cublas(cublasCreate(&r_->blas), "cublasCreate");
  check_cublas(cublasSetStream(r_->blas, r_->stream), "cublasSetStream");
  check_cublas(cublasLtCreate(&r_->lt), "cublasLtCreate");
  r_->workspace.reserve_elements(std::size_t(32) << 20);  // cuBLASLt's recommendation for Hopper
  check_cublas(cublasSetWorkspace(r_->blas, r_->workspace.data(), r_->workspace.size()), "cublasSetWorkspace");
  tf32_ = env_flag("BLIP2_CUDA_TF32", false);
  if (const char* e = std::getenv("BLIP2_CUDA_MATMUL"); e && *e) {
    if (std::strcmp(e, "bf16") == 0)
      matmul_ = matmul_precision::bf16;
    else if (std::strcmp(e, "f32") != 0)
      throw backend_error(std::string("cuda: BLIP2_CUDA_MATMUL is '") + e + "', expected f32 or bf16");
  }
  if (const char* e = std::getenv("BLIP2_CUDA_ATTENTION"); e && *e) {
    if (std::strcmp(e, "fused") == 0)
      attention_ = attention_kernels::fused;
    else if (std::strcmp(e, "batched-gemm") == 0)
      attention_ = attention_kernels::batched_gemm;
    else if (std::strcmp(e, "auto") != 0)
      throw backend_error(std::string("cuda: BLIP2_CUDA_ATTENTION is '") + e +
                          "', expected auto, fused or batched-gemm");
  }
}

cuda_backend::~cuda_backend() {
  if (r_ && r_->stream) cudaStreamSynchronize(r_->stream);  // no throw from a destructor
}
cuda_backend::cuda_backend(cuda_backend&&) noexcept = default;
cuda_backend& cuda_backend::operator=(cuda_backend&&) noexcept = default;

int cuda_backend::device() const { return r_->device; }
std::string cuda_backend::device_name() const {
  cudaDeviceProp p{};
  cuda_detail::check(cudaGetDeviceProperties(&p, r_->device), "cudaGetDeviceProperties");
  return p.name;
}
void* cuda_backend::stream() const { return r_->stream; }
void* cuda_backend::cublas() const { return r_->blas; }
void* cuda_backend::cublaslt() const { return r_->lt; }
void* cuda_backend::workspace() const { return r_->workspace.data(); }
std::size_t cuda_backend::workspace_bytes() const { return r_->workspace.size(); }

void* cuda_backend::scratch(int slot, std::size_t bytes) {
  auto& b = r_->scratch[slot];
  if (b.size() < bytes) {
    // the old buffer may still be read by queued kernels: its block goes back to the cache, which hands
    // it out again only in stream order (caching_allocator.hpp)
    b.reserve_elements(bytes);
  }
  return b.data();
}
void* cuda_backend::host_staging(int slot, std::size_t bytes) {
  auto& b = r_->staging[slot];
  if (b.size() < bytes) b.resize(bytes);
  return b.data();
}
void cuda_backend::synchronize() { cuda_detail::check(cudaStreamSynchronize(r_->stream), "a queued kernel failed"); }

}  // namespace blip2
