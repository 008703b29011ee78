// fuzz_safetensors: libFuzzer target for the safetensors reader (blip2/io/safetensors.hpp).
//
// Build and run (clang 14 + libclang-rt-14-dev; one core, three minutes):
//   cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBLIP2_BUILD_FUZZERS=ON
//   cmake --build build-fuzz --target fuzz_safetensors -j2
//   mkdir -p build-fuzz/corpus
//   build-fuzz/tests/fuzz_safetensors build-fuzz/corpus tests/fuzz/corpus_safetensors \
//       -dict=tests/fuzz/safetensors.dict -max_len=4096 -jobs=1 -max_total_time=180
// (With -jobs the log goes to fuzz-0.log in the current directory; new inputs land in build-fuzz/corpus,
// the seeds in tests/fuzz/corpus_safetensors are only read. A crash writes crash-<sha1>: replay it with
// `build-fuzz/tests/fuzz_safetensors crash-<sha1>`.)
//
// What counts as a bug, besides what ASan/UBSan catch (out-of-bounds reads, overflow, leaks):
//   - any exception other than blip2::error escaping the reader (libFuzzer reports it as a crash);
//   - an accepted file whose tensors cannot all be loaded in every dtype-compatible way;
//   - an accepted file that does not survive write -> read with the same names, dtypes, shapes, bytes
//     and metadata.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "blip2/io/safetensors.hpp"

namespace {

[[noreturn]] void oracle_failed(const char* what) {
  std::fprintf(stderr, "fuzz_safetensors: oracle failed: %s\n", what);
  std::abort();
}

template <std::size_t R>
void try_view(const blip2::safetensors_file& f, const blip2::safetensors_tensor_info& t) {
  try {
    const auto v = f.view_f32<R>(t.name);
    if (v.size() != t.numel()) oracle_failed("view_f32 size");
    volatile float sink = 0;
    for (blip2::index_t i = 0; i < v.size(); ++i) sink = sink + v.data()[i];  // every element readable
  } catch (const blip2::value_error&) {
    // data not 4-byte aligned in the buffer: documented, load_f32 is the way
  }
}

void exercise(const blip2::safetensors_file& f) {
  for (const auto& t : f.tensors()) {
    if (&f.info(t.name) != &t) oracle_failed("info() finds another entry");
    if (f.bytes(t.name).size() != t.nbytes()) oracle_failed("bytes() size");
    using enum blip2::safetensors_dtype;
    const bool is_float = t.dtype == f32 || t.dtype == f16 || t.dtype == bf16 || t.dtype == f64;
    const bool is_int = !is_float && t.dtype != u64 && t.dtype != f8_e4m3 && t.dtype != f8_e5m2;
    if (is_float) {
      const auto a = f.load_dynamic<float>(t.name);
      const auto b = f.load_dynamic<double>(t.name);
      if (a.size() != t.numel() || b.size() != t.numel() || a.shape != t.shape) oracle_failed("float load size");
    } else if (is_int) {
      const auto a = f.load_dynamic<std::int64_t>(t.name);
      if (a.size() != t.numel()) oracle_failed("int load size");
    }
    if (t.dtype == f32) {
      switch (t.rank()) {
        case 0: try_view<0>(f, t); break;
        case 1: try_view<1>(f, t); break;
        case 2: try_view<2>(f, t); break;
        case 3: try_view<3>(f, t); break;
        default: break;
      }
      if (t.rank() == 2) {
        const auto h = f.load_f32<2>(t.name);
        if (h.size() != t.numel()) oracle_failed("load_f32<2> size");
      }
    }
  }
}

void round_trip(const blip2::safetensors_file& f) {
  std::vector<blip2::safetensors_entry> entries;
  for (const auto& t : f.tensors()) entries.emplace_back(t.name, t.dtype, t.shape, f.bytes(t.name));
  const blip2::safetensors_metadata meta(f.metadata().begin(), f.metadata().end());
  const auto again = blip2::serialize_safetensors(entries, meta);
  const auto g = blip2::safetensors_file::from_memory(again, "<round trip>");
  if (g.size() != f.size()) oracle_failed("round trip: tensor count");
  if (g.metadata() != f.metadata()) oracle_failed("round trip: metadata");
  for (const auto& t : f.tensors()) {
    if (!g.contains(t.name)) oracle_failed("round trip: name lost");
    const auto& u = g.info(t.name);
    if (u.dtype != t.dtype || u.shape != t.shape) oracle_failed("round trip: dtype or shape");
    const auto a = f.bytes(t.name);
    const auto b = g.bytes(t.name);
    if (a.size() != b.size() || (a.size() && std::memcmp(a.data(), b.data(), a.size()) != 0))
      oracle_failed("round trip: bytes");
    if (u.file_offset % blip2::dtype_size(u.dtype) != 0) oracle_failed("round trip: writer misaligned a tensor");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    const auto f = blip2::safetensors_file::from_memory(bytes, "<fuzz input>");
    exercise(f);
    round_trip(f);
  } catch (const blip2::format_error&) {
    // rejected input: the expected outcome for almost everything
  }
  return 0;
}
