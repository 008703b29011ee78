// tests/harness/temp_dir.hpp: a fresh directory for one test, removed with its contents afterwards.
// Unique per process and per instance, so parallel ctest runs and nested uses never collide.
#pragma once
#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace blip2::testing {

struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           ("blip2_test." + std::to_string(::getpid()) + "." + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  std::filesystem::path operator/(const std::string& name) const { return path / name; }
};

}  // namespace blip2::testing
