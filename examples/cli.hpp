// cli.hpp: the command-line plumbing the example programs share (examples only, not the library).
//
//   usage_error     a bad command line (its message), or --help (no message)
//   arguments       a cursor over argv: next() to the next `--name`, then value(), values(), integer(),
//                   real() or choice() for what follows it; unknown() refuses the name
//   backend()       --backend reference|onednn; with_backend() runs a generic callable on the one named
//   load_tokenizer  --vocab FILE and --max-length L checked against a Q-Former's text side
//   run_main        parse, then run, as the programs' exit statuses say:
//                     0  success, or --help / -h (the usage line and any help text on stdout)
//                     1  run threw (a blip2::error or any std::exception): "prog: message" on stderr
//                     2  a usage error: "prog: message" and the usage line on stderr
//
// A program reads:
//   options parse(cli::arguments& a) {
//     options o;
//     while (a.next()) {
//       if (a.is("--model")) o.model = a.value();
//       else if (a.is("--size")) o.size = a.integer("an image size", 1, 4096);
//       else a.unknown();
//     }
//     cli::require(!o.model.empty(), "--model DIR");
//     return o;
//   }
//   int main(int argc, char** argv) { return cli::run_main("prog", usage_line, argc, argv, parse, run); }
#pragma once
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/core/errors.hpp"
#include "blip2/core/tensor_view.hpp"
#include "blip2/io/bert_tokenizer.hpp"
#ifdef BLIP2_HAS_ONEDNN
#include "blip2/backend/onednn/onednn.hpp"
#endif
#ifdef BLIP2_HAS_CUDA
#include "blip2/backend/cuda/cuda.hpp"
#endif

namespace blip2::cli {

struct usage_error {
  std::string message;  // empty for --help
};

// "missing --model DIR" unless `have`.
inline void require(bool have, std::string_view what) {
  if (!have) throw usage_error{"missing " + std::string(what)};
}

class arguments {
 public:
  arguments(int argc, char** argv) : argc_(argc), argv_(argv) {}

  // Moves to the next argument; false after the last. -h and --help throw usage_error{}.
  bool next() {
    if (++i_ >= argc_) return false;
    name_ = argv_[i_];
    if (name_ == "-h" || name_ == "--help") throw usage_error{};
    return true;
  }
  std::string_view name() const { return name_; }
  bool is(std::string_view name) const { return name_ == name; }
  [[noreturn]] void unknown() const { throw usage_error{"unknown argument '" + std::string(name_) + "'"}; }

  // The argument after the name: "--model needs a value" when there is none.
  std::string value() {
    if (i_ + 1 >= argc_) throw usage_error{std::string(name_) + " needs a value"};
    return argv_[++i_];
  }
  // The arguments after the name up to the next --name: at least one.
  std::vector<std::string> values() {
    std::vector<std::string> out;
    while (i_ + 1 < argc_ && std::string_view(argv_[i_ + 1]).rfind("--", 0) != 0) out.emplace_back(argv_[++i_]);
    if (out.empty()) throw usage_error{std::string(name_) + " needs at least one value"};
    return out;
  }

  // A whole number in [lo, hi], all of the value: "--size '0' is not an image size in [1, 4096]"
  // (">= lo" when hi is Int's largest), then " (why)" when given.
  template <class Int>
  Int integer(std::string_view what, Int lo, Int hi = std::numeric_limits<Int>::max(), std::string_view why = {}) {
    static_assert(std::is_integral_v<Int> && !std::is_same_v<Int, bool>, "cli::integer: Int must be an integer type");
    const std::string v = value();
    Int x{};
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
    if (ec == std::errc{} && end == v.data() + v.size() && x >= lo && x <= hi) return x;
    std::string m = std::string(name_) + " '" + v + "' is not " + std::string(what);
    m += hi == std::numeric_limits<Int>::max() ? " >= " + std::to_string(lo)
                                               : " in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
    if (!why.empty()) m += " (" + std::string(why) + ")";
    throw usage_error{m};
  }

  // A finite real number, all of the value: "--lr 'x' is not a finite number".
  double real(std::string_view what = "a finite number") {
    const std::string v = value();
    double x = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
    if (ec == std::errc{} && end == v.data() + v.size() && std::isfinite(x)) return x;
    throw usage_error{std::string(name_) + " '" + v + "' is not " + std::string(what)};
  }

  // One of `names`: "unknown backend 'cuda' (expected reference or onednn)".
  std::string choice(std::string_view what, std::initializer_list<std::string_view> names) {
    std::string v = value();
    std::string expected;
    std::size_t k = 0;
    for (const std::string_view n : names) {
      if (v == n) return v;
      expected.append(k == 0 ? "" : k + 1 == names.size() ? " or " : ", ").append(n);
      ++k;
    }
    throw usage_error{"unknown " + std::string(what) + " '" + v + "' (expected " + expected + ")"};
  }

