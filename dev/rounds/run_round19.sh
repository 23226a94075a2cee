#!/usr/bin/env bash
# Round 19 (branch sm90-mma-no-nt4, written 2026-12-07, not run yet): the checks that gate its
# merge — tiles of 17-32 rows an expert on the wgmma kernels and cuda_sm90 first in the oracle —
# and where llama4-scout's T = 1 lost 1.5 µs in round 18.
# Build here first: bash dev/rounds/build_device_bins.sh (this branch); and for part c the
# chain lab of main at 560e7a7 (before the fragment-order inputs) as build-lab/chain_lab_base:
#   git worktree add /tmp/base 560e7a7 && (cd /tmp/base && make -j2 BUILD=build-cuda all &&
#   cc ... dev/kernels/chain_lab.c ... as in build_device_bins.sh) && cp it to build-lab/.
#   t  every GPU test binary (tests/gpu/run.sh tests), memcheck on test_gpu_distinct and
#      test_gpu_consistency and racecheck on test_gpu_distinct (quick)
#   o  bench the oracle's own choice and cuda_sm89 at T = 1, 16, 64, 256, 1024, six models
#      (the header line names the backend the oracle chose: cuda_sm90 expected on sm_90)
#   c  chain lab llama4-scout T = 1: build-lab/chain_lab_base against build-lab/chain_lab
# `run_round19.sh PARTS [SECONDS]`; each step's limit is cut to what is left.
set -u
PARTS=${1:-toc}
DEADLINE=${2:-560}
. "$(dirname "$0")/round_common.sh"
unpack bins || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
B=build-cuda
if has t; then
  timeout "$(lim 240)" tests/gpu/run.sh $B tests > "$OUT/tests.log" 2>&1; echo "gpu tests rc=$?"
  grep -h "passed, \|FAIL" "$OUT/tests.log" | tail -12
  W4A8MOE_TEST_QUICK=1 SAN_TIMEOUT=$(lim 100) tests/gpu/run.sh $B san memcheck test_gpu_distinct test_gpu_consistency \
    > "$OUT/memcheck.log" 2>&1; echo "memcheck rc=$?"
  W4A8MOE_TEST_QUICK=1 SAN_TIMEOUT=$(lim 100) tests/gpu/run.sh $B san racecheck test_gpu_distinct \
    > "$OUT/racecheck.log" 2>&1; echo "racecheck rc=$?"
  grep -h "ERROR SUMMARY\|RACECHECK SUMMARY" "$OUT/memcheck.log" "$OUT/racecheck.log"
fi
if has o; then
  for m in mixtral-8x7b qwen3-30b-a3b qwen3-235b-a22b deepseek-v3 llama4-scout llama4-maverick; do
    for be in oracle cuda_sm89; do
      echo "== $be $m"
      if [ $be = oracle ]; then env -u W4A8MOE_BACKEND timeout "$(lim 60)" $B/w4a8moe bench --device cuda --model $m \
        --tokens 1,16,64,256,1024 2>&1 | tee -a "$OUT/bench.log" | grep -E "backend|^ +[0-9]+ |error|FAIL"
      else W4A8MOE_BACKEND=$be timeout "$(lim 60)" $B/w4a8moe bench --device cuda --model $m \
        --tokens 1,16,64,256,1024 2>&1 | tee -a "$OUT/bench.log" | grep -E "^ +[0-9]+ |error|FAIL"; fi
    done
  done
fi
if has c; then
  for lab in build-lab/chain_lab_base build-lab/chain_lab build-lab/chain_lab_base build-lab/chain_lab; do
    echo "== $lab llama4-scout T=1"
    W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 40)" $lab llama4-scout 1 2>&1 | tee -a "$OUT/chain.log" | tail -n +2
  done
fi
echo "round 19 done in $(( $(date +%s) - t_start )) s"
