#!/usr/bin/env bash
# The default recipe of blip2_demo on several seeds (the README's robustness table): every stage, the LM's
# pretraining included, reruns per seed. One markdown row per seed from the run's final JSON line.
#
#   bash scripts/run_blip2_seeds.sh [--seeds "1 2 3 4 5"] [blip2_demo flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
seeds="1 2 3 4 5"
if [ "${1:-}" = "--seeds" ]; then seeds=$2; shift 2; fi
[ -f build/CMakeCache.txt ] || cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j2 --target blip2_demo >/dev/null
source scripts/demo_json.sh  # field NAME JSON

echo "| seed | caption exact | attributes | ungrammatical | VQA | CIDEr-D | BLEU-4 | R@1 t->i / i->t | LM-as-text caption / VQA | seconds |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for seed in $seeds; do
  out="blip2_seeds_out/s$seed"
  mkdir -p "$out"
  ./build/examples/blip2_demo --seed "$seed" --out "$out" "$@" >"$out/log.txt" 2>&1
  json=$(tail -n 1 "$out/log.txt")
  printf '| %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s | %s |\n' "$seed" \
    "$(field caption_exact "$json")" "$(field attribute_accuracy "$json")" "$(field ungrammatical "$json")" \
    "$(field vqa_accuracy "$json")" "$(field cider "$json")" "$(field bleu4 "$json")" \
    "$(field t2i_r1 "$json")" "$(field i2t_r1 "$json")" "$(field text_caption_exact "$json")" \
    "$(field text_vqa_accuracy "$json")" "$(field seconds "$json")"
done
