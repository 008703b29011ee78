#!/usr/bin/env bash
# The main job: install dependencies, build the examples, run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j2 --target attention_block
./build/examples/attention_block "$@"