 private:
  int argc_;
  char** argv_;
  int i_ = 0;  // argv_[0] is the program
  std::string_view name_;
};

// The default --backend of a program that may pick the fastest: oneDNN's in a build with it.
#ifdef BLIP2_HAS_ONEDNN
inline constexpr const char* fastest_backend = "onednn";
#else
inline constexpr const char* fastest_backend = "reference";
#endif

// Whether a program's run is written for device memory too (then it takes --backend cuda).
enum class device_backends { no, cuda };

// --backend reference|onednn[|cuda]; onednn is a usage error in a build without it, cuda in a build without
// the CUDA part and in programs that do not run on it yet.
inline std::string backend(arguments& a, device_backends devices = device_backends::no) {
  std::string b = devices == device_backends::cuda ? a.choice("backend", {"reference", "onednn", "cuda"})
                                                    : a.choice("backend", {"reference", "onednn"});
#ifndef BLIP2_HAS_ONEDNN
  if (b == "onednn") throw usage_error{"this build has no oneDNN backend; use --backend reference"};
#endif
#ifndef BLIP2_HAS_CUDA
  if (b == "cuda") throw usage_error{"this build has no CUDA backend (nvcc was not found when it was configured)"};
#endif
  return b;
}

// f(be) on the backend `name` names (see backend()): oneDNN's in a build with it, else the reference one.
template <class F>
decltype(auto) with_backend([[maybe_unused]] std::string_view name, F&& f) {  // unused without oneDNN
#ifdef BLIP2_HAS_ONEDNN
  if (name == "onednn") {
    onednn_backend be;
    return f(be);
  }
#endif
  reference_backend be;
  return f(be);
}

// with_backend, and the CUDA backend for `name` == "cuda" (programs whose run compiles for device memory:
// models through to_backend, inputs copied over, outputs copied back).
template <class F>
decltype(auto) with_any_backend(std::string_view name, F&& f) {
#ifdef BLIP2_HAS_CUDA
  if (name == "cuda") {
    cuda_backend be;
    return f(be);
  }
#endif
  return with_backend(name, std::forward<F>(f));
}

// The tokenizer of --vocab (default: the model folder's vocab.txt) and the text length of --max-length
// (0: min(35, max_position_embeddings), what LAVIS's compute_sim_matrix uses), both checked against the
// Q-Former's text side `q` (its vocab_size and max_position_embeddings).
struct text_tokenizer {
  io::bert_tokenizer tok;
  std::size_t max_length;
};

template <class QformerConfig>
text_tokenizer load_tokenizer(const std::filesystem::path& model, std::filesystem::path vocab, index_t max_length,
                              const QformerConfig& q) {
  if (vocab.empty()) vocab = model / "vocab.txt";
  if (!std::filesystem::exists(vocab))
    detail::raise<value_error>("no vocabulary: '", vocab.string(), "' does not exist (give --vocab FILE)");
  auto tok = io::bert_tokenizer::from_vocab_file(vocab);
  if (static_cast<index_t>(tok.vocab_size()) > q.vocab_size)
    detail::raise<value_error>("vocabulary '", vocab.string(), "' has ", tok.vocab_size(),
                               " tokens but the model's vocab_size is ", q.vocab_size);
  const index_t max_pos = q.max_position_embeddings;
  if (max_length == 0) max_length = std::min<index_t>(35, max_pos);
  if (max_length > max_pos)
    detail::raise<value_error>("--max-length ", max_length, " exceeds the model's max_position_embeddings = ", max_pos);
  return {std::move(tok), static_cast<std::size_t>(max_length)};
}

// parse(arguments&) -> options, then run(const options&) -> int (or void: 0), with the exit statuses above.
// `help`, when given, follows the usage line on --help.
template <class Parse, class Run>
int run_main(const char* prog, const char* usage, int argc, char** argv, Parse&& parse, Run&& run,
             const char* help = nullptr) {
  using options = std::invoke_result_t<Parse&, arguments&>;
  std::optional<options> o;
  try {
    arguments args(argc, argv);
    o.emplace(parse(args));
  } catch (const usage_error& e) {
    if (e.message.empty()) {
      std::printf("%s\n%s", usage, help ? help : "");
      return 0;
    }
    std::fprintf(stderr, "%s: %s\n%s\n", prog, e.message.c_str(), usage);
    return 2;
  }
  try {
    if constexpr (std::is_void_v<std::invoke_result_t<Run&, const options&>>) {
      run(std::as_const(*o));
      return 0;
    } else {
      return run(std::as_const(*o));
    }
  } catch (const std::exception& e) {  // blip2::error included: its message names what and where
    std::fprintf(stderr, "%s: %s\n", prog, e.what());
    return 1;
  }
}

}  // namespace blip2::cli
