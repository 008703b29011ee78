// tests/harness/run_program.hpp: run a built example as a program (through /bin/sh) and capture how it
// ended: its exit status (-1 when it did not exit normally: a crash) and its stderr.
#pragma once
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "harness/temp_dir.hpp"

namespace blip2::testing {

// The --backend values a built example accepts in this build.
inline std::vector<std::string> built_backends() {
#ifdef BLIP2_HAS_ONEDNN
  return {"reference", "onednn"};
#else
  return {"reference"};
#endif
}

// The --backend values of a program that also runs on the CUDA backend (cli::with_any_backend): cuda too
// in a build with the CUDA part (the test defines BLIP2_TEST_CUDA_PART), run or skipped as no_gpu_here says.
inline std::vector<std::string> device_program_backends() {
  std::vector<std::string> b = built_backends();
#if BLIP2_TEST_CUDA_PART
  b.push_back("cuda");
#endif
  return b;
}

inline std::string shell_quoted(const std::string& s) {  // single-quoted for /bin/sh
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct program_result {
  int status = -1;  // exit status, -1 when the program did not exit normally (a crash)
  std::string err;  // its stderr
  std::string cmd;  // the command line
};

// Runs exe with args (each quoted), stdout and stderr to files in dir; env: NAME=VALUE assignments put
// before the command.
// Whether a --backend cuda run ended (status 1) because this machine has no usable GPU: the program's
// one acceptable failure there; the caller skips the run's checks, saying so.
inline bool no_gpu_here(const std::string& backend, const program_result& r) {
  return backend == "cuda" && r.status == 1 && r.err.find("no usable CUDA device") != std::string::npos;
}

inline program_result run_program(const std::string& exe, const temp_dir& dir, const std::vector<std::string>& args,
                                  const std::string& env = "") {
  std::string cmd = env.empty() ? shell_quoted(exe) : env + " " + shell_quoted(exe);
  for (const auto& a : args) cmd.append(" ").append(shell_quoted(a));
  const auto out = dir / "stdout.txt", err = dir / "stderr.txt";
  cmd.append(" >").append(shell_quoted(out.string())).append(" 2>").append(shell_quoted(err.string()));
  const int raw = std::system(cmd.c_str());
  program_result r;
  r.status = (raw != -1 && WIFEXITED(raw)) ? WEXITSTATUS(raw) : -1;
  r.err = read_text(err);
  r.cmd = cmd;
  return r;
}

}  // namespace blip2::testing
