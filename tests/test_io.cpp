// test_io: the safetensors reader/writer (io/safetensors.hpp) and the Hugging Face Blip2Config reader
// (io/hf_config.hpp).
//
// Round trips for every dtype, the exact bytes the reference writer produces, F16/BF16 conversion
// (known bit patterns and all 65536 values), 0-d tensors, conversions and their errors; then one test per
// kind of bad input, each written byte by byte here, checking that the error names the file and says
// what was wrong.
#include <doctest/doctest.h>

#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "blip2/io/hf_config.hpp"
#include "blip2/io/safetensors.hpp"
#include "blip2/io/utf8.hpp"
#include "blip2/models/qformer/config.hpp"  // included twice on purpose: one definition
#include "harness/expect_error.hpp"
#include "harness/temp_dir.hpp"

using blip2::testing::temp_dir;
namespace fs = std::filesystem;
using blip2::index_t;
using blip2::safetensors_dtype;
using blip2::safetensors_entry;
using blip2::safetensors_file;

using blip2::testing::has;
using blip2::testing::message_of;

namespace {

// A fresh directory per test program run, removed at exit.
const fs::path& tmp() {
  static temp_dir d;
  return d.path;
}

void write_file(const fs::path& p, const std::vector<std::byte>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}
void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
  REQUIRE(out.good());
}

template <class T>
std::vector<std::byte> bytes_of(std::initializer_list<T> values) {
  std::vector<std::byte> out(values.size() * sizeof(T));
  std::size_t k = 0;
  for (T v : values) std::memcpy(out.data() + sizeof(T) * k++, &v, sizeof(T));
  return out;
}

// A file from parts: the 8-byte length (the header's own unless `n` says otherwise), the header text, and
// `data_bytes` bytes of data (0, 1, 2, ...).
std::vector<std::byte> raw_file(std::string_view header, std::size_t data_bytes, std::optional<std::uint64_t> n = {}) {
  std::vector<std::byte> out;
  const std::uint64_t len = n ? *n : header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>((len >> (8 * i)) & 0xff));
  for (char c : header) out.push_back(static_cast<std::byte>(c));
  for (std::size_t i = 0; i < data_bytes; ++i) out.push_back(static_cast<std::byte>(i & 0xff));
  return out;
}

void check_contains(const std::string& message, std::initializer_list<std::string_view> parts) {
  for (auto part : parts) {
    INFO("message: ", message);
    CHECK_MESSAGE(message.find(part) != std::string::npos, "expected to find: ", part);
  }
}

// The reader must refuse `bytes` with a format_error whose message holds every part, both from memory
// and from a file on disk (the mmap path).
void check_rejected(const std::vector<std::byte>& bytes, std::initializer_list<std::string_view> parts) {
  const auto msg = message_of<blip2::format_error>([&] { (void)safetensors_file::from_memory(bytes, "bad.safetensors"); });
  check_contains(msg, {"bad.safetensors"});
  check_contains(msg, parts);
  const fs::path p = tmp() / "bad.safetensors";
  write_file(p, bytes);
  const auto file_msg = message_of<blip2::format_error>([&] { (void)safetensors_file::open(p); });
  check_contains(file_msg, {p.string()});
  check_contains(file_msg, parts);
}

std::uint32_t bits(float f) { return std::bit_cast<std::uint32_t>(f); }

}  // namespace

// ============================================================================================ UTF-8 ===

