#!/usr/bin/env bash
# The main job: install dependencies, build, run blip2_demo (BLIP-2's two-stage recipe in miniature: a
# small LM pretrained on text, stage 1, stage 2, zero-shot captions, VQA and retrieval on held-out scenes).
# Arguments go to blip2_demo. (The stage-1 demo alone: ./build/examples/stage1_demo.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j2 --target blip2_demo
./build/examples/blip2_demo "$@"
