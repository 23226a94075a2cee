#!/usr/bin/env bash
# Round 26 (branch sm90-promote-overlap, written 2026-12-07): GEMM1's wgmma kernel (the
# promoting f16 consumer, sm90_consume_f16) pipelined as GEMM2's scaled one: step ks+1
# converted while step ks's wgmmas run, a full wait only at a K group's end (was: nothing
# converted while the wgmmas ran, a full wait every two k32 steps). Same sums, same bits.
# Prediction (H100): GEMM1 at 17-256 rows an expert up to ~1.3x faster where it is latency-
# bound (Mixtral T = 128/256, the prefill points), nothing at T <= 64 (the mma.sync kernel).
# Build here: build_device_bins.sh on the branch; main's w4a8moe as build-lab/base.tar.xz.
#   t  test_gpu_distinct (full: every wgmma shape, g = 32/64/128, BN 64/128), consistency
#      and workspace; racecheck and memcheck on test_gpu_distinct (quick)
#   b  bench base / new, twice: Mixtral T = 128, 256, 1024; qwen3-30b-a3b T = 512, 2048;
#      llama4-scout T = 512; deepseek-v3 T = 1024
# `run_round26.sh PARTS [SECONDS]`.
set -u
PARTS=${1:-tb}
DEADLINE=${2:-560}
. "$(dirname "$0")/round_common.sh"
unpack bins base || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader
B=build-cuda
if has t; then
  timeout "$(lim 150)" $B/tests-gpu/test_gpu_distinct > "$OUT/test_gpu_distinct.log" 2>&1; echo "distinct rc=$?"
  grep -h "FAIL\|passed, " "$OUT/test_gpu_distinct.log" | tail -4
  for t in test_gpu_consistency test_gpu_workspace; do
    W4A8MOE_TEST_QUICK=1 timeout "$(lim 90)" $B/tests-gpu/$t > "$OUT/$t.log" 2>&1; echo "$t rc=$?"
    grep -h "FAIL\|passed, " "$OUT/$t.log" | tail -4
  done
fi
if has b; then
  for mt in mixtral-8x7b:128,256,1024 qwen3-30b-a3b:512,2048 llama4-scout:512 deepseek-v3:1024; do
    m=${mt%%:*}; t=${mt##*:}
    for bin in build-base $B build-base $B; do
      echo "== $bin $m"
      W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 40)" $bin/w4a8moe bench --device cuda --model $m --tokens $t \
        2>&1 | grep -E "^ +[0-9]+ |error|FAIL"
    done
  done
fi
if has t; then
  for tool in racecheck memcheck; do
    W4A8MOE_TEST_QUICK=1 SAN_TIMEOUT=$(lim 120) tests/gpu/run.sh $B san $tool test_gpu_distinct \
      > "$OUT/$tool.log" 2>&1; echo "$tool rc=$?"; grep -h "ERROR SUMMARY\|RACECHECK SUMMARY" "$OUT/$tool.log"
  done
fi
echo "round 26 done in $(( $(date +%s) - t_start )) s"