TEST_CASE("utf8: valid text passes, each kind of malformed sequence is found at its offset") {
  CHECK(blip2::is_valid_utf8(""));
  CHECK(blip2::is_valid_utf8("plain ascii {\"a\": 1}"));
  CHECK(blip2::is_valid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF"));  // é € 😀 U+10FFFF
  CHECK(blip2::utf8_invalid_offset("ab\x80") == 2);              // stray continuation
  CHECK(blip2::utf8_invalid_offset("a\xC0\xAF") == 1);           // overlong '/'
  CHECK(blip2::utf8_invalid_offset("a\xE0\x80\xAF") == 1);       // overlong 3-byte
  CHECK(blip2::utf8_invalid_offset("\xED\xA0\x80") == 0);        // UTF-16 surrogate D800
  CHECK(blip2::utf8_invalid_offset("xx\xF4\x90\x80\x80") == 2);  // U+110000
  CHECK(blip2::utf8_invalid_offset("\xF5\x80\x80\x80") == 0);
  CHECK(blip2::utf8_invalid_offset("abc\xE2\x82") == 3);         // truncated at the end
  CHECK(blip2::utf8_invalid_offset("\xC3(") == 0);               // bad continuation
}

// ======================================================================================= safetensors ===

TEST_CASE("safetensors: 16-bit float conversion, known bit patterns") {
  using blip2::bf16_bits_to_float;
  using blip2::f16_bits_to_float;
  CHECK(f16_bits_to_float(0x3C00) == 1.0f);
  CHECK(f16_bits_to_float(0xC000) == -2.0f);
  CHECK(f16_bits_to_float(0x3800) == 0.5f);
  CHECK(f16_bits_to_float(0x3555) == 0.333251953125f);
  CHECK(f16_bits_to_float(0x7BFF) == 65504.0f);                     // largest finite half
  CHECK(f16_bits_to_float(0x0400) == std::ldexp(1.0f, -14));        // smallest normal
  CHECK(f16_bits_to_float(0x0001) == std::ldexp(1.0f, -24));        // smallest subnormal
  CHECK(f16_bits_to_float(0x03FF) == std::ldexp(1023.0f, -24));     // largest subnormal
  CHECK(f16_bits_to_float(0x8001) == -std::ldexp(1.0f, -24));
  CHECK(f16_bits_to_float(0x7C00) == std::numeric_limits<float>::infinity());
  CHECK(f16_bits_to_float(0xFC00) == -std::numeric_limits<float>::infinity());
  CHECK(bits(f16_bits_to_float(0x0000)) == 0x00000000u);
  CHECK(bits(f16_bits_to_float(0x8000)) == 0x80000000u);            // -0 keeps its sign
  CHECK(bits(f16_bits_to_float(0x7E00)) == 0x7FC00000u);            // quiet NaN
  CHECK(bits(f16_bits_to_float(0x7C01)) == 0x7F802000u);            // signalling NaN payload kept
  CHECK(std::isnan(f16_bits_to_float(0xFE00)));

  CHECK(bf16_bits_to_float(0x3F80) == 1.0f);
  CHECK(bf16_bits_to_float(0xC000) == -2.0f);
  CHECK(bf16_bits_to_float(0x4049) == 3.140625f);
  CHECK(bf16_bits_to_float(0x7F80) == std::numeric_limits<float>::infinity());
  CHECK(bf16_bits_to_float(0xFF80) == -std::numeric_limits<float>::infinity());
  CHECK(bf16_bits_to_float(0x0001) == std::ldexp(1.0f, -133));      // smallest subnormal
  CHECK(bits(bf16_bits_to_float(0x8000)) == 0x80000000u);
  CHECK(bits(bf16_bits_to_float(0x7FC1)) == 0x7FC10000u);
}

TEST_CASE("safetensors: F16 conversion of all 65536 values against the textbook formula") {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float got = blip2::f16_bits_to_float(static_cast<std::uint16_t>(h));
    const int sign = (h >> 15) ? -1 : 1;
    const int exp = (h >> 10) & 31;
    const int mant = h & 1023;
    if (exp == 31) {
      if (mant == 0) REQUIRE(got == sign * std::numeric_limits<float>::infinity());
      else REQUIRE(std::isnan(got));
      continue;
    }
    // subnormal: mant * 2^-24; normal: (1024 + mant) * 2^(exp - 25)
    const double want = sign * (exp == 0 ? std::ldexp(double(mant), -24) : std::ldexp(double(1024 + mant), exp - 25));
    INFO("half bits 0x", std::hex, h);
    REQUIRE(static_cast<double>(got) == want);
    REQUIRE(std::signbit(got) == (sign < 0));
#if defined(__FLT16_MANT_DIG__)
    _Float16 hw;  // the compiler's own conversion, where it has one
    const auto hb = static_cast<std::uint16_t>(h);
    std::memcpy(&hw, &hb, 2);
    REQUIRE(bits(static_cast<float>(hw)) == bits(got));
#endif
  }
  for (std::uint32_t b = 0; b < 65536; ++b)
    REQUIRE(bits(blip2::bf16_bits_to_float(static_cast<std::uint16_t>(b))) == b << 16);
}

TEST_CASE("safetensors: the writer's bytes are the reference writer's, byte for byte") {
  // Expected layout of the reference (Rust safetensors `serialize`) for one F32 tensor [1, 2, 3] = 0..5:
  // n = 64, the compact JSON with keys dtype, shape, data_offsets, no padding (64 is a multiple of 8).
  blip2::host_tensor<float, 3> t({1, 2, 3});
  for (int i = 0; i < 6; ++i) t[i] = static_cast<float>(i);
  const auto out = blip2::serialize_safetensors({safetensors_entry::of("attn.0", t)});
  const std::string header = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  REQUIRE(header.size() == 64);
  auto want = raw_file(header, 0);
  const auto data = bytes_of<float>({0, 1, 2, 3, 4, 5});
  want.insert(want.end(), data.begin(), data.end());
  CHECK(out == want);

  // No tensors: "{}" padded to 8 with spaces; with metadata: 35 bytes of JSON padded to 40.
  CHECK(blip2::serialize_safetensors({}) == raw_file("{}      ", 0));
  CHECK(blip2::serialize_safetensors({}, {{"framework", "pt"}}) ==
        raw_file(R"({"__metadata__":{"framework":"pt"}}     )", 0));
  // Shorter name: padded with 7 spaces so the data starts 8-aligned.
  const auto aligned = blip2::serialize_safetensors({safetensors_entry::of("attn0", t)});
  const auto f = safetensors_file::from_memory(aligned);
  CHECK(f.header_size() == 64);
  CHECK(f.data_offset() % 8 == 0);
}

