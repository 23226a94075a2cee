#!/usr/bin/env bash
# Round 34 (branch sm90-bn32, 2026-12-07): the new default checked and measured, one call.
#   t  round 32's tests on the default of rounds 32-33 (mma tiles up to 6 rows an expert, 32-row
#      wgmma tiles 7-32, 64-row 33-64): test_gpu_distinct (full), test_gpu_workspace,
#      test_gpu_consistency, test_gpu_large (quick); memcheck and racecheck (distinct, quick)
#   p  bench/peers.py at T = 1, 16, 64, 256
#   b  the 32-row tiles above 32 rows (W4A8MOE_SM90_BN32_MAX_ROWS=64 / default) at 48 and 64 rows
#      an expert. Prediction: even or worse at 64 (Mixtral T = 256: the 64-row tiles' padding is
#      what the routing spreads over 64 ± 8; the 32-row ones halve it but convert each weight
#      twice as often), better at 48 by ≤ 10 %.
# `run_round34.sh [PARTS] [SECONDS]`; build with dev/rounds/build_device_bins.sh, carry
# build-lab/bins.tar.xz.
set -u
PARTS=${1:-tpb}
DEADLINE=${2:-540}
. "$(dirname "$0")/round_common.sh"
unpack bins || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader
B=build-cuda
if has t; then
  timeout "$(lim 150)" $B/tests-gpu/test_gpu_distinct > "$OUT/test_gpu_distinct.log" 2>&1; echo "distinct rc=$?"
  grep -h "FAIL\|passed, " "$OUT/test_gpu_distinct.log" | tail -4
  for t in test_gpu_workspace test_gpu_consistency test_gpu_large; do
    W4A8MOE_TEST_QUICK=1 timeout "$(lim 90)" $B/tests-gpu/$t > "$OUT/$t.log" 2>&1; echo "$t rc=$?"
    grep -h "FAIL\|passed, " "$OUT/$t.log" | tail -4
  done
  for tool in memcheck racecheck; do
    W4A8MOE_TEST_QUICK=1 SAN_TIMEOUT=$(lim 120) tests/gpu/run.sh $B san $tool test_gpu_distinct \
      > "$OUT/$tool.log" 2>&1; echo "$tool rc=$?"; grep -h "ERROR SUMMARY\|RACECHECK SUMMARY" "$OUT/$tool.log"
  done
fi
if has p; then
  budget=$(lim 200)
  W4A8MOE_LIB=$PWD/$B/libw4a8moe.so timeout $(( budget + 30 )) python3 bench/peers.py --tokens 1,16,64,256 \
    --backend cuda_sm90 --budget "$budget" --out "$OUT/peers" > "$OUT/peers.log" 2>&1
  echo "peers rc=$?"; grep -E "^\| [a-z]" "$OUT/peers.log" | head -40
fi
bench() { W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 40)" $B/w4a8moe bench --device cuda --model "$1" --tokens "$2" \
  2>&1 | grep -E "^ +[0-9]+ |error|FAIL"; }
if has b; then
  for mt in mixtral-8x7b:192,256 qwen3-30b-a3b:768,1024 llama4-scout:768 qwen3-235b-a22b:768; do
    for v in 64 32 64 32; do
      echo "== ${mt%%:*} bn32_max=$v"; W4A8MOE_SM90_BN32_MAX_ROWS=$v bench "${mt%%:*}" "${mt##*:}"
    done
  done 2>&1 | tee "$OUT/bn32-above.log"
fi
echo "round 34 done in $(( $(date +%s) - t_start )) s"
