// fuzz_byte_bpe: libFuzzer target for GPT-2's byte-level BPE (blip2/io/byte_bpe_tokenizer.hpp) with OPT's
// specials (blip2/io/opt_tokenizer.hpp), on the small OPT-like vocabulary of tests/fixtures/byte_bpe/small.
//
// Build and run (clang 14 + libclang-rt-14-dev; one core, one minute):
//   cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBLIP2_BUILD_FUZZERS=ON
//   cmake --build build-fuzz --target fuzz_byte_bpe -j1
//   mkdir -p build-fuzz/corpus_bpe
//   build-fuzz/tests/fuzz_byte_bpe build-fuzz/corpus_bpe tests/fuzz/corpus_byte_bpe
//       -max_len=2048 -len_control=0 -max_total_time=60
// (one command: the two lines joined; a crash writes crash-<sha1>: replay it with
// `build-fuzz/tests/fuzz_byte_bpe crash-<sha1>`.)
//
// The input is the text, any bytes at all (invalid UTF-8 included: it is replaced, documented). What
// counts as a bug, besides what ASan/UBSan catch:
//   - any exception escaping (libFuzzer reports it as a crash): encode and decode of in-range ids never throw;
//   - an id outside [0, size()), or one id_to_token() does not know;
//   - for valid UTF-8 text, decode(encode(text)) != text (BOS, written out as "</s>", first);
//   - encode(text) other than BOS + encode(text, false); the same ids twice (the cache) differing;
//   - the pre-tokens of GPT-2's pattern not covering the text exactly, or an empty one;
//   - decode() of any in-range ids (the input bytes read as ids) that is invalid UTF-8;
//   - the "<mask>" tokenizer (lstrip) giving an id out of range or throwing.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "blip2/io/opt_tokenizer.hpp"

namespace {

[[noreturn]] void oracle_failed(const char* what) {
  std::fprintf(stderr, "fuzz_byte_bpe: oracle failed: %s\n", what);
  std::abort();
}

// The fixture with OPT's options and <image> (no stripping), so encode is invertible.
const blip2::io::byte_bpe_tokenizer& exact() {
  static const auto tok = [] {
    auto o = blip2::io::opt_tokenizer_options();
    o.added_tokens.push_back({"<image>", 560, true, false, false});
    return blip2::io::load_opt_tokenizer(BLIP2_BPE_FIXTURES "/small").with_options(o);
  }();
  return tok;
}
// The fixture as its tokenizer_config.json says (<mask> with lstrip eats white space: not invertible).
const blip2::io::byte_bpe_tokenizer& configured() {
  static const auto tok = blip2::io::load_opt_tokenizer(BLIP2_BPE_FIXTURES "/small");
  return tok;
}

void check_ids(const blip2::io::byte_bpe_tokenizer& tok, const std::vector<std::int64_t>& ids) {
  for (const auto id : ids) {
    if (id < 0 || id >= static_cast<std::int64_t>(tok.size())) oracle_failed("id out of range");
    if (tok.id_to_token(id).empty()) oracle_failed("empty token");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const auto& tok = exact();

  const auto plain = tok.encode(text, false);
  check_ids(tok, plain);
  const auto with_bos = tok.encode(text);
  if (with_bos.size() != plain.size() + 1 || with_bos[0] != 2) oracle_failed("BOS");
  for (std::size_t k = 0; k < plain.size(); ++k)
    if (with_bos[k + 1] != plain[k]) oracle_failed("encode(text) != BOS + encode(text, false) (cache?)");
  if (blip2::is_valid_utf8(text)) {
    if (tok.decode(plain) != text) oracle_failed("decode(encode(text)) != text");
    if (tok.decode(with_bos) != "</s>" + text) oracle_failed("decode(BOS + ids) != </s> + text");
    std::size_t covered = 0;
    bool empty_piece = false;
    blip2::io::byte_bpe::pretokenize(text, [&](std::string_view p) {
      if (p.empty()) empty_piece = true;
      if (text.compare(covered, p.size(), p) != 0) oracle_failed("pre-tokens do not spell the text");
      covered += p.size();
    });
    if (empty_piece || covered != text.size()) oracle_failed("pre-tokens do not cover the text");
  }

  // the input bytes as ids (pairs of bytes, little-endian, modulo size()): decode is valid UTF-8
  std::vector<std::int64_t> ids;
  for (std::size_t i = 0; i + 1 < size; i += 2)
    ids.push_back((data[i] | (data[i + 1] << 8)) % static_cast<std::int64_t>(tok.size()));
  if (!blip2::is_valid_utf8(tok.decode(ids)) || !blip2::is_valid_utf8(tok.decode(ids, true)))
    oracle_failed("decode gave invalid UTF-8");

  check_ids(configured(), configured().encode(text));
  return 0;
}