TEST_CASE("safetensors: round trip through a file, every dtype, metadata, alignment, names in offset order") {
  const fs::path p = tmp() / "roundtrip.safetensors";
  blip2::host_tensor<float, 2> f32({2, 3});
  for (int i = 0; i < 6; ++i) f32[i] = 0.25f * static_cast<float>(i) - 1.0f;
  blip2::host_tensor<double, 1> f64({3});
  f64[0] = 1e-300;
  f64[1] = -2.5;
  f64[2] = 1.0 / 3.0;
  blip2::host_tensor<std::int64_t, 2> i64({1, 2});
  i64[0] = -(std::int64_t{1} << 40);
  i64[1] = 7;
  blip2::host_tensor<std::int32_t, 1> i32({3});
  i32[0] = -5;
  i32[1] = 0;
  i32[2] = 2147483647;
  blip2::host_tensor<std::uint8_t, 1> u8({4});
  for (int i = 0; i < 4; ++i) u8[i] = static_cast<std::uint8_t>(250 + i);
  const auto boolean = bytes_of<std::uint8_t>({1, 0, 1});
  const auto f16 = bytes_of<std::uint16_t>({0x3C00, 0xC000, 0x7C00, 0x0001, 0x8000});
  const auto bf16 = bytes_of<std::uint16_t>({0x3F80, 0xC000, 0x4049});
  blip2::host_tensor<float, 0> scalar(blip2::extents_t<0>{}, 0.07f);  // 0-d: one element
  blip2::host_tensor<float, 2> empty({0, 4});

  const std::vector<safetensors_entry> all = {
      safetensors_entry("half", safetensors_dtype::f16, {5}, std::span<const std::byte>(f16)),
      safetensors_entry::of("weights.f32", f32),
      safetensors_entry("flags", safetensors_dtype::boolean, {3}, std::span<const std::byte>(boolean)),
      safetensors_entry::of("f64", f64),
      safetensors_entry("brain", safetensors_dtype::bf16, {3}, std::span<const std::byte>(bf16)),
      safetensors_entry::of("ids", i64),
      safetensors_entry::of("i32", i32),
      safetensors_entry::of("bytes", u8),
      safetensors_entry::of("temp", scalar),
      safetensors_entry::of("empty", empty),
  };
  blip2::save_safetensors(p, all, {{"format", "pt"}, {"note", "caf\xC3\xA9"}});
  CHECK_FALSE(fs::exists(p.string() + ".tmp." + std::to_string(::getpid())));

  const auto f = safetensors_file::open(p);
  CHECK(f.label() == p.string());
  CHECK(f.size() == all.size());
  CHECK(f.header_size() % 8 == 0);
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.metadata().at("note") == "caf\xC3\xA9");
  // Data order: 8-byte types first, then 4, 2, 1, insertion order within a size.
  const std::vector<std::string> want_order = {"f64", "ids", "weights.f32", "i32", "temp", "empty",
                                               "half", "brain", "flags", "bytes"};
  CHECK(f.names() == want_order);
  for (const auto& t : f.tensors()) {
    INFO(t.name);
    CHECK(t.file_offset % blip2::dtype_size(t.dtype) == 0);  // every tensor aligned to its element size
    CHECK(t.nbytes() == static_cast<std::uint64_t>(t.numel()) * blip2::dtype_size(t.dtype));
  }

  CHECK(f.info("weights.f32").dtype == safetensors_dtype::f32);
  CHECK(f.info("weights.f32").shape == std::vector<index_t>{2, 3});
  const auto w = f.load_f32<2>("weights.f32");
  CHECK(w.shape() == f32.shape());
  CHECK(w.storage() == f32.storage());
  const auto wv = f.view_f32<2>("weights.f32");  // zero copy: points into the mapping
  CHECK(wv(1, 2) == f32(1, 2));
  CHECK(static_cast<const void*>(wv.data()) == static_cast<const void*>(f.bytes("weights.f32").data()));

  const auto d = f.load_f64<1>("f64");
  CHECK(d.storage() == f64.storage());
  const auto d32 = f.load_f32<1>("f64");  // narrowed
  CHECK(d32[1] == -2.5f);
  CHECK(f.load_i64<2>("ids").storage() == i64.storage());
  CHECK(f.load_i64<1>("i32").storage() == std::vector<std::int64_t>{-5, 0, 2147483647});
  CHECK(f.load_i64<1>("bytes").storage() == std::vector<std::int64_t>{250, 251, 252, 253});
  CHECK(f.load_i64<1>("flags").storage() == std::vector<std::int64_t>{1, 0, 1});

  const auto h = f.load_f32<1>("half");
  CHECK(h[0] == 1.0f);
  CHECK(h[1] == -2.0f);
  CHECK(h[2] == std::numeric_limits<float>::infinity());
  CHECK(h[3] == std::ldexp(1.0f, -24));
  CHECK(bits(h[4]) == 0x80000000u);
  CHECK(f.load_f64<1>("half").storage()[3] == std::ldexp(1.0, -24));
  const auto b = f.load_f32<1>("brain");
  CHECK(b.storage() == std::vector<float>{1.0f, -2.0f, 3.140625f});

  // 0-d tensor: shape [], one element, loads as rank 0 and as a dynamic tensor with an empty shape.
  CHECK(f.info("temp").shape.empty());
  CHECK(f.info("temp").numel() == 1);
  CHECK(f.load_f32<0>("temp").data()[0] == 0.07f);
  CHECK(f.view_f32<0>("temp").data()[0] == 0.07f);
  const auto dyn = f.load_dynamic<float>("temp");
  CHECK(dyn.shape.empty());
  CHECK(dyn.data == std::vector<float>{0.07f});
  // Empty tensor: shape (0, 4), no bytes.
  CHECK(f.info("empty").nbytes() == 0);
  CHECK(f.load_f32<2>("empty").size() == 0);

  // The raw bytes of any dtype, zero-copy.
  CHECK(f.bytes("half").size() == 10);
  CHECK(std::memcmp(f.bytes("half").data(), f16.data(), 10) == 0);

  // Re-serialising what was read gives the same file.
  std::vector<safetensors_entry> again;
  for (const auto& t : f.tensors()) again.emplace_back(t.name, t.dtype, t.shape, f.bytes(t.name));
  blip2::safetensors_metadata meta(f.metadata().begin(), f.metadata().end());
  std::ifstream in(p, std::ios::binary);
  std::vector<char> file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto re = blip2::serialize_safetensors(again, meta);
  REQUIRE(re.size() == file.size());
  CHECK(std::memcmp(re.data(), file.data(), file.size()) == 0);
}

