#!/usr/bin/env bash
# The stage-1 step at BLIP-2 size on one world batch: one process (all cores) against mpirun -np W (the
# cores shared among the ranks), in one script, and the ratio. Builds bench_data_parallel first.
# usage: benchmarks/run_data_parallel.sh [W (2)] [bench_data_parallel flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-2}; shift || true
cores=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target bench_data_parallel -j2 >/dev/null
exe=build/benchmarks/bench_data_parallel
# Open MPI as root / oversubscribed: its environment (MPICH ignores these)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 OMP_WAIT_POLICY=passive
log=$(mktemp); trap 'rm -f "$log"' EXIT
echo "== one process, $cores threads"
OMP_NUM_THREADS=$cores "$exe" "$@" >"$log"; cat "$log"
one=$(sed -n 's/^JSON //p' "$log")
per=$((cores / W > 0 ? cores / W : 1))
echo "== mpirun -np $W, $per thread(s) each"
OMP_NUM_THREADS=$per mpirun -np "$W" --bind-to none "$exe" "$@" >"$log"; cat "$log"
many=$(sed -n 's/^JSON //p' "$log")
python3 - "$one" "$many" <<'PY'
import json, sys
one, many = json.loads(sys.argv[1]), json.loads(sys.argv[2])
comm = many["itc_comm_s"] + many["itm_comm_s"] + many["grad_comm_s"]
print(f"step: one process {one['step_s']:.2f} s, {many['ranks']} ranks {many['step_s']:.2f} s "
      f"(ratio one/ranks {one['step_s'] / many['step_s']:.2f}); communication {comm:.2f} s of the ranks' step "
      f"({100 * comm / many['step_s']:.1f}%), of which the gradient all-reduce {many['grad_comm_s']:.2f} s; "
      f"optimizer {one['optimizer_s']:.2f} s in one process, {many['optimizer_s']:.2f} s on each rank")
PY
