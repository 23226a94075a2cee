#!/usr/bin/env bash
# Round 32 (branch sm90-bn32, written 2026-12-07, not run yet): 32-row wgmma tiles, three CTAs an
# SM (rings of 8 stages, <= 74 KB; 56 registers a thread at launch, the producer's 24 and the
# consumers' 72 after setmaxnreg; ptxas: no spills), for 16-32 rows an expert (round 30: the
# small-batch kernel's bound at 15). Why: rounds 25-28 found the 64-row tiles latency-bound with
# too few warps an SM (two CTAs took 21-25 % off); at 16-32 rows half their MMA is padding and
# their accumulators hold the registers that keep a third CTA out. Same sums per element (a
# wgmma's N does not change an element's sum): same bits as the 64-row tiles. Prediction (H100):
# the 16-32-row points 15-25 % faster (Mixtral T = 64 ~519 -> ~420 µs, qwen3-30b T = 256 ~308 ->
# ~250, deepseek-v3 T = 512 ~4,040 -> ~3,300); 33+ rows unchanged. The off switch
# (W4A8MOE_SM90_BN32_MAX_ROWS=0) gives main's tiles, so one binary runs both sides.
# Build here: on the branch, bash dev/rounds/build_device_bins.sh; run(carry=["build-lab"]).
#   t  test_gpu_distinct (full: 28 rows at g = 128 and 24 at g = 32 on the 32-row tiles, and
#      every shape's bits on the 32- against the 64-row tiles and 64 against 128 compared),
#      test_gpu_workspace, test_gpu_consistency, test_gpu_large (quick); memcheck and racecheck
#      on test_gpu_distinct (quick)
#   k  bench 32-row tiles on / off, twice, alternating, at 16-32 rows an expert (and one 48)
#   m  the small-batch bound again, now against the 32-row tiles: 9-15 rows an expert with
#      W4A8MOE_SM90_MMA_MAX_ROWS=8 / default
#   w  the 64-row tiles' bound (round 31's part k): 33-64 rows an expert on the 128-row tiles
#      (W4A8MOE_SM90_BN64_MAX_ROWS=32) / default, at Mixtral T = 256, qwen3-30b T = 1024,
#      llama4-scout T = 768
#   p  bench/peers.py at T = 1, 16, 64, 256
# `run_round32.sh PARTS [SECONDS]`: two calls, `tk` then `mwp`.
set -u
PARTS=${1:-tk}
DEADLINE=${2:-570}
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
bench() { W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 40)" $B/w4a8moe bench --device cuda --model "$1" --tokens "$2" \
  2>&1 | grep -E "^ +[0-9]+ |error|FAIL"; }
if has k; then
  for mt in mixtral-8x7b:64,96,128 qwen3-30b-a3b:256,384,512 deepseek-v3:512,1024 llama4-scout:256,384 qwen3-235b-a22b:256,512; do
    for v in 32 0 32 0; do
      echo "== ${mt%%:*} bn32_max=$v"; W4A8MOE_SM90_BN32_MAX_ROWS=$v bench "${mt%%:*}" "${mt##*:}"
    done
  done 2>&1 | tee "$OUT/bn32.log"
fi
if has m; then
  for mt in mixtral-8x7b:40,48 llama4-scout:160,192 qwen3-235b-a22b:160 qwen3-30b-a3b:160,192; do
    for v in 15 8 15 8; do
      echo "== ${mt%%:*} mma_max=$v"; W4A8MOE_SM90_MMA_MAX_ROWS=$v bench "${mt%%:*}" "${mt##*:}"
    done
  done 2>&1 | tee "$OUT/mma-max.log"
fi
if has w; then
  for mt in mixtral-8x7b:256 qwen3-30b-a3b:1024 llama4-scout:768; do
    for v in 64 32 64 32; do
      echo "== ${mt%%:*} bn64_max=$v"; W4A8MOE_SM90_BN64_MAX_ROWS=$v bench "${mt%%:*}" "${mt##*:}"
    done
  done 2>&1 | tee "$OUT/bn64.log"
fi
if has p; then
  budget=$(lim 240)
  W4A8MOE_LIB=$PWD/$B/libw4a8moe.so timeout $(( budget + 30 )) python3 bench/peers.py --tokens 1,16,64,256 \
    --backend cuda_sm90 --budget "$budget" --out "$OUT/peers" > "$OUT/peers.log" 2>&1
  echo "peers rc=$?"; grep -E "^\| [a-z]" "$OUT/peers.log" | head -40
fi
echo "round 32 done in $(( $(date +%s) - t_start )) s"