TEST_CASE("safetensors: save replaces a file atomically and reports failures") {
  const fs::path p = tmp() / "atomic.safetensors";
  blip2::host_tensor<float, 1> a({2}, 1.0f), b({3}, 2.0f);
  blip2::save_safetensors(p, {safetensors_entry::of("x", a)});
  blip2::save_safetensors(p, {safetensors_entry::of("x", b)});  // over an existing file
  CHECK(safetensors_file::open(p).info("x").shape == std::vector<index_t>{3});
  for (const auto& e : fs::directory_iterator(tmp()))
    CHECK_MESSAGE(e.path().filename().string().find(".tmp.") == std::string::npos, e.path());

  const auto msg = message_of<blip2::format_error>(
      [&] { blip2::save_safetensors(tmp() / "no_such_dir" / "x.safetensors", {safetensors_entry::of("x", a)}); });
  check_contains(msg, {"no_such_dir", "cannot create"});
}

TEST_CASE("safetensors: entries from strided views and temporaries; writer argument checks") {
  blip2::host_tensor<float, 2> m({2, 3});
  for (int i = 0; i < 6; ++i) m[i] = static_cast<float>(i);
  // A transposed view is written in its own row-major order: (3, 2).
  const auto bytes = blip2::serialize_safetensors({safetensors_entry::of("mt", blip2::transpose(m.view())),
                                                   safetensors_entry::of("tmp", blip2::host_tensor<float, 1>({2}, 9.0f))});
  const auto f = safetensors_file::from_memory(bytes);
  const auto mt = f.load_f32<2>("mt");
  CHECK(mt.shape() == blip2::extents_t<2>{3, 2});
  CHECK(mt.storage() == std::vector<float>{0, 3, 1, 4, 2, 5});
  CHECK(f.load_f32<1>("tmp").storage() == std::vector<float>{9, 9});  // the temporary was copied

  // read_into a strided destination
  blip2::host_tensor<float, 2> back({2, 3});
  f.read_into("mt", blip2::transpose(back.view()));
  CHECK(back.storage() == m.storage());

  const auto two = bytes_of<float>({1, 2});
  check_contains(message_of<blip2::shape_error>([&] {
                   safetensors_entry("x", safetensors_dtype::f32, {3}, std::span<const std::byte>(two));
                 }),
                 {"'x'", "needs 12 bytes", "8 were given"});
  check_contains(message_of<blip2::value_error>([&] {
                   (void)blip2::serialize_safetensors({safetensors_entry::of("x", m), safetensors_entry::of("x", m)});
                 }),
                 {"'x'", "twice"});
  check_contains(message_of<blip2::value_error>(
                     [&] { (void)blip2::serialize_safetensors({safetensors_entry::of("__metadata__", m)}); }),
                 {"__metadata__"});
  check_contains(message_of<blip2::value_error>(
                     [&] { (void)blip2::serialize_safetensors({safetensors_entry::of("bad\xFF", m)}); }),
                 {"UTF-8"});
}

TEST_CASE("safetensors: load errors name the file, the tensor and the mismatch") {
  blip2::host_tensor<float, 2> m({2, 3});
  blip2::host_tensor<std::int64_t, 1> ids({4});
  const auto bytes = blip2::serialize_safetensors({safetensors_entry::of("m", m), safetensors_entry::of("ids", ids)});
  const auto f = safetensors_file::from_memory(bytes, "mem.safetensors");

  check_contains(message_of<blip2::format_error>([&] { (void)f.info("nope"); }), {"mem.safetensors", "'nope'"});
  check_contains(message_of<blip2::shape_error>([&] { (void)f.load_f32<3>("m"); }),
                 {"mem.safetensors", "'m'", "(2, 3)", "rank 3"});
  blip2::host_tensor<float, 2> wrong({3, 2});
  check_contains(message_of<blip2::shape_error>([&] { f.read_into("m", wrong); }), {"'m'", "(2, 3)", "(3, 2)"});
  check_contains(message_of<blip2::format_error>([&] { (void)f.load_f32<1>("ids"); }), {"'ids'", "I64", "float32"});
  check_contains(message_of<blip2::format_error>([&] { (void)f.load_i64<2>("m"); }), {"'m'", "F32", "int64"});
  check_contains(message_of<blip2::format_error>([&] { (void)f.view_f32<1>("ids"); }), {"'ids'", "I64", "F32"});

  // A header length of 10 puts the data at file offset 18: viewable as bytes, not as float in place.
  const std::string header = R"({"v":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  std::string padded = header;  // pad to 4k + 2 so that 8 + n is 2 mod 4
  while ((8 + padded.size()) % 4 != 2) padded += ' ';
  const auto odd = raw_file(padded, 4);
  const auto g = safetensors_file::from_memory(odd);
  check_contains(message_of<blip2::value_error>([&] { (void)g.view_f32<1>("v"); }), {"'v'", "aligned", "load_f32"});
  std::uint32_t want = 0x03020100u;  // the data bytes are 0, 1, 2, 3
  CHECK(bits(g.load_f32<1>("v")[0]) == want);
}

// ---- bad input, one test each ----

TEST_CASE("safetensors bad input: missing file, directory") {
  check_contains(message_of<blip2::format_error>([&] { (void)safetensors_file::open(tmp() / "absent.safetensors"); }),
                 {"absent.safetensors", "cannot open"});
  check_contains(message_of<blip2::format_error>([&] { (void)safetensors_file::open(tmp()); }), {"not a regular file"});
}

namespace {
// One header entry: "name":{"dtype":...,"shape":[...],"data_offsets":[b,e]}
std::string entry(std::string_view name, std::string_view dtype, std::string_view shape, std::uint64_t b,
                  std::uint64_t e) {
  return "\"" + std::string(name) + "\":{\"dtype\":\"" + std::string(dtype) + "\",\"shape\":" + std::string(shape) +
         ",\"data_offsets\":[" + std::to_string(b) + "," + std::to_string(e) + "]}";
}
}  // namespace

