# The CUDA part, blip2::cuda: the part's headers (include/blip2/backend/cuda/) compile with any C++20
# compiler; its kernels (src/cuda/*.cu) are compiled by nvcc into the static library blip2_cuda_kernels,
# which blip2::cuda links with the CUDA runtime, cuBLAS and cuBLASLt.
# Built when BLIP2_ENABLE_CUDA is on (the default) and nvcc is found: on PATH, through CUDACXX, or at
# /usr/local/cuda/bin/nvcc. A machine without nvcc gets one status line and no part. No GPU is needed to
# build; at run time cuda_available() says whether one is there.
# CMAKE_CUDA_ARCHITECTURES defaults to 90 (H100 / H200); set it for other GPUs ("80;90", ...).
include_guard(GLOBAL)

macro(blip2_add_cuda_part)
  option(BLIP2_ENABLE_CUDA "Build blip2::cuda (the CUDA backend) when nvcc is found" ON)
  set(BLIP2_WITH_CUDA OFF)
  if(BLIP2_ENABLE_CUDA)
    if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
      set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc CACHE FILEPATH "nvcc")
    endif()
    if(NOT CMAKE_CUDA_HOST_COMPILER AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      set(CMAKE_CUDA_HOST_COMPILER ${CMAKE_CXX_COMPILER} CACHE FILEPATH "nvcc's host compiler")
    endif()
    if(NOT CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90 CACHE STRING "GPU architectures of the CUDA part's kernels")
    endif()
    include(CheckLanguage)
    check_language(CUDA)
    if(CMAKE_CUDA_COMPILER)
      enable_language(CUDA)
      blip2_add_part(cuda FIND CUDAToolkit TARGETS CUDA::cudart CUDA::cublas CUDA::cublasLt DEFINE BLIP2_HAS_CUDA
                     DESCRIPTION "the CUDA backend")
    else()
      message(STATUS "blip2: nvcc not found; blip2::cuda (the CUDA backend) is not available")
    endif()
  else()
    message(STATUS "blip2: blip2::cuda (the CUDA backend) switched off (BLIP2_ENABLE_CUDA=OFF)")
  endif()
  if(BLIP2_WITH_CUDA)
    file(GLOB blip2_cuda_sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/cuda/*.cu)
    add_library(blip2_cuda_kernels STATIC ${blip2_cuda_sources})
    set_target_properties(blip2_cuda_kernels PROPERTIES POSITION_INDEPENDENT_CODE ON EXPORT_NAME cuda_kernels)
    target_link_libraries(blip2_cuda_kernels PUBLIC blip2 CUDA::cudart CUDA::cublas CUDA::cublasLt)
    # CMake 3.25 cannot say CUDA_STANDARD 20; nvcc takes it directly. Device code calls the library's
    # constexpr host functions (the Philox RNG of core/rng.hpp, the same code the CPU kernels run).
    target_compile_options(blip2_cuda_kernels PRIVATE
      $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20 --expt-relaxed-constexpr -Xcompiler=-Wall>)
    target_link_libraries(blip2_cuda INTERFACE blip2_cuda_kernels)
    install(TARGETS blip2_cuda_kernels EXPORT blip2_cudaTargets)
  endif()
endmacro()
