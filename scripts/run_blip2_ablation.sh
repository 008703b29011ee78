#!/usr/bin/env bash
# The paper's stage-2 ablation in miniature (its figure on stage 2 without representation learning), plus
# the stage-1 objective ablation seen through stage 2. Rows, each with the same frozen LM and the same
# stage-2 budget:
#   stage 1 ITC + ITM + ITG, then stage 2     (the default recipe)
#   stage 1 ITC only, then stage 2            (--objectives itc)
#   no stage 1: stage 2 from a random Q-Former (--stage1 random)
# and one row on the data rather than the paper: stage 2 trained on captions that name the objects in
# either order, as the world's training pairs draw them (--mention drawn; the default names the left or
# top object first, as the LM's descriptions do).
#
#   bash scripts/run_blip2_ablation.sh [--seeds "1 2"] [blip2_demo flags...]
#
# Builds blip2_demo, pretrains the LM once per seed (the first row's run writes it), runs the other rows
# with --lm-from that LM, keeps each run in blip2_ablation_out/<row>_s<seed>/ and prints one markdown row
# per run from its final JSON line (the README's table).
set -euo pipefail
cd "$(dirname "$0")/.."
seeds="1"
if [ "${1:-}" = "--seeds" ]; then seeds=$2; shift 2; fi
[ -f build/CMakeCache.txt ] || cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j2 --target blip2_demo >/dev/null
source scripts/demo_json.sh  # field NAME JSON

echo "| stage 1 | seed | caption exact | attributes | VQA | CIDEr-D | BLEU-4 | R@1 t->i / i->t | stage-2 loss (last) | seconds |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for seed in $seeds; do
  lm="blip2_ablation_out/all_s$seed/lm"
  for row in all itc random drawn; do
    out="blip2_ablation_out/${row}_s$seed"
    mkdir -p "$out"
    case $row in
      all) flags=() ;;
      itc) flags=(--objectives itc --lm-from "$lm") ;;
      random) flags=(--stage1 random --lm-from "$lm") ;;
      drawn) flags=(--mention drawn --lm-from "$lm") ;;
    esac
    ./build/examples/blip2_demo --seed "$seed" --out "$out" "${flags[@]}" "$@" >"$out/log.txt" 2>&1
    json=$(tail -n 1 "$out/log.txt")
    last=$(tail -n 1 "$out/stage2_losses.csv" | cut -d, -f2)
    label=$(case $row in all) echo "ITC + ITM + ITG";; itc) echo "ITC only";; random) echo "none (random Q-Former)";; drawn) echo "ITC + ITM + ITG, stage 2 on either order";; esac)
    printf '| %s | %s | %s | %s | %s | %s | %s | %s / %s | %.3f | %s |\n' "$label" "$seed" \
      "$(field caption_exact "$json")" "$(field attribute_accuracy "$json")" "$(field vqa_accuracy "$json")" \
      "$(field cider "$json")" "$(field bleu4 "$json")" "$(field t2i_r1 "$json")" "$(field i2t_r1 "$json")" \
      "$last" "$(field seconds "$json")"
  done
done