TEST_CASE("safetensors bad input: file shorter than the 8-byte length") {
  check_rejected({}, {"0 bytes", "too short", "offset 0"});
  check_rejected(std::vector<std::byte>(5), {"5 bytes", "too short"});
}

TEST_CASE("safetensors bad input: header length over the 100 MB limit") {
  check_rejected(raw_file("{}", 0, 100'000'001), {"header length 100000001", "exceeds the limit of 100000000"});
  check_rejected(raw_file("{}", 0, ~std::uint64_t{0}), {"exceeds the limit"});
}

TEST_CASE("safetensors bad input: header length past the end of the file (truncated header)") {
  check_rejected(raw_file("{}", 0, 64), {"header length 64", "runs past the end", "10 bytes", "truncated"});
}

TEST_CASE("safetensors bad input: data buffer shorter than the offsets say (truncated data)") {
  check_rejected(raw_file("{" + entry("w", "F32", "[2,2]", 0, 16) + "}", 10),
                 {"tensor 'w'", "[0, 16]", "past the data buffer, which has 10 bytes", "truncated"});
}

TEST_CASE("safetensors bad input: every truncation of a valid file is refused") {
  blip2::host_tensor<float, 2> m({2, 3}, 1.5f);
  blip2::host_tensor<std::int64_t, 0> s(blip2::extents_t<0>{}, 3);
  const auto good = blip2::serialize_safetensors({safetensors_entry::of("m", m), safetensors_entry::of("s", s)},
                                                 {{"k", "v"}});
  CHECK_NOTHROW((void)safetensors_file::from_memory(good));
  for (std::size_t len = 0; len < good.size(); ++len) {
    INFO("prefix of ", len, " bytes");
    const std::vector<std::byte> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(len));
    CHECK_THROWS_AS((void)safetensors_file::from_memory(cut), blip2::format_error);
  }
}

TEST_CASE("safetensors bad input: corrupted bytes give format_error or a valid file, nothing else") {
  blip2::host_tensor<float, 2> m({2, 3}, 1.5f);
  const auto good = blip2::serialize_safetensors({safetensors_entry::of("m", m)}, {{"k", "v"}});
  const auto header_end = static_cast<std::size_t>(8 + safetensors_file::from_memory(good).header_size());
  int rejected = 0;
  for (std::size_t pos = 0; pos < header_end; ++pos) {
    for (int v = 0; v < 256; ++v) {
      auto bad = good;
      if (bad[pos] == static_cast<std::byte>(v)) continue;
      bad[pos] = static_cast<std::byte>(v);
      try {
        const auto f = safetensors_file::from_memory(bad);
        for (const auto& t : f.tensors()) (void)f.bytes(t.name);  // accepted: must be usable
      } catch (const blip2::format_error&) {
        ++rejected;
      }
    }
  }
  CHECK(rejected > 0);
  // One specific corruption: the end offset 24 becomes 34.
  auto bad = good;
  const std::string text(reinterpret_cast<const char*>(good.data()) + 8, header_end - 8);
  const auto at = text.find("[0,24]");
  REQUIRE(at != std::string::npos);
  bad[8 + at + 3] = static_cast<std::byte>('3');
  check_rejected(bad, {"tensor 'm'", "[0, 34]"});
}

TEST_CASE("safetensors bad input: header not UTF-8") {
  check_rejected(raw_file("{\"w\xFF\":1}", 0), {"not valid UTF-8", "0xFF", "file offset 11"});
  check_rejected(raw_file("{\"\xED\xA0\x80\":1}", 0), {"not valid UTF-8", "0xED", "file offset 10"});
}

TEST_CASE("safetensors bad input: header not JSON, not an object, or padded with something else than spaces") {
  check_rejected(raw_file("{\"w\":{\"dtype\":\"F32\",}", 0), {"not valid JSON"});
  check_rejected(raw_file("", 0), {"not valid JSON"});
  check_rejected(raw_file("[1,2]   ", 0), {"file offset 8", "JSON array", "expected a JSON object"});
  // nlohmann's lexer stops at a NUL byte as if the input ended there; serde (the reference) refuses it.
  check_rejected(raw_file(std::string("{}\0\0\0\0\0\0", 8), 0), {"not valid JSON", "NUL byte at file offset 10"});
  check_rejected(raw_file(std::string("{}\0{\"x\":1}", 10), 0), {"NUL byte at file offset 10"});
  // A number beyond double range: nlohmann throws out_of_range, not parse_error (found by the fuzzer).
  check_rejected(raw_file("{" + entry("w", "F32", "[1e400]", 0, 4) + "}", 4), {"not valid JSON", "number overflow"});
  const auto spaced = raw_file("{}  \n\t  ", 0);
  CHECK_NOTHROW((void)safetensors_file::from_memory(spaced));  // JSON whitespace is fine
}

