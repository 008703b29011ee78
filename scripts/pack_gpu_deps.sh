#!/usr/bin/env bash
# scripts/pack_gpu_deps.sh: the header-only dependencies the tests need (doctest, nlohmann-json), copied from
# this machine's Debian packages into .gpu-deps/ (git-ignored) as an install prefix, for a machine that
# cannot download them: the GPU machine of benchmarks/gpu_check.sh (the device tool carries .gpu-deps).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh >/dev/null
rm -rf .gpu-deps
mkdir -p .gpu-deps/include .gpu-deps/lib/cmake .gpu-deps/share/cmake
cp -r /usr/include/doctest /usr/include/nlohmann .gpu-deps/include/
cp -r /usr/lib/cmake/doctest .gpu-deps/lib/cmake/
cp -r /usr/share/cmake/nlohmann_json .gpu-deps/share/cmake/
# Debian's doctest targets name /usr as their prefix; make it the prefix they are found in
sed -i 's|^set(_IMPORT_PREFIX "/usr")|get_filename_component(_IMPORT_PREFIX "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)|' \
  .gpu-deps/lib/cmake/doctest/doctestTargets.cmake
du -sh .gpu-deps
