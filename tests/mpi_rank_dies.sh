#!/usr/bin/env bash
# A rank that dies while the others wait for it in a collective must end the job with an error, not hang:
# runs data_parallel with BLIP2_TEST_DIE_RANK=1 under `timeout` and fails if mpirun hangs (status 124),
# succeeds, or ends without naming the rank that died.
# usage: mpi_rank_dies.sh MPIEXEC DATA_PARALLEL_EXE
set -u
mpiexec=$1 exe=$2
start=$(date +%s)
out=$(BLIP2_TEST_DIE_RANK=1 timeout 60 "$mpiexec" -np 2 "$exe" 2>&1)
rc=$?
echo "$out"
echo "mpirun exited with status $rc after $(( $(date +%s) - start )) s"
if [ "$rc" -eq 124 ]; then echo "FAIL: the job hung (killed by timeout after 60 s)"; exit 1; fi
if [ "$rc" -eq 0 ]; then echo "FAIL: the job succeeded although rank 1 died"; exit 1; fi
if ! grep -qiE "rank 1|process rank|exited|non-zero" <<<"$out"; then
  echo "FAIL: mpirun's message does not say which process ended the job"; exit 1
fi
echo "OK: the job failed with a message instead of hanging"
