#!/bin/sh
# run_decode_bandwidth.sh: build and run decode_bandwidth, then its PyTorch peer on the same shapes.
#
#   benchmarks/run_decode_bandwidth.sh [--build-dir DIR] [--jobs N] [--wait-idle SECONDS] [--threads N]
#                                      [--no-peer] [decode_bandwidth's other flags...]
#
# - builds the target decode_bandwidth in DIR (default build) with N jobs (default 1; configures DIR,
#   Release, first when it has no CMakeCache.txt);
# - with --wait-idle, waits (at most SECONDS) until the CPUs have been >= 92% idle for 3 s in a row (as
#   run_with_peer.sh): on a shared machine every OpenMP barrier waits whenever another process holds a core;
# - runs decode_bandwidth with --threads N (default 2) and the remaining flags, its medians to a temporary file
#   (--quick, --reps and --pool-mib go to the peer too);
# - runs benchmarks/peers/decode_linear_torch.py with /usr/bin/python3 (Debian's python3-torch) and
#   torch.set_num_threads(N), which times torch.nn.functional.linear at the same shapes and M and prints
#   ours/torch. Debian's torch calls whatever libblas.so.3 resolves to: the netlib reference BLAS (f32
#   linear at ~2.5 GFLOP/s) unless libopenblas0-openmp is installed, which selects OpenBLAS. It is
#   installed on the machine where benchmarks/README.md's figures were taken; the line below says which one
#   this machine has.
set -eu
build=build
jobs=1
wait_idle=0
threads=2
peer=1
pass=""
peer_args=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --wait-idle) wait_idle=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --no-peer) peer=0; shift ;;
    --quick) peer_args="$peer_args --reps 5"; pass="$pass $1"; shift ;;
    --reps|--pool-mib) peer_args="$peer_args $1 $2"; pass="$pass $1 $2"; shift 2 ;;
    *) pass="$pass $1"; shift ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

. "$root/benchmarks/bench_env.sh"
check_blas

[ -f "$build/CMakeCache.txt" ] || cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j"$jobs" --target decode_bandwidth

wait_idle "$wait_idle"

results=$(mktemp)
trap 'rm -f "$results"' EXIT
# shellcheck disable=SC2086  # $pass: the remaining flags, split on purpose
"$build/benchmarks/decode_bandwidth" --threads "$threads" --results "$results" $pass
if [ "$peer" -eq 1 ]; then
  echo
  if /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; then
    # shellcheck disable=SC2086
    (cd benchmarks/peers && /usr/bin/python3 decode_linear_torch.py --threads "$threads" --ours "$results" $peer_args)
  else
    echo "PyTorch peer skipped: /usr/bin/python3 cannot import torch (apt-get install python3-torch)"
  fi
fi
