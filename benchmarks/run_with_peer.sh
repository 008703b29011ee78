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

blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)
echo "libblas.so.3 -> ${blas:-not found}"
case "$blas" in
  *openblas*|*blis*|*mkl*) ;;
  *) echo "warning: PyTorch will run on the reference BLAS; install libopenblas0-openmp for a fair peer" ;;
esac

[ -f "$build/CMakeCache.txt" ] || cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j"$jobs" --target "$target"

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
exec "$build/benchmarks/$target" "$@"
