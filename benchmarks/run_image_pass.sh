#!/bin/sh
# run_image_pass.sh [--build-dir DIR (default build)] [--wait-idle SECONDS] [bench_image_pass flags...]: see run_with_peer.sh.
exec "$(dirname "$0")/run_with_peer.sh" bench_image_pass --build-dir build --jobs 2 "$@"