TEST_CASE("safetensors bad input: duplicate keys (which a JSON parser would silently drop)") {
  const auto e = entry("w", "F32", "[1]", 0, 4);
  check_rejected(raw_file("{" + e + "," + e + "}", 4), {"duplicate key 'w'", "top-level object"});
  check_rejected(raw_file(R"({"w":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4),
                 {"duplicate key 'dtype'", "object of key 'w'"});
  check_rejected(raw_file(R"({"__metadata__":{"a":"1","a":"2"}})", 0), {"duplicate key 'a'", "'__metadata__'"});
}

TEST_CASE("safetensors bad input: dtype unknown or of the wrong type") {
  check_rejected(raw_file("{" + entry("w", "F17", "[1]", 0, 4) + "}", 4), {"tensor 'w'", "unknown dtype \"F17\""});
  check_rejected(raw_file("{" + entry("w", "f32", "[1]", 0, 4) + "}", 4), {"unknown dtype \"f32\""});
  check_rejected(raw_file(R"({"w":{"dtype":32,"shape":[1],"data_offsets":[0,4]}})", 4),
                 {"tensor 'w'", "\"dtype\" is a JSON number", "expected a string"});
}

TEST_CASE("safetensors bad input: shape not a list of non-negative integers") {
  check_rejected(raw_file("{" + entry("w", "F32", "[-1]", 0, 4) + "}", 4), {"shape[0] is the negative integer -1"});
  check_rejected(raw_file("{" + entry("w", "F32", "[1.5]", 0, 4) + "}", 4), {"shape[0] is the non-integer 1.5"});
  check_rejected(raw_file("{" + entry("w", "F32", "[1,\"2\"]", 0, 8) + "}", 8), {"shape[1] is a JSON string"});
  check_rejected(raw_file("{" + entry("w", "F32", "4", 0, 16) + "}", 16), {"\"shape\" is a JSON number"});
  check_rejected(raw_file("{" + entry("w", "F32", "[9223372036854775808,0]", 0, 0) + "}", 0),
                 {"shape[0] = 9223372036854775808", "overflows"});
}

TEST_CASE("safetensors bad input: data_offsets malformed or reversed") {
  check_rejected(raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4), {"a list of 1 elements", "[begin, end]"});
  check_rejected(raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-1,3]}})", 4), {"begin is the negative integer -1"});
  check_rejected(raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":"0,4"}})", 4), {"\"data_offsets\" is a JSON string"});
  check_rejected(raw_file("{" + entry("w", "F32", "[0]", 8, 4) + "}", 8), {"tensor 'w'", "[8, 4]", "end before begin"});
}

TEST_CASE("safetensors bad input: an entry that is not an object or lacks a field") {
  check_rejected(raw_file(R"({"w":[1]})", 0), {"tensor 'w'", "entry is a JSON array"});
  check_rejected(raw_file(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4), {"tensor 'w'", "no \"dtype\""});
  check_rejected(raw_file(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", 4), {"no \"shape\""});
  check_rejected(raw_file(R"({"w":{"dtype":"F32","shape":[1]}})", 4), {"no \"data_offsets\""});
  // Unknown extra keys are ignored, as the reference does.
  const auto extra = raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":{"x":[1]}}})", 4);
  CHECK_NOTHROW((void)safetensors_file::from_memory(extra));
}

TEST_CASE("safetensors bad input: shape x dtype size differs from the byte range") {
  check_rejected(raw_file("{" + entry("w", "F32", "[2,2]", 0, 12) + "}", 12),
                 {"tensor 'w'", "[0, 12]", "span 12 bytes", "(2, 2) x F32 (4 bytes) needs 16"});
  check_rejected(raw_file("{" + entry("h", "BF16", "[]", 0, 4) + "}", 4), {"tensor 'h'", "() x BF16 (2 bytes) needs 2"});
}

TEST_CASE("safetensors bad input: element count or byte size overflows") {
  check_rejected(raw_file("{" + entry("w", "F32", "[4294967296,4294967296,0]", 0, 0) + "}", 0),
                 {"tensor 'w'", "more elements than 2^64"});
  check_rejected(raw_file("{" + entry("w", "F32", "[4611686018427387904]", 0, 0) + "}", 0),
                 {"tensor 'w'", "x F32 overflows 2^64 bytes"});
}

TEST_CASE("safetensors bad input: offsets with a gap, an overlap, a late start, or trailing bytes") {
  check_rejected(raw_file("{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("b", "F32", "[1]", 8, 12) + "}", 12),
                 {"tensor 'b'", "[8, 12]", "gap", "bytes [4, 8)", "'a' ends at 4"});
  check_rejected(raw_file("{" + entry("a", "F32", "[1]", 4, 8) + "}", 8), {"tensor 'a'", "gap", "bytes [0, 4)"});
  check_rejected(raw_file("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 4, 12) + "}", 12),
                 {"tensor 'b'", "overlap the previous tensor 'a', which ends at 8"});
  check_rejected(raw_file("{" + entry("a", "F32", "[1]", 0, 4) + "}", 6),
                 {"cover 4 bytes", "has 6 bytes", "2 bytes after the last tensor"});
  check_rejected(raw_file("{}", 3), {"cover 0 bytes", "has 3 bytes"});
  // Entries in any order in the JSON are fine as long as, sorted by offset, they tile the buffer.
  const auto unordered = raw_file("{" + entry("z", "F32", "[1]", 0, 4) + "," + entry("a", "U8", "[2]", 4, 6) + "}", 6);
  const auto f = safetensors_file::from_memory(unordered);
  CHECK(f.names() == std::vector<std::string>{"z", "a"});
}

TEST_CASE("safetensors bad input: __metadata__ not a map of string to string") {
  check_rejected(raw_file(R"({"__metadata__":[1]})", 0), {"\"__metadata__\" is a JSON array", "string to string"});
  check_rejected(raw_file(R"({"__metadata__":{"a":1}})", 0), {"\"__metadata__\" entry 'a' is a JSON number"});
  const auto null_meta = raw_file(R"({"__metadata__":null})", 0);
  const auto f = safetensors_file::from_memory(null_meta);  // null: absent
  CHECK(f.metadata().empty());
}

TEST_CASE("safetensors bad input: JSON nested too deeply") {
  const std::string deep = std::string(70, '[') + std::string(70, ']');
  check_rejected(raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":)" + deep + "}}", 4),
                 {"nested deeper than 64"});
}

// ======================================================================================== HF config ===

