#!/usr/bin/env bash
# benchmarks/gpu_check.sh: the CUDA backend on a machine with an NVIDIA GPU, in one run of a few minutes.
#   1. configure and build the CUDA part and what tests it (build-gpu/, Ninja when there, every core);
#   2. on the GPU: the CUDA part's host-side test, the conformance suite (every op on cuda: float32, and bf16
#      for matmul, linear and attention; both attention kernels), the golden tests against PyTorch's
#      fixtures (vision transformer, Q-Former forward and every gradient) and the programs that take
#      --backend cuda (qformer_features, vision_features where blip2::image is built);
#   3. bench_gpu: the Q-Former image pass at BLIP-2 size (B = 32, float32 and bf16) against PyTorch eager
#      on the same GPU, and the GPU's matmul peak.
# Needs CMake, nvcc and a C++20 g++ (the GPU machine's image has them), plus doctest and nlohmann-json
# (header-only): from the system, or from .gpu-deps/, which scripts/pack_gpu_deps.sh makes here from
# Debian's packages (the device tool carries it: carry [".gpu-deps"]). Nothing is downloaded.
# Usage: bash benchmarks/gpu_check.sh [--quick]   (--quick: fewer benchmark repetitions)
# Exit status: 0 when every test passed, 1 otherwise. With $OUT set, the log is also $OUT/gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
reps=20
[ "${1:-}" = "--quick" ] && reps=5
log=/dev/null
[ -n "${OUT:-}" ] && log="$OUT/gpu_check.log"
exec > >(tee "$log") 2>&1

echo "== machine"
nvidia-smi -L || true
nvcc_path=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
"$nvcc_path" --version | tail -1
g++ --version | head -1
cmake --version | head -1

gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
prefix=()
[ -d .gpu-deps ] && prefix=(-DCMAKE_PREFIX_PATH="$PWD/.gpu-deps")
echo "== configure"
cmake -S . -B build-gpu "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DBLIP2_CHECK_HEADERS=OFF \
      -DCMAKE_CUDA_COMPILER="$nvcc_path" "${prefix[@]}" | grep -E "blip2|CUDA|Error|error" || true
grep -q "BLIP2_WITH_CUDA" build-gpu/CMakeCache.txt 2>/dev/null || true
if [ ! -f build-gpu/build.ninja ] && [ ! -f build-gpu/Makefile ]; then echo "FAILED: configure"; exit 1; fi

echo "== build"
tests=(cuda_host_side backend_conformance_cuda vision_transformer_golden qformer_golden_pytorch qformer_features_cli
       vision_features_cli)
built=()
for t in "${tests[@]}" bench_gpu; do
  if cmake --build build-gpu -j"$(nproc)" --target "$t" > "build-gpu/$t.build.log" 2>&1; then
    built+=("$t")
  else
    if grep -q "unknown target\|No rule to make target" "build-gpu/$t.build.log"; then
      echo "not in this build: $t (a part it needs is missing here)"
    else
      echo "FAILED to build: $t"; tail -40 "build-gpu/$t.build.log"; status_build=1
    fi
  fi
done

status=${status_build:-0}
echo "== tests on the GPU"
for t in "${tests[@]}"; do
  [[ " ${built[*]} " == *" $t "* ]] || continue
  if ctest --test-dir build-gpu -R "^$t\$" --output-on-failure --timeout 600; then :; else status=1; fi
done
# the conformance suite again with each attention kernel forced (the default picks one per shape)
if [[ " ${built[*]} " == *" backend_conformance_cuda "* ]]; then
  for k in fused batched-gemm; do
    echo "== conformance, attention ops, BLIP2_CUDA_ATTENTION=$k"
    BLIP2_CUDA_ATTENTION=$k BLIP2_OPS_FILTER=attention build-gpu/tests/backend_conformance_cuda \
      --test-case="backend conformance: every op case*" | tail -5 || status=1
  done
fi

echo "== bench_gpu"
if [[ " ${built[*]} " == *" bench_gpu "* ]]; then
  build-gpu/benchmarks/bench_gpu --reps "$reps" --python "$(command -v python3)" || status=1
fi
echo "== gpu_check: $([ $status -eq 0 ] && echo every test passed || echo FAILURES above)"
exit $status
