#!/usr/bin/env bash
# The paper's objective ablation in miniature: stage1_demo with ITC only, ITC + ITM, and all three
# objectives, same recipe and seed otherwise; prints one markdown row per run (the README's table).
#
#   bash scripts/run_ablation.sh [--seeds "1 2 3"] [stage1_demo flags...]
#
# Builds stage1_demo (as run_demo.sh does, without installing packages), runs it once per objective set
# and seed, keeps each run's output in ablation_out/<objectives>_s<seed>/ (log, losses.csv, losses.png)
# and reads the final JSON line of each log. The R@1 column is the demo's final ranking: ITC alone, or
# the ITC top-k re-ranked by ITM + ITC when ITM is trained (BLIP-2's evaluation).
set -euo pipefail
cd "$(dirname "$0")/.."
seeds="1"
if [ "${1:-}" = "--seeds" ]; then seeds=$2; shift 2; fi
[ -f build/CMakeCache.txt ] || cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j2 --target stage1_demo >/dev/null

source scripts/demo_json.sh  # field NAME JSON

echo "| objectives | seed | R@1 t->i | R@1 i->t | ranking | ITC-only R@1 t->i / i->t | R@5 t->i / i->t | seconds |"
echo "|---|---|---|---|---|---|---|---|"
for objectives in itc itc,itm itc,itm,itg; do
  for seed in $seeds; do
    out="ablation_out/${objectives//,/+}_s$seed"
    mkdir -p "$out"
    ./build/examples/stage1_demo --objectives "$objectives" --seed "$seed" --out "$out" "$@" >"$out/log.txt" 2>&1
    json=$(tail -n 1 "$out/log.txt")
    printf '| %s | %s | %s | %s | %s | %s / %s | %s / %s | %s |\n' "$objectives" "$seed" \
      "$(field t2i_r1 "$json")" "$(field i2t_r1 "$json")" "$(field ranking "$json")" \
      "$(field itc_t2i_r1 "$json")" "$(field itc_i2t_r1 "$json")" \
      "$(field t2i_r5 "$json")" "$(field i2t_r5 "$json")" "$(field seconds "$json")"
  done
done
