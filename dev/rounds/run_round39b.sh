#!/usr/bin/env bash
# Round 39b (2026-12-08): the one-token defaults after round 39 (W4A8MOE_SM90_QUANT_FIRST=1 and
# W4A8MOE_SM90_STAGE=2 on) checked and timed on the card that measured them:
#   q  test_gpu_distinct and test_gpu_routing, quick (the old path as QUANT_FIRST=0 STAGE=0
#      against the new default's bits), then memcheck of test_gpu_distinct, quick
#   b  w4a8moe bench --tokens 1,16,64 on six models, one process each: the default against
#      QUANT_FIRST=0 STAGE=0 (round 38b's default), twice in turn. Prediction (H100): T = 1 as
#      round 39's "QUANT_FIRST=1 STAGE=2" rows (3-8 % faster), T = 16 and 64 unchanged (the
#      switches act on one-token forwards only)
# Run: bash dev/rounds/build_device_bins.sh, then run(command="bash dev/rounds/run_round39b.sh qb 540",
#      carry=["build-lab/bins.tar.xz"]).
set -u
PARTS=${1:-qb}
DEADLINE=${2:-540}
. "$(dirname "$0")/round_common.sh"
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
B=build-cuda
part_q() {
  [ -x $B/w4a8moe ] || unpack bins || return 1
  W4A8MOE_TEST_QUICK=1 timeout "$(lim 180)" $B/tests-gpu/test_gpu_distinct > "$OUT/distinct-quick.log" 2>&1
  echo "distinct quick rc=$?"; grep -h "FAIL\|passed, " "$OUT/distinct-quick.log" | tail -6
  W4A8MOE_TEST_QUICK=1 timeout "$(lim 60)" $B/tests-gpu/test_gpu_routing > "$OUT/routing-quick.log" 2>&1
  echo "routing quick rc=$?"; grep -h "FAIL\|passed, " "$OUT/routing-quick.log" | tail -6
  W4A8MOE_TEST_QUICK=1 SAN_TIMEOUT=$(lim 120) tests/gpu/run.sh $B san memcheck test_gpu_distinct \
    > "$OUT/san-memcheck.log" 2>&1; echo "memcheck rc=$?"; grep -h "ERROR SUMMARY\|FAIL" "$OUT/san-memcheck.log" | tail -3
}
part_b() {
  [ -x $B/w4a8moe ] || unpack bins || return 1
  timeout "$(lim 30)" $B/w4a8moe explain --device cuda --model qwen3-30b-a3b 2>&1 | grep -m2 "QUANT_FIRST\|STAGE"
  local old="W4A8MOE_SM90_QUANT_FIRST=0 W4A8MOE_SM90_STAGE=0"
  for m in qwen3-30b-a3b mixtral-8x7b llama4-scout deepseek-v3 qwen3-235b-a22b llama4-maverick; do
    W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 100)" $B/w4a8moe bench --device cuda --model $m --tokens 1,16,64 \
      --env-sets "-;$old;-;$old" 2>&1 | grep -E "^== |^ +[0-9]+ |error|FAIL|^w4a8moe"
  done 2>&1 | tee "$OUT/defaults-bench.log"
}
for (( i = 0; i < ${#PARTS}; i++ )); do part_${PARTS:i:1}; done
echo "==== summary"
[ -f "$OUT/defaults-bench.log" ] && python3 dev/rounds/summarise_bench.py "$OUT/defaults-bench.log"
grep -h "passed, \|ERROR SUMMARY" "$OUT"/distinct-quick.log "$OUT"/routing-quick.log "$OUT"/san-*.log 2>/dev/null
echo "round 39b done in $(( $(date +%s) - t_start )) s"
