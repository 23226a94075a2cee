#!/usr/bin/env bash
# Round 30b (written 2026-12-07), round 30's build (a16ae88): the small-batch bound at 8 rows an
# expert (W4A8MOE_SM90_MMA_MAX_ROWS=8) at the 10- and 12-row points round 30 did not measure,
# test_gpu_distinct (quick) under that bound, and round 30's tolerance sweep with fewer seeds
# (200 a case did not finish in its 45 s).   `run_round30b.sh PARTS [SECONDS]`: m, t, r.
set -u
PARTS=${1:-mtr}
DEADLINE=${2:-360}
. "$(dirname "$0")/round_common.sh"
unpack bins || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader
B=build-cuda
if has m; then
  for mt in mixtral-8x7b:40,48 qwen3-30b-a3b:160,192 deepseek-v3:320,384 llama4-scout:160,192 qwen3-235b-a22b:160 llama4-maverick:1280; do
    m=${mt%%:*}; t=${mt##*:}
    for knob in 16 8 16 8; do
      echo "== $m mma_max=$knob"
      W4A8MOE_SM90_MMA_MAX_ROWS=$knob W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 40)" $B/w4a8moe bench --device cuda \
        --model $m --tokens $t 2>&1 | grep -E "^ +[0-9]+ |error|FAIL"
    done
  done 2>&1 | tee "$OUT/mma-max.log"
fi
if has t; then
  W4A8MOE_SM90_MMA_MAX_ROWS=8 W4A8MOE_TEST_QUICK=1 timeout "$(lim 90)" $B/tests-gpu/test_gpu_distinct \
    > "$OUT/distinct-mma8.log" 2>&1; echo "distinct (mma_max 8) rc=$?"
  grep -h "FAIL\|passed, " "$OUT/distinct-mma8.log" | tail -4
fi
if has r; then
  s0=$(date +%s)
  for c in "cuda_sm89 200 4" "cuda_sm89 200 0" "cuda_sm90 120 4" "cuda_sm90 120 0"; do
    timeout "$(lim 40)" build-lab/tol_replay $c $s0 25 2>&1 | grep -v "^  \(device\|host\|rows\)" | tail -6
  done 2>&1 | tee "$OUT/replay-sweep.log"
fi
echo "round 30b done in $(( $(date +%s) - t_start )) s"
