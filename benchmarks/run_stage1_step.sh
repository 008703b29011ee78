#!/bin/sh
# run_stage1_step.sh: build and run bench_stage1_step (one BLIP-2 stage-1 training step: oneDNN vs PyTorch).
#
#   benchmarks/run_stage1_step.sh [--build-dir DIR] [--wait-idle SECONDS] [bench_stage1_step flags...]
#
# - says which BLAS Debian's PyTorch will load (libblas.so.3): the netlib reference BLAS makes the peer
#   ~30x slower; `apt-get install -y libopenblas0-openmp` selects OpenBLAS;
# - builds the target bench_stage1_step in DIR (default build-bench; -j1);
# - with --wait-idle, waits (at most SECONDS) until the CPUs have been >= 92% idle for 3 s in a row;
# - runs the benchmark from the repository root (where it finds peers/stage1_step_torch.py) with the
#   remaining flags (--quick, --reps N, --threads N, --layers N, --profile, --dropout P, ...).
# At full size a step takes about a minute on 2 cores on each side: --quick (1 timed step after the
# warm-up) takes about 5 minutes in all, --layers 2 --quick about 2.
set -eu
build=build-bench
wait_idle=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build=$2; shift 2 ;;
    --wait-idle) wait_idle=$2; shift 2 ;;
    *) break ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)
echo "libblas.so.3 -> ${blas:-not found}"
case "$blas" in
  *openblas*|*blis*|*mkl*) ;;
  *) echo "warning: PyTorch will run on the reference BLAS; install libopenblas0-openmp for a fair peer" ;;
esac

[ -f "$build/CMakeCache.txt" ] || cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j1 --target bench_stage1_step

if [ "$wait_idle" -gt 0 ]; then
  start=$(date +%s)
  quiet=0
  while [ $quiet -lt 3 ]; do
    a=$(awk '/^cpu /{print $5+$6, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    sleep 1
    b=$(awk '/^cpu /{print $5+$6, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    idle=$(echo "$a $b" | awk '{print int(100 * ($3 - $1) / ($4 - $2 + 1))}')
    if [ "$idle" -ge 92 ]; then quiet=$((quiet + 1)); else quiet=0; fi
    if [ $(( $(date +%s) - start )) -ge "$wait_idle" ]; then
      echo "the CPUs were not idle within $wait_idle s (last second ${idle}% idle): running anyway"
      break
    fi
  done
fi
exec "$build/benchmarks/bench_stage1_step" "$@"
