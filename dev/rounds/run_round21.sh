#!/usr/bin/env bash
# Round 21 (branch prepare-token-first, written 2026-12-07, not run): dispatch_decode_kernel loads
# its token and takes the amax before the pair sort, which they do not depend on (round 16: the
# prepare's ~5 µs of its own is a chain of dependent steps — ids, sort, the token's load, the
# amax, the stores; this takes the load and the amax off it). Prediction (H100): the prepare's
# chain step ~7.9 → ~7 µs at T = 1 on every model, T = 16-64 ~1 µs less, nothing at T >= 256
# (T·k > 1024 takes the multi-kernel prepare).
# Build here: bash dev/rounds/build_device_bins.sh on this branch; main's w4a8moe as
# build-lab/base.tar.xz (build-base/w4a8moe) and main's chain lab as build-lab/chain_lab_base.
#   t  test_gpu_distinct (full: every shape also with W4A8MOE_DECODE_PREPARE=0, bit for bit),
#      test_gpu_routing, test_gpu_workspace; memcheck and racecheck (quick) on test_gpu_distinct
#   b  bench T = 1, 16, 64, six models, base / new, twice, alternating (cuda_sm90)
#   c  chain lab T = 1: qwen3-30b-a3b and deepseek-v3 (H = 7,168, the most values a thread),
#      base / new
# `run_round21.sh PARTS [SECONDS]`; each step's limit is cut to what is left.
set -u
PARTS=${1:-tbc}
DEADLINE=${2:-560}
. "$(dirname "$0")/round_common.sh"
unpack bins base || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
B=build-cuda
if has t; then
  for t in test_gpu_distinct test_gpu_routing test_gpu_workspace; do
    timeout "$(lim 150)" $B/tests-gpu/$t > "$OUT/$t.log" 2>&1; echo "$t rc=$?"
    grep -h "FAIL\|passed, " "$OUT/$t.log" | tail -4
  done
  W4A8MOE_TEST_QUICK=1 SAN_TIMEOUT=$(lim 120) tests/gpu/run.sh $B san memcheck test_gpu_distinct \
    > "$OUT/memcheck.log" 2>&1; echo "memcheck rc=$?"; grep -h "ERROR SUMMARY" "$OUT/memcheck.log"
  W4A8MOE_TEST_QUICK=1 SAN_TIMEOUT=$(lim 120) tests/gpu/run.sh $B san racecheck test_gpu_distinct \
    > "$OUT/racecheck.log" 2>&1; echo "racecheck rc=$?"; grep -h "RACECHECK SUMMARY\|ERROR SUMMARY" "$OUT/racecheck.log"
fi
if has b; then
  for m in qwen3-30b-a3b llama4-scout mixtral-8x7b deepseek-v3 qwen3-235b-a22b llama4-maverick; do
    for b in build-base $B build-base $B; do
      echo "== $b $m"
      W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 40)" $b/w4a8moe bench --device cuda --model $m --tokens 1,16,64 \
        2>&1 | tee -a "$OUT/bench.log" | grep -E "^ +[0-9]+ |error|FAIL"
    done
  done
fi
if has c; then
  for m in qwen3-30b-a3b deepseek-v3; do
    for lab in chain_lab_base chain_lab; do
      echo "== $lab $m T=1"
      W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 40)" build-lab/$lab $m 1 2>&1 | tee -a "$OUT/chain.log" | tail -n +2
    done
  done
fi
echo "round 21 done in $(( $(date +%s) - t_start )) s"
