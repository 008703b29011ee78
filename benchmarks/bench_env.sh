# bench_env.sh: what the benchmark scripts share (sourced, not run).
#   check_blas        says which BLAS Debian's PyTorch will load (libblas.so.3): the netlib reference BLAS
#                     makes a PyTorch peer ~30x slower; `apt-get install -y libopenblas0-openmp` selects OpenBLAS
#   wait_idle SECONDS waits (at most SECONDS) until the CPUs have been >= 92% idle for 3 s in a row: on a
#                     shared machine every OpenMP barrier waits whenever another process holds a core
check_blas() {
  blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)
  echo "libblas.so.3 -> ${blas:-not found}"
  case "$blas" in
    *openblas*|*blis*|*mkl*) ;;
    *) echo "warning: PyTorch will run on the reference BLAS; install libopenblas0-openmp for a fair peer" ;;
  esac
}

wait_idle() {
  [ "$1" -gt 0 ] || return 0
  start=$(date +%s)
  quiet=0
  while [ $quiet -lt 3 ]; do
    a=$(awk '/^cpu /{print $5+$6, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    sleep 1
    b=$(awk '/^cpu /{print $5+$6, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    idle=$(echo "$a $b" | awk '{print int(100 * ($3 - $1) / ($4 - $2 + 1))}')
    if [ "$idle" -ge 92 ]; then quiet=$((quiet + 1)); else quiet=0; fi
    if [ $(( $(date +%s) - start )) -ge "$1" ]; then
      echo "the CPUs were not idle within $1 s (last second ${idle}% idle): running anyway"
      break
    fi
  done
}
