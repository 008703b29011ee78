#!/usr/bin/env bash
# The whole test suite: install dependencies, configure, build (2 jobs), run ctest; then the same in a
# reference-only build (build-ref, -DBLIP2_ENABLE_ONEDNN=OFF): everything that compiles without oneDNN is
# built there (tests, examples, the package) and its tests run on the reference backend alone; what needs
# oneDNN itself (the demo and its CLI test, attention_block, the benchmarks) is left out, and CMake says so.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j2
# Two tests at a time share the two cores: OpenMP threads that spin while they wait would take the other
# test's core (libgomp spins by default), so they sleep instead.
# The tests expect float32 linear layers: a BLIP2_ONEDNN_LINEAR=bf16 left in the environment would fail them.
unset BLIP2_ONEDNN_LINEAR
OMP_WAIT_POLICY=passive ctest --test-dir build --output-on-failure -j2
# (The headers were each compiled alone in build already: BLIP2_CHECK_HEADERS=OFF here. The CUDA part,
# built and tested in build where nvcc exists, does not depend on oneDNN: it is off here.)
cmake -S . -B build-ref -DCMAKE_BUILD_TYPE=Release -DBLIP2_ENABLE_ONEDNN=OFF -DBLIP2_CHECK_HEADERS=OFF -DBLIP2_ENABLE_CUDA=OFF
cmake --build build-ref -j2
OMP_WAIT_POLICY=passive ctest --test-dir build-ref --output-on-failure -j2