namespace {
fs::path config_file(const std::string& name, const std::string& text) {
  const fs::path p = tmp() / name;
  write_text(p, text);
  return p;
}
// load_blip2_config must refuse `text` with a format_error naming the file and holding every part.
void check_config_rejected(const std::string& text, std::initializer_list<std::string_view> parts) {
  const auto p = config_file("bad_config.json", text);
  const auto msg = message_of<blip2::format_error>([&] { (void)blip2::load_blip2_config(p); });
  check_contains(msg, {"bad_config.json"});
  check_contains(msg, parts);
}
std::string with_qformer(const std::string& fields) {
  return R"({"model_type":"blip-2","qformer_config":{)" + fields + "}}";
}
}  // namespace

TEST_CASE("hf config: absent fields take the released model's values") {
  const auto cfg = blip2::load_blip2_config(config_file("min.json", R"({"model_type": "blip-2"})"));
  const auto& q = cfg.qformer;
  CHECK(q.vocab_size == 30522);
  CHECK(q.hidden_size == 768);
  CHECK(q.num_hidden_layers == 12);
  CHECK(q.num_attention_heads == 12);
  CHECK(q.intermediate_size == 3072);
  CHECK(q.hidden_act == "gelu");
  CHECK(q.hidden_dropout_prob == 0.1);
  CHECK(q.attention_probs_dropout_prob == 0.1);
  CHECK(q.max_position_embeddings == 512);
  CHECK(q.layer_norm_eps == 1e-12);
  CHECK(q.pad_token_id == std::optional<index_t>(0));
  CHECK_FALSE(q.bos_token_id.has_value());
  CHECK(q.dec_token_id() == 30521);
  CHECK(q.cross_attention_frequency == 2);
  CHECK(q.encoder_hidden_size == 1408);
  CHECK(q.head_size() == 64);
  CHECK(q.has_cross_attention(0));
  CHECK_FALSE(q.has_cross_attention(1));
  CHECK(q.has_cross_attention(10));
  CHECK(cfg.num_query_tokens == 32);
  CHECK(cfg.image_text_hidden_size == 256);
  CHECK(cfg.vision_config == nlohmann::json::object());
  CHECK(cfg.text_config == nlohmann::json::object());
}

TEST_CASE("hf config: a full config.json in the layout transformers writes") {
  const std::string text = R"({
  "architectures": ["Blip2ForImageTextRetrieval"],
  "initializer_factor": 1.0,
  "initializer_range": 0.02,
  "image_text_hidden_size": 256,
  "model_type": "blip-2",
  "num_query_tokens": 32,
  "qformer_config": {
    "attention_probs_dropout_prob": 0.1,
    "classifier_dropout": null,
    "cross_attention_frequency": 2,
    "encoder_hidden_size": 1408,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "blip_2_qformer",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "use_qformer_text_input": true,
    "vocab_size": 30523
  },
  "text_config": {"model_type": "opt", "hidden_size": 2560},
  "torch_dtype": "float32",
  "transformers_version": "4.45.0",
  "vision_config": {"hidden_size": 1408, "num_hidden_layers": 39, "model_type": "blip_2_vision_model"}
})";
  const auto cfg = blip2::load_blip2_config(config_file("full.json", text));
  CHECK(cfg.qformer.vocab_size == 30523);
  CHECK(cfg.qformer.dec_token_id() == 30522);
  CHECK(cfg.qformer.use_qformer_text_input);
  CHECK(cfg.vision_config.at("num_hidden_layers") == 39);
  CHECK(cfg.text_config.at("hidden_size") == 2560);
}

TEST_CASE("hf config: a small custom Q-Former, bos and pad ids, the vision width as encoder width") {
  const auto cfg = blip2::load_blip2_config(config_file("small.json", R"({
    "num_query_tokens": 4, "image_text_hidden_size": 16,
    "qformer_config": {"vocab_size": 100, "hidden_size": 24, "num_hidden_layers": 3, "num_attention_heads": 4,
                       "intermediate_size": 40, "layer_norm_eps": 1e-6, "cross_attention_frequency": 3,
                       "hidden_dropout_prob": 0, "attention_probs_dropout_prob": 0.0, "bos_token_id": 7,
                       "pad_token_id": null, "max_position_embeddings": 32},
    "vision_config": {"hidden_size": 40}})"));
  const auto& q = cfg.qformer;
  CHECK(q.hidden_size == 24);
  CHECK(q.head_size() == 6);
  CHECK(q.dec_token_id() == 7);
  CHECK_FALSE(q.pad_token_id.has_value());
  CHECK(q.encoder_hidden_size == 40);  // from vision_config.hidden_size, as transformers does
  CHECK(q.layer_norm_eps == 1e-6);
  CHECK(q.hidden_dropout_prob == 0.0);
  CHECK(q.has_cross_attention(0));
  CHECK_FALSE(q.has_cross_attention(2));
  CHECK(q.has_cross_attention(3));
  CHECK(cfg.num_query_tokens == 4);
  CHECK(cfg.image_text_hidden_size == 16);
  const blip2::qformer_model_config m = blip2::to_model_config(cfg, false);
  CHECK(m.qformer.hidden_size == 24);
  CHECK(m.num_query_tokens == 4);
  CHECK(m.image_text_hidden_size == 16);
  CHECK_FALSE(m.with_text);
  // From parsed JSON too, with the source named in errors.
  const auto j = nlohmann::json::parse(R"({"qformer_config": {"hidden_size": 10}})");
  check_contains(message_of<blip2::format_error>([&] { (void)blip2::parse_blip2_config(j, "inline"); }),
                 {"'inline'", "hidden_size = 10", "num_attention_heads = 12"});
}

