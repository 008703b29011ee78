#!/usr/bin/env bash
# The whole test suite: install dependencies, configure, build (2 jobs), run ctest.
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
