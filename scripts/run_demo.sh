#!/usr/bin/env bash
# The main job: install dependencies, build, run the stage-1 demo (train a Q-Former from scratch on
# synthetic scenes with ITC + ITM + ITG, then zero-shot retrieval). Arguments go to stage1_demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j2 --target stage1_demo
./build/examples/stage1_demo "$@"
