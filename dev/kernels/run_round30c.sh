#!/usr/bin/env bash
# Round 30c (written 2026-12-07): the new small-batch bound (configs/sm90_tiles.h: two-fragment
# mma tiles up to 15 rows an expert, none from 256 local experts) as the default: GPU tests
# (quick) and the boundary points once each.   `run_round30c.sh [SECONDS]`.
set -u
PARTS=tb
DEADLINE=${1:-150}
. "$(dirname "$0")/round_common.sh"
unpack bins || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader
B=build-cuda
for t in test_gpu_distinct test_gpu_workspace test_gpu_consistency; do
  W4A8MOE_TEST_QUICK=1 timeout "$(lim 50)" $B/tests-gpu/$t > "$OUT/$t.log" 2>&1; echo "$t rc=$?"
  grep -h "FAIL\|passed, " "$OUT/$t.log" | tail -3
done
for mt in deepseek-v3:320,512 qwen3-30b-a3b:256 mixtral-8x7b:48,64 llama4-scout:192,256; do
  echo "== ${mt%%:*}"
  W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 30)" $B/w4a8moe bench --device cuda --model ${mt%%:*} \
    --tokens ${mt##*:} 2>&1 | grep -E "^ +[0-9]+ |error|FAIL"
done 2>&1 | tee "$OUT/bench.log"
echo "round 30c done in $(( $(date +%s) - t_start )) s"
