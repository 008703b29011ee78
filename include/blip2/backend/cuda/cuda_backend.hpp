// blip2/backend/cuda/cuda_backend.hpp: the CUDA backend (part blip2::cuda): a value that owns a stream,
// a cuBLAS and a cuBLASLt handle, a GEMM workspace and scratch buffers, and names cuda_space as the memory
// its kernels read.
//
// This header compiles with g++ or clang without the CUDA headers: the resources sit behind a pointer and
// every kernel is a function compiled by nvcc into the part's library (src/cuda/*.cu). A kernel file of
// this directory declares that function and specialises blip2::kernel<cuda_backend, op::X> to call it.
//
// Ordering: every kernel and copy of a backend runs on its one stream, in call order. A copy to the host
// waits for the stream, so a host reading the copy sees every earlier kernel's result; nothing else waits.
// Kernels are float32 (the tests' double oracle runs on the reference backend); a double call is a compile
// error that names the op.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <type_traits>

#include "blip2/backend/backend.hpp"
#include "blip2/core/check.hpp"
#include "blip2/core/errors.hpp"
#include "blip2/core/tensor_view.hpp"

namespace blip2 {

namespace cuda_detail {
struct resources;  // src/cuda/backend.cu
}

// Whether a CUDA device can be used by this process; when not, *why says what the runtime answered
// ("no CUDA device", "CUDA driver version is insufficient for CUDA runtime version", ...).
bool cuda_available(std::string* why = nullptr);

class cuda_backend {
 public:
  using memory_space = cuda_space;
  static constexpr const char* name = "cuda";

  // Device `device` (throws backend_error when there is none, with the runtime's reason).
  // The environment variables BLIP2_CUDA_TF32=0|1, BLIP2_CUDA_MATMUL=f32|bf16 and
  // BLIP2_CUDA_ATTENTION=auto|fused|batched-gemm set the defaults of the options below.
  explicit cuda_backend(int device = 0);
  ~cuda_backend();
  cuda_backend(cuda_backend&&) noexcept;
  cuda_backend& operator=(cuda_backend&&) noexcept;
  cuda_backend(const cuda_backend&) = delete;
  cuda_backend& operator=(const cuda_backend&) = delete;

  int device() const;
  std::string device_name() const;

  // float32 GEMMs (matmul, linear, the batched-GEMM attention) with TF32 tensor-core inputs: off by default,
  // because it rounds the inputs to 10-bit mantissas and the conformance tolerances are float32's.
  bool tf32() const { return tf32_; }
  void set_tf32(bool on) { tf32_ = on; }
  // The inputs of matmul, linear and attention's products: float32, or bf16 (both inputs of each product
  // rounded to bfloat16, f32 accumulation, f32 outputs and gradients; parameters stay float32).
  enum class matmul_precision { f32, bf16 };
  matmul_precision matmul() const { return matmul_; }
  void set_matmul(matmul_precision p) { matmul_ = p; }
  // Which attention kernels run: automatic (the fused kernel where the head size fits it, HS <= 128,
  // the batched GEMMs otherwise or in bf16), or one of the two where it applies.
  enum class attention_kernels { automatic, fused, batched_gemm };
  attention_kernels attention() const { return attention_; }
  void set_attention(attention_kernels k) { attention_ = k; }

  // The handles, as the runtime's types (cudaStream_t, cublasHandle_t, cublasLtHandle_t) cast to void*.
  void* stream() const;
  void* cublas() const;
  void* cublaslt() const;
  // The GEMM workspace (cuBLASLt) and its size in bytes.
  void* workspace() const;
  std::size_t workspace_bytes() const;
  // A device scratch buffer of at least n bytes; slot names a buffer so several can be live at once.
  // Grows to the largest size asked, so kernel calls do not allocate once shapes repeat.
  void* scratch(int slot, std::size_t bytes);
  // A host staging buffer of at least n bytes (strided copies to and from the host).
  void* host_staging(int slot, std::size_t bytes);
  // Wait for every kernel queued on the stream; a kernel's failure surfaces here as backend_error.
  void synchronize();

 private:
  std::unique_ptr<cuda_detail::resources> r_;
  bool tf32_ = false;
  matmul_precision matmul_ = matmul_precision::f32;
  attention_kernels attention_ = attention_kernels::automatic;
};

}  // namespace blip2

// In a kernel specialisation: the CUDA kernels are float32 (bf16 where an option says so), never double.
#define BLIP2_CUDA_FLOAT_ONLY(T, op_name)                                                              \
  static_assert(std::is_same_v<std::remove_const_t<T>, float>,                                         \
                "blip2: the cuda backend's " op_name " kernel is float32; run double on the reference " \
                "backend")
