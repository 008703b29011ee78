#!/usr/bin/env bash
# Compare the loss curves of stage1_demo runs (their losses.csv) with a baseline run's.
#
#   bash scripts/compare_curves.sh [--window W] BASE.csv OTHER.csv [OTHER.csv ...]
#
# For each loss column (loss_itc, loss_itm, loss_itg) the curves are cut into windows of W steps
# (default 100) and each window's mean is taken over its steps where the loss ran (a 0 marks a step
# where the objective was off, e.g. ITM on every 2nd step). Only the steps both files have are compared
# (a note says so when their lengths differ). Printed per OTHER and loss: the largest and the median
# relative difference |other - base| / |base| over the windows (and the steps of the window with the
# largest), and the last window's two means.
#
# What counts as noise: two float32 runs of the same seed that differ only in float rounding (e.g. the
# attention kernel without FMA, BLIP2_ONEDNN_ATTENTION=fused-baseline) give the scale; a change whose
# differences stay within that scale leaves the curves unchanged within noise.
set -euo pipefail
window=100
if [ "${1:-}" = "--window" ]; then window=${2:-}; shift 2 || true; fi
if ! [[ "$window" =~ ^[1-9][0-9]*$ ]]; then
  echo "compare_curves.sh: --window wants a positive whole number of steps, not '$window'" >&2
  exit 2
fi
if [ $# -lt 2 ]; then
  echo "usage: compare_curves.sh [--window W] BASE.csv OTHER.csv [OTHER.csv ...]" >&2
  exit 2
fi
base=$1
shift
for f in "$base" "$@"; do
  if [ ! -r "$f" ]; then echo "compare_curves.sh: cannot read $f" >&2; exit 2; fi
  if ! head -n 1 "$f" | grep -q '^step,loss_itc,loss_itm,loss_itg'; then
    echo "compare_curves.sh: $f is not a stage1_demo losses.csv (its header should start step,loss_itc,loss_itm,loss_itg)" >&2
    exit 2
  fi
done

last_step() { awk -F, 'NR > 1 { s = $1 } END { print s + 0 }' "$1"; }

# window_means FILE LAST: lines "column window mean" for columns 2-4 (itc, itm, itg), steps <= LAST
window_means() {
  awk -F, -v w="$window" -v end="$2" 'NR > 1 && $1 <= end {
      k = int(($1 - 1) / w)
      for (c = 2; c <= 4; ++c) if ($c != 0) { sum[c, k] += $c; n[c, k]++ }
      if (k > last) last = k
    }
    END { for (c = 2; c <= 4; ++c) for (k = 0; k <= last; ++k) if (n[c, k] > 0) print c, k, sum[c, k] / n[c, k] }' "$1"
}

for other in "$@"; do
  nb=$(last_step "$base")
  no=$(last_step "$other")
  end=$((nb < no ? nb : no))
  echo "$other vs $base (windows of $window steps):"
  if [ "$nb" != "$no" ]; then echo "  note: $base has $nb steps, $other $no: steps 1-$end compared"; fi
  join -j 1 <(window_means "$base" "$end" | awk '{ print $1 "_" $2, $3 }' | sort) \
            <(window_means "$other" "$end" | awk '{ print $1 "_" $2, $3 }' | sort) |
    awk '{ split($1, ck, "_"); c = ck[1]; k = ck[2] + 0; b = $2; o = $3
           d = (b != 0 ? (o - b) / b : o - b); if (d < 0) d = -d
           print c, k, d, b, o }' |
    sort -k1,1n -k2,2n |
    awk -v w="$window" -v end="$end" 'BEGIN { name[2] = "loss_itc"; name[3] = "loss_itm"; name[4] = "loss_itg" }
         { c = $1; n[c]++; d[c, n[c]] = $3; if ($3 >= mx[c]) { mx[c] = $3; at[c] = $2 }; lb[c] = $4; lo[c] = $5 }
         END {
           for (c = 2; c <= 4; ++c) {
             if (n[c] == 0) { printf "  %s: no steps in common\n", name[c]; continue }
             # the median of the window differences (insertion sort: a few dozen windows)
             for (i = 1; i <= n[c]; ++i) v[i] = d[c, i]
             for (i = 2; i <= n[c]; ++i) { x = v[i]; j = i - 1; while (j >= 1 && v[j] > x) { v[j + 1] = v[j]; --j }; v[j + 1] = x }
             med = (n[c] % 2 ? v[(n[c] + 1) / 2] : (v[n[c] / 2] + v[n[c] / 2 + 1]) / 2)
             hi = (at[c] + 1) * w; if (hi > end) hi = end
             printf "  %s: relative difference of the window means: largest %.3f (steps %d-%d), median %.3f; last window %.4f vs %.4f\n",
                    name[c], mx[c], at[c] * w + 1, hi, med, lb[c], lo[c]
           }
         }'
done
