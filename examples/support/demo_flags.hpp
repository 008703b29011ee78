// examples/support/demo_flags.hpp: the command-line reader of the demos (stage1_demo, blip2_demo): a
// cursor over argv whose value readers print "prog: message", the usage text, and exit 2 on a bad value.
//
//   demo::flag_reader r(argc, argv, "stage1_demo", usage_text);
//   while (r.next()) {
//     if (r.is("--steps")) r.integer(o.steps);
//     else if (!parse_stage1_flag(r.flag(), r, o.recipe)) r.fail("unknown argument " + r.flag());
//   }
// --help and -h print the usage text on stdout and exit 0.
//
// Demo support, not part of the installed library (namespace blip2::demo).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "blip2/core/tensor_view.hpp"

namespace blip2::demo {

class flag_reader {
 public:
  flag_reader(int argc, char** argv, std::string program, std::string usage)
      : argc_(argc), argv_(argv), program_(std::move(program)), usage_(std::move(usage)) {}

  // Moves to the next flag; false after the last. --help / -h print the usage and exit 0.
  bool next() {
    if (++i_ >= argc_) return false;
    flag_ = argv_[i_];
    if (flag_ == "--help" || flag_ == "-h") {
      std::fputs(usage_.c_str(), stdout);
      std::exit(0);
    }
    return true;
  }
  const std::string& flag() const { return flag_; }
  bool is(std::string_view name) const { return flag_ == name; }

  // "prog: why", the usage on stderr, exit status 2.
  [[noreturn]] void fail(const std::string& why) const {
    std::fprintf(stderr, "%s: %s\n%s", program_.c_str(), why.c_str(), usage_.c_str());
    std::exit(2);
  }
  std::string value() {
    if (i_ + 1 >= argc_) fail("missing value after " + flag_);
    return argv_[++i_];
  }
  void integer(index_t& v) {
    const std::string x = value();
    std::size_t used = 0;
    try { v = std::stoll(x, &used); } catch (const std::exception&) { used = 0; }
    if (used == 0 || used != x.size()) fail(flag_ + " wants an integer, not '" + x + "'");
  }
  void real(double& v) {
    const std::string x = value();
    std::size_t used = 0;
    try { v = std::stod(x, &used); } catch (const std::exception&) { used = 0; }
    if (used == 0 || used != x.size() || !std::isfinite(v)) fail(flag_ + " wants a finite number, not '" + x + "'");
  }
  // --seed S: a non-negative integer.
  void seed(std::uint64_t& v) {
    index_t s = 0;
    integer(s);
    if (s < 0) fail(flag_ + " must be >= 0");
    v = static_cast<std::uint64_t>(s);
  }
  // --backend onednn|reference: onednn is set to whether the value names the oneDNN backend.
  void backend(bool& onednn) {
    const std::string b = value();
    if (b != "onednn" && b != "reference") fail(flag_ + " must be onednn or reference");
    onednn = b == "onednn";
  }

 private:
  int argc_;
  char** argv_;
  int i_ = 0;  // argv_[0] is the program
  std::string program_, usage_, flag_;
};

}  // namespace blip2::demo