TEST_CASE("hf config bad input: missing file, directory, not JSON, not an object, not a Blip2Config") {
  check_contains(message_of<blip2::format_error>([&] { (void)blip2::load_blip2_config(tmp() / "absent.json"); }),
                 {"absent.json", "no such file"});
  check_contains(message_of<blip2::format_error>([&] { (void)blip2::load_blip2_config(tmp()); }), {"not a regular file"});
  check_config_rejected(R"({"model_type": "blip-2",)", {"not valid JSON"});
  check_config_rejected(std::string("{\"model_type\": \"blip-2\"}\0{\"num_query_tokens\": 0}", 48), {"NUL byte at byte 24"});
  check_config_rejected(R"({"model_type": "blip-2", "qformer_config": {"layer_norm_eps": 1e400}})",
                        {"not valid JSON", "number overflow"});
  check_config_rejected("[1, 2]", {"top level is a JSON array"});
  check_config_rejected(R"({"model_type": "opt", "hidden_size": 768})", {"'model_type'", "\"opt\"", "\"blip-2\""});
  check_config_rejected(R"({"do_lower_case": true})", {"missing field 'qformer_config'", "not a Blip2Config"});
  check_config_rejected(R"({"model_type": "blip-2", "qformer_config": [1]})", {"'qformer_config'", "expected an object"});
}

TEST_CASE("hf config bad input: fields of the wrong type") {
  check_config_rejected(with_qformer(R"("hidden_size": 768.5)"), {"'qformer_config.hidden_size'", "768.5", "integer"});
  check_config_rejected(with_qformer(R"("hidden_size": "768")"), {"'qformer_config.hidden_size'", "string", "integer"});
  check_config_rejected(with_qformer(R"("hidden_size": null)"), {"'qformer_config.hidden_size'", "null"});
  check_config_rejected(with_qformer(R"("layer_norm_eps": "1e-12")"), {"'qformer_config.layer_norm_eps'", "number"});
  check_config_rejected(with_qformer(R"("hidden_act": 1)"), {"'qformer_config.hidden_act'", "string"});
  check_config_rejected(with_qformer(R"("use_qformer_text_input": 1)"), {"'qformer_config.use_qformer_text_input'", "true or false"});
  check_config_rejected(R"({"model_type": "blip-2", "num_query_tokens": 32.0})", {"'num_query_tokens'", "integer"});
  check_config_rejected(R"({"model_type": "blip-2", "vision_config": {"hidden_size": "big"}})", {"'vision_config.hidden_size'"});
}

TEST_CASE("hf config bad input: inconsistent or out-of-domain values") {
  check_config_rejected(with_qformer(R"("hidden_size": 768, "num_attention_heads": 10)"),
                        {"hidden_size = 768", "not divisible", "num_attention_heads = 10"});
  check_config_rejected(with_qformer(R"("hidden_size": 0)"), {"'qformer_config.hidden_size' = 0", ">= 1"});
  check_config_rejected(with_qformer(R"("num_hidden_layers": -2)"), {"'qformer_config.num_hidden_layers' = -2"});
  check_config_rejected(with_qformer(R"("num_attention_heads": 0)"), {"'qformer_config.num_attention_heads' = 0"});
  check_config_rejected(with_qformer(R"("intermediate_size": 0)"), {"'qformer_config.intermediate_size' = 0"});
  check_config_rejected(with_qformer(R"("vocab_size": 0)"), {"'qformer_config.vocab_size' = 0"});
  check_config_rejected(with_qformer(R"("max_position_embeddings": 0)"), {"'qformer_config.max_position_embeddings'"});
  check_config_rejected(with_qformer(R"("encoder_hidden_size": -1)"), {"'qformer_config.encoder_hidden_size' = -1"});
  check_config_rejected(with_qformer(R"("cross_attention_frequency": 0)"), {"cross_attention_frequency' = 0", ">= 1"});
  check_config_rejected(with_qformer(R"("layer_norm_eps": 0)"), {"'qformer_config.layer_norm_eps' = 0", "> 0"});
  check_config_rejected(with_qformer(R"("layer_norm_eps": -1e-5)"), {"'qformer_config.layer_norm_eps'"});
  check_config_rejected(with_qformer(R"("hidden_dropout_prob": 1.0)"), {"'qformer_config.hidden_dropout_prob' = 1", "[0, 1)"});
  check_config_rejected(with_qformer(R"("attention_probs_dropout_prob": -0.1)"), {"'qformer_config.attention_probs_dropout_prob'"});
  check_config_rejected(with_qformer(R"("pad_token_id": 30522)"), {"'qformer_config.pad_token_id' = 30522", "[0, 30522)"});
  check_config_rejected(with_qformer(R"("bos_token_id": -1)"), {"'qformer_config.bos_token_id' = -1"});
  check_config_rejected(with_qformer(R"("hidden_act": "relu")"), {"'qformer_config.hidden_act' = \"relu\"", "only \"gelu\""});
  check_config_rejected(with_qformer(R"("hidden_act": "gelu_new")"), {"\"gelu_new\""});
  check_config_rejected(with_qformer(R"("position_embedding_type": "relative_key")"), {"\"relative_key\"", "absolute"});
  check_config_rejected(R"({"model_type": "blip-2", "num_query_tokens": 0})", {"'num_query_tokens' = 0"});
  check_config_rejected(R"({"model_type": "blip-2", "image_text_hidden_size": -256})", {"'image_text_hidden_size' = -256"});
  check_config_rejected(R"({"model_type": "blip-2", "qformer_config": {"encoder_hidden_size": 1024},
                            "vision_config": {"hidden_size": 1408}})",
                        {"encoder_hidden_size = 1024", "vision_config.hidden_size = 1408"});
}
