// blip2/models/vit/bf16.hpp: bfloat16 weights for the image encoder on the oneDNN backend: whether this
// CPU can have them (needs oneDNN; link blip2::onednn).
//
// The issue asks for the ViT's weights in bfloat16 on the oneDNN backend (bf16 source and weights, f32
// accumulation and output). oneDNN 2.6 implements such a matmul only on CPUs with AVX-512 (its
// AVX-512 ISAs; natively with avx512_core_bf16); there is no emulated path for AVX2 CPUs: creating the
// primitive fails with "unimplemented" (benchmarks/README.md says where this was seen). We ask oneDNN
// rather than guess from CPU flags: onednn_bf16_matmul_available() tries to create the primitive of a
// ViT-g linear (257 x 1408 -> 4224).
//
// Status: the bf16 forward itself is NOT implemented yet (no CPU with a bf16 matmul was at hand to run
// or test it). require_bf16_weights() therefore always throws backend_error: on a CPU
// without support it names the CPU's ISA; on a CPU with support it says that the path is missing.
#pragma once
#include <string>

#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/core/errors.hpp"

namespace blip2 {

// oneDNN's name for the instruction set it dispatches to on this CPU ("avx2", "avx512_core_bf16", ...).
inline std::string onednn_cpu_isa_name() {
  using dnnl::cpu_isa;
  switch (dnnl::get_effective_cpu_isa()) {
    case cpu_isa::all: return "all";
    case cpu_isa::sse41: return "sse41";
    case cpu_isa::avx: return "avx";
    case cpu_isa::avx2: return "avx2";
    case cpu_isa::avx2_vnni: return "avx2_vnni";
    case cpu_isa::avx512_mic: return "avx512_mic";
    case cpu_isa::avx512_mic_4ops: return "avx512_mic_4ops";
    case cpu_isa::avx512_core: return "avx512_core";
    case cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case cpu_isa::avx512_core_amx: return "avx512_core_amx";
  }
  return "unknown (dnnl_cpu_isa_t " + std::to_string(static_cast<int>(dnnl::get_effective_cpu_isa())) + ")";
}

// Whether oneDNN can create a matmul with bf16 source and weights and an f32 destination here.
inline bool onednn_bf16_matmul_available(onednn_backend& be) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  const dnnl::memory::dims a{257, 1408}, b{1408, 4224}, c{257, 4224};  // one ViT-g/14 qkv linear
  try {
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(dnnl::memory::desc(a, dt::bf16, tag::ab),
                                                       dnnl::memory::desc(b, dt::bf16, tag::any),
                                                       dnnl::memory::desc(c, dt::f32, tag::ab)),
                                    be.engine());
    return true;
  } catch (const dnnl::error&) {
    return false;  // dnnl_unimplemented: no bf16 matmul on this ISA
  }
}

// Throws backend_error: bfloat16 weights cannot be had (see the top of the file for why).
inline void require_bf16_weights(onednn_backend& be) {
  const std::string isa = onednn_cpu_isa_name();
  if (!onednn_bf16_matmul_available(be))
    throw backend_error("onednn: bfloat16 weights need oneDNN's bf16 matmul, which this CPU lacks (oneDNN's "
                        "effective ISA is " + isa + "; oneDNN 2.6 has a bf16 matmul only with AVX-512, "
                        "natively with avx512_core_bf16): use float32");
  throw backend_error("onednn: this CPU supports bf16 matmul (oneDNN ISA " + isa +
                      "), but the bfloat16 image-encoder path is not implemented yet: use float32");
}

}  // namespace blip2
