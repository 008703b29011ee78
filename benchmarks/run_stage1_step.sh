#!/bin/sh
# run_stage1_step.sh [--build-dir DIR (default build-bench)] [--wait-idle SECONDS] [bench_stage1_step flags...]:
# see run_with_peer.sh. At full size a step takes about a minute on 2 cores on each side: --quick (1 timed
# step after the warm-up) takes about 5 minutes in all, --layers 2 --quick about 2.
exec "$(dirname "$0")/run_with_peer.sh" bench_stage1_step --build-dir build-bench --jobs 1 "$@"
