#!/usr/bin/env bash
# Round 20 (2026-12-07): three builds of cuda_sm90, stacked on branch sm90-mma-no-nt4 (base,
# build-base/): + the schedule kernel widening at most 8 rows into fragment order (t1w,
# build-t1w/, branch sm90-t1-wide-rows) + the requantisation and widening on a grid of (rows,
# 1024-element slices) instead of a block a row (new, build-cuda/). Predictions (H100): t1w
# ~1 µs off qwen3-30b T = 1; the slices: the requant step at T = 1 10 → ~2.5 µs at
# llama4-scout/maverick (I = 8,192), 18.5 → ~3 at Mixtral (14,336), nothing at qwen3-30b (768).
# Build here: bash dev/rounds/build_device_bins.sh (the new build), base.tar.xz and t1w.tar.xz
# holding build-base/ (w4a8moe, tests-gpu/test_gpu_workspace) and build-t1w/ (w4a8moe), and the
# chain labs chain_lab_base, chain_lab_t1w, chain_lab in build-lab/.
#   t  every GPU test binary on the new build, memcheck (quick) on test_gpu_distinct and
#      test_gpu_workspace, racecheck (quick) on test_gpu_distinct; test_gpu_workspace on base
#   b  bench T = 1, 16, 64, six models, base / t1w / new, twice, alternating (cuda_sm90)
#   c  chain lab T = 1: qwen3-30b-a3b, llama4-scout, mixtral-8x7b, base / t1w / new
# `run_round20.sh PARTS [SECONDS]`; each step's limit is cut to what is left.
set -u
PARTS=${1:-tbc}
DEADLINE=${2:-580}
. "$(dirname "$0")/round_common.sh"
unpack bins base t1w || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
B=build-cuda
if has t; then
  timeout "$(lim 300)" tests/gpu/run.sh $B tests > "$OUT/tests.log" 2>&1; echo "gpu tests rc=$?"
  grep -h "passed, \|FAIL" "$OUT/tests.log" | tail -14
  timeout "$(lim 60)" build-base/tests-gpu/test_gpu_workspace > "$OUT/workspace-base.log" 2>&1
  echo "base workspace rc=$?"; grep -h "passed, \|FAIL\|chunks of 7" "$OUT/workspace-base.log" | tail -8
  W4A8MOE_TEST_QUICK=1 SAN_TIMEOUT=$(lim 120) tests/gpu/run.sh $B san memcheck test_gpu_distinct test_gpu_workspace \
    > "$OUT/memcheck.log" 2>&1; echo "memcheck rc=$?"
  W4A8MOE_TEST_QUICK=1 SAN_TIMEOUT=$(lim 100) tests/gpu/run.sh $B san racecheck test_gpu_distinct \
    > "$OUT/racecheck.log" 2>&1; echo "racecheck rc=$?"
  grep -h "ERROR SUMMARY\|RACECHECK SUMMARY" "$OUT/memcheck.log" "$OUT/racecheck.log"
fi
if has b; then
  for m in qwen3-30b-a3b llama4-scout mixtral-8x7b deepseek-v3 qwen3-235b-a22b llama4-maverick; do
    for b in build-base build-t1w $B build-base build-t1w $B; do
      echo "== $b $m"
      W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 40)" $b/w4a8moe bench --device cuda --model $m --tokens 1,16,64 \
        2>&1 | tee -a "$OUT/bench.log" | grep -E "^ +[0-9]+ |error|FAIL"
    done
  done
fi
if has c; then
  for m in qwen3-30b-a3b llama4-scout mixtral-8x7b; do
    for lab in chain_lab_base chain_lab_t1w chain_lab; do
      echo "== $lab $m T=1"
      W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 40)" build-lab/$lab $m 1 2>&1 | tee -a "$OUT/chain.log" | tail -n +2
    done
  done
fi
echo "round 20 done in $(( $(date +%s) - t_start )) s"
