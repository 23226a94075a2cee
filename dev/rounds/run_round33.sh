#!/usr/bin/env bash
# Round 33 (branch sm90-bn32, 2026-12-07): with the 32-row wgmma tiles (round 32), where does the
# small-batch mma kernel still win? Round 32's part m: at 9-15 rows an expert the 32-row tiles beat
# its two-fragment entry on every model (Mixtral T = 40/48, scout 160/192, qwen3-235b 160,
# qwen3-30b 160/192: 10-26 %). Here its one-fragment entry (1-8 rows) against them:
# W4A8MOE_SM90_MMA_MAX_ROWS = 8 (the mma tiles up to 8 rows) / 4 / 0 (never), at 1-8 rows an expert.
# Prediction: the mma tiles keep T = 1 (a 32-row tile is 97 % padding and one CTA a 128-row slice)
# and lose from ~6 rows. `run_round33.sh [SECONDS]`; same binary as round 32.
set -u
PARTS=m
DEADLINE=${1:-500}
. "$(dirname "$0")/round_common.sh"
unpack bins || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader
B=build-cuda
bench() { W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 40)" $B/w4a8moe bench --device cuda --model "$1" --tokens "$2" \
  2>&1 | grep -E "^ +[0-9]+ |error|FAIL"; }
for mt in mixtral-8x7b:1,16,24,32 qwen3-30b-a3b:1,16,64,96,128 qwen3-235b-a22b:16,64,128 llama4-scout:16,64,96,128 \
          deepseek-v3:64,128,256 llama4-maverick:64,256; do
  for v in 8 4 0 8 4 0; do
    echo "== ${mt%%:*} mma_max=$v"; W4A8MOE_SM90_MMA_MAX_ROWS=$v bench "${mt%%:*}" "${mt##*:}"
  done
done 2>&1 | tee "$OUT/mma-max.log"
echo "round 33 done in $(( $(date +%s) - t_start )) s"
