#!/usr/bin/env bash
# Round 35 (main after the sm90-bn32 merge, 2026-12-07): where a T = 1 layer goes now, per kernel
# (issue 8 asks for the breakdown before and after; round 5 has the first). ncu, caches flushed
# before each kernel, its locked clocks (the sum exceeds the graph's time), one layer:
# gpu__time_duration, grid, registers of every kernel of the forward. `run_round35.sh [SECONDS]`.
set -u
PARTS=k
DEADLINE=${1:-200}
. "$(dirname "$0")/round_common.sh"
unpack bins || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
B=build-cuda
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
export W4A8MOE_BACKEND=cuda_sm90
for m in qwen3-30b-a3b mixtral-8x7b llama4-scout deepseek-v3; do
  timeout "$(lim 50)" $ncu --csv --metrics gpu__time_duration.sum,launch__grid_size,launch__registers_per_thread \
    -k "regex:dispatch|schedule|widen|requant|combine|route|sm90_mma|sm90s_gemm|sm90_gemm_kernel" --launch-count 10 \
    $B/w4a8moe bench --device cuda --model $m --tokens 1 --iters 1 --warmup 0 --layers 1 \
    > "$OUT/ncu-t1-$m.csv" 2> "$OUT/ncu-t1-$m.err"
  echo "== $m T=1 rc=$?"
  grep -E '"gpu__time_duration.sum"|"launch__grid_size"|"launch__registers' "$OUT/ncu-t1-$m.csv" \
    | awk -F'","' '{ sub(/\(.*/, "", $5); printf "%-14s %-40s %s\n", $(NF-2), substr($5, 1, 40), $NF }' | tr -d '"' | head -40
done
echo "round 35 done in $(( $(date +%s) - t_start )) s"
