#!/usr/bin/env bash
# Round 31 (written 2026-12-07, not run yet: the next session's first call). On main's build
# after round 30 (the small-batch bound at 15 rows an expert, 8 from 256 local experts; its
# default build never ran on a GPU):
#   t  test_gpu_distinct (full: its new 14-row and 256-expert/10-row shapes), test_gpu_workspace,
#      test_gpu_consistency and test_gpu_large (quick); memcheck and racecheck on
#      test_gpu_distinct (quick)
#   b  the new default at round 30's points, once each: expected (round 30's tables) deepseek-v3
#      T = 320/384/512 ~4,040; qwen3-30b T = 192/256 ~335/~308 (192 stays on the mma tiles);
#      Mixtral T = 48/64 ~440/~519; llama4-scout T = 192/256 ~635/~745; qwen3-235b 160/256
#      ~852/~944
#   k  the 64-row wgmma tiles' bound (W4A8MOE_SM90_BN64_MAX_ROWS=16: 17-64 rows an expert on the
#      128-row tiles) at 32 and 64 rows an expert, now that the 64-row tiles run two CTAs an SM:
#      Mixtral T = 128, 256 (torch 557 µs at T = 256, ours ~922), qwen3-30b T = 512, 1024,
#      llama4-scout T = 512, deepseek-v3 T = 1024. Prediction: 64 rows an expert (Mixtral T =
#      256, qwen3-30b T = 1024) faster on the 128-row tiles (one weight pass where the 64-row
#      tiles need ~1.5: rows spread over 64), 32 rows slower (half-empty 128-row tiles).
#   p  bench/peers.py at T = 1, 16, 64, 256 with the new default
# Build: build_device_bins.sh; run(carry=["build-lab"]). `run_round31.sh PARTS [SECONDS]`.
set -u
PARTS=${1:-tbkp}
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
if has b; then
  for mt in deepseek-v3:320,384,512 qwen3-30b-a3b:192,256 mixtral-8x7b:48,64 llama4-scout:192,256 qwen3-235b-a22b:160,256; do
    echo "== ${mt%%:*}"; bench "${mt%%:*}" "${mt##*:}"
  done 2>&1 | tee "$OUT/bench-default.log"
fi
if has k; then
  for mt in mixtral-8x7b:128,256 qwen3-30b-a3b:512,1024 llama4-scout:512 deepseek-v3:1024; do
    for knob in 64 16 64 16; do
      echo "== ${mt%%:*} bn64_max=$knob"; W4A8MOE_SM90_BN64_MAX_ROWS=$knob bench "${mt%%:*}" "${mt##*:}"
    done
  done 2>&1 | tee "$OUT/bn64.log"
fi
if has p; then
  budget=$(lim 240)
  W4A8MOE_LIB=$PWD/$B/libw4a8moe.so timeout $(( budget + 30 )) python3 bench/peers.py --tokens 1,16,64,256 \
    --backend cuda_sm90 --budget "$budget" --out "$OUT/peers" > "$OUT/peers.log" 2>&1
  echo "peers rc=$?"; grep -E "^\| [a-z]" "$OUT/peers.log" | head -40
fi
echo "round 31 done in $(( $(date +%s) - t_start )) s"
