#!/usr/bin/env bash
# Round 38 (written 2026-12-07): cuda_sm90's one-launch experts of a one-token forward
# (W4A8MOE_SM90_FUSED=1, kernels/sm90_fused_decode.cuh: the lab's version 3 in the library),
# its correctness and speed, then round 37's parts if time is left.
#   q  test_gpu_distinct, quick: the fused runs (T = 1 shapes: qwen3-30b-like, Mixtral-like,
#      top-1, g = 64, 16 pairs) against cpu_ref at the GPU tolerance, and a second forward the
#      same bits
#   b  w4a8moe bench at T = 1, FUSED=0, then 1 with 1, 2 and 4 groups a stage (FUSED_GPS; twice
#      for the first three models), graph us; the explain line. Prediction (H100): qwen3-30b-a3b 27 -> ~16 us (the prepare and combine stay),
#      Mixtral 91 -> ~72, DeepSeek-V3 93 -> ~75, Llama-4 Scout 46 -> ~30
#   m  memcheck and racecheck of test_gpu_distinct (quick, the fused runs included; logs san-*.log,
#      which part u's sanitizer runs do not overwrite)
#   p  ncu of the one-launch kernel at Mixtral T = 1 (PROF_MODEL): its warp states and memory rate
#   f  round 37's part f (the lab's versions 1-3), d (MMA_DEPTH 4 vs 2: removed since), u (full tests)
# Next (after 97f04d7, the four producer lanes, not yet run): `run_round38.sh qbmpfu 540`.
set -u
PARTS=${1:-qbmf}
DEADLINE=${2:-540}
. "$(dirname "$0")/round_common.sh"
unpack bins || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
B=build-cuda
bench() { timeout "$(lim 60)" $B/w4a8moe bench --device cuda --model "$1" --tokens "$2" \
  2>&1 | grep -E "^ +[0-9]+ |error|FAIL"; }
part_q() {
  W4A8MOE_TEST_QUICK=1 timeout "$(lim 120)" $B/tests-gpu/test_gpu_distinct > "$OUT/distinct-quick.log" 2>&1
  echo "distinct quick rc=$?"; grep -h "FUSED\|FAIL\|passed, " "$OUT/distinct-quick.log" | tail -30
}
part_b() {
  W4A8MOE_SM90_FUSED=1 timeout "$(lim 30)" $B/w4a8moe explain --device cuda --model qwen3-30b-a3b 2>&1 | grep -i "token\|launch" | head -5
  local n=0
  for m in ${FUSED_MODELS:-qwen3-30b-a3b mixtral-8x7b llama4-scout deepseek-v3 qwen3-235b-a22b llama4-maverick}; do
    n=$((n + 1))
    for f in 0 1 2 4 $([ $n -le 3 ] && echo 0 1 2 4); do # 0: staged; else one launch, f groups a stage
      echo "== $m fused=$([ $f -gt 0 ] && echo 1 gps=$f || echo 0)"
      W4A8MOE_BACKEND=cuda_sm90 W4A8MOE_SM90_FUSED=$([ $f -gt 0 ] && echo 1 || echo 0) W4A8MOE_SM90_FUSED_GPS=$f \
        bench $m 1
    done
  done 2>&1 | tee "$OUT/fused-bench.log"
}
part_m() {
  for tool in memcheck racecheck; do
    W4A8MOE_TEST_QUICK=1 SAN_TIMEOUT=$(lim 150) tests/gpu/run.sh "$B" san $tool test_gpu_distinct \
      > "$OUT/san-$tool.log" 2>&1; echo "$tool rc=$?"; grep -h "ERROR SUMMARY\|RACECHECK SUMMARY\|FAIL\|exit" \
      "$OUT/san-$tool.log" | tail -4
  done
}
part_p() {
  local ncu m=${PROF_MODEL:-mixtral-8x7b}
  ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  W4A8MOE_BACKEND=cuda_sm90 W4A8MOE_SM90_FUSED=1 timeout "$(lim 120)" $ncu --csv --page details \
    --section SpeedOfLight --section SchedulerStats --section WarpStateStats --section MemoryWorkloadAnalysis \
    -k "regex:sm90_fused|dispatch|combine|finalize" --launch-count 4 \
    $B/w4a8moe bench --device cuda --model "$m" --tokens 1 --iters 1 --warmup 0 --layers 1 > "$OUT/prof-fused.csv" 2>&1
  echo "== profile fused $m rc=$?"
  grep -h "Duration\|DRAM Throughput\|Memory Throughput\|Issue Slots Busy\|Warp Cycles Per Issued\|No Eligible" \
    "$OUT/prof-fused.csv" | cut -c1-170 | head -30
}
part_f() { OUT="$OUT/r37" bash "$(dirname "$0")/run_round37.sh" f "$(lim 200)" 2>&1 | grep -v "^$" | tail -40; }
part_d() { OUT="$OUT/r37d" bash "$(dirname "$0")/run_round37.sh" d "$(lim 200)" 2>&1 | tail -60; }
part_u() { gpu_tests $B routing; }
summary() {
  echo "==== summary"
  [ -f "$OUT/fused-bench.log" ] && awk '/^==/ {h=$0; next} {print h " | " $1, $3}' "$OUT/fused-bench.log"
  grep -h "passed, \|ERROR SUMMARY\|RACECHECK SUMMARY" "$OUT"/distinct-quick.log "$OUT"/san-*.log \
    "$OUT"/test_gpu_*.log 2>/dev/null
}
for (( i = 0; i < ${#PARTS}; i++ )); do part_${PARTS:i:1}; done
summary
echo "round 38 done in $(( $(date +%s) - t_start )) s"
