// tests/harness/cli_checks.hpp: what the tests of the example programs check alike.
//
//   copy_tensors(from, to, names, extra)   writes `names` of the safetensors file `from` (same dtype,
//                                          shape and bytes), then `extra`, to the file `to`
//   check_usage_errors(prog, exe, dir, cases)
//                                          each case exits 2, its stderr starts with "PROG: <says>" and
//                                          shows the usage line "usage: PROG --model DIR"; then --help
//                                          exits 0 with the usage line on stdout
//   check_fails(prog, exe, dir, args, says, out)
//                                          the run exits 1, its stderr starts with "PROG: " and contains
//                                          every part of `says`, and it wrote no `out`
#pragma once
#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "blip2/io/safetensors.hpp"
#include "harness/expect_error.hpp"
#include "harness/run_program.hpp"

namespace blip2::testing {

inline void copy_tensors(const std::filesystem::path& from, const std::filesystem::path& to,
                         const std::vector<std::string>& names, std::vector<safetensors_entry> extra = {}) {
  const auto in = safetensors_file::open(from);
  std::vector<safetensors_entry> entries;
  for (const auto& n : names) {
    const auto& t = in.info(n);
    entries.emplace_back(n, t.dtype, t.shape, std::vector<std::byte>(in.bytes(n).begin(), in.bytes(n).end()));
  }
  for (auto& e : extra) entries.push_back(std::move(e));
  save_safetensors(to, entries);
}

struct usage_case {
  std::vector<std::string> args;
  std::string says;
};

inline void check_usage_errors(const std::string& prog, const std::string& exe, const temp_dir& dir,
                               const std::vector<usage_case>& cases) {
  for (const auto& c : cases) {
    CAPTURE(c.says);
    const auto r = run_program(exe, dir, c.args);
    INFO(r.cmd, "\nstderr: ", r.err);
    CHECK(r.status == 2);
    CHECK(r.err.rfind(prog + ": " + c.says, 0) == 0);
    CHECK(has(r.err, "usage: " + prog + " --model DIR"));
  }
  const auto help = run_program(exe, dir, {"--help"});
  CHECK(help.status == 0);
  CHECK(has(read_text(dir / "stdout.txt"), "usage: " + prog));
}

inline void check_fails(const std::string& prog, const std::string& exe, const temp_dir& dir,
                        const std::vector<std::string>& args, const std::vector<std::string>& says,
                        const std::filesystem::path& out) {
  const auto r = run_program(exe, dir, args);
  INFO(r.cmd, "\nstderr: ", r.err);
  CHECK(r.status == 1);
  CHECK(r.err.rfind(prog + ": ", 0) == 0);
  for (const auto& s : says) {
    CAPTURE(s);
    CHECK(has(r.err, s));
  }
  CHECK_FALSE(std::filesystem::exists(out));
}

}  // namespace blip2::testing
