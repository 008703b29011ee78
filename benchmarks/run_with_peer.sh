#!/bin/sh
# run_with_peer.sh: build and run a benchmark that runs a PyTorch peer (bench_image_pass, bench_stage1_step).
#
#   benchmarks/run_with_peer.sh TARGET [--build-dir DIR] [--jobs N] [--wait-idle SECONDS] [TARGET's flags...]
#
# - says which BLAS Debian's PyTorch will load (libblas.so.3): the netlib reference BLAS makes the PyTorch
#   peer ~30x slower; `apt-get install -y libopenblas0-openmp` selects OpenBLAS;
# - builds the target TARGET in DIR (default build) with N jobs (default 1; configures DIR, Release, first
#   when it has no CMakeCache.txt);
# - with --wait-idle, waits (at most SECONDS) until the CPUs have been >= 92% idle for 3 s in a row: on a
#   shared machine every OpenMP barrier of both programs waits whenever another process holds a core;
# - runs the benchmark from the repository root (where it finds benchmarks/peers/) with the remaining flags
#   (--quick, --reps N, --threads N, --profile, ...). A later --build-dir or --jobs wins over an earlier one.
set -eu
if [ $# -lt 1 ]; then
  echo "usage: $0 TARGET [--build-dir DIR] [--jobs N] [--wait-idle SECONDS] [TARGET's flags...]" >&2
  exit 2
fi
target=$1
shift
build=build
jobs=1
wait_idle=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --wait-idle) wait_idle=$2; shift 2 ;;
    *) break ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

. "$root/benchmarks/bench_env.sh"
check_blas

[ -f "$build/CMakeCache.txt" ] || cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j"$jobs" --target "$target"

wait_idle "$wait_idle"
exec "$build/benchmarks/$target" "$@"
