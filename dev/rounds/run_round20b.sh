#!/usr/bin/env bash
# Round 20b (2026-12-07, branch sm90-rows-split): three builds — base (build-base/, base.tar.xz:
# w4a8moe and tests-gpu/test_gpu_workspace; branch sm90-mma-no-nt4), split (build-split/,
# split.tar.xz: + the requantisation and widening on a grid of (rows, 1024-element slices),
# without round 20's schedule-widening, a loss) and new (build-cuda/: + GEMM2 of the
# small-batch path with K split eight ways where I >= 64 groups). Prediction (H100, T = 1):
# GEMM2 of llama4-scout/maverick ~20 → ~12 µs, Mixtral's ~36 → ~26.
# Build here: bash dev/rounds/build_device_bins.sh (new), the two archives, and the chain labs
# chain_lab_base, chain_lab_split, chain_lab in build-lab/.
#   t  every GPU test binary, memcheck (quick) on test_gpu_distinct and test_gpu_workspace,
#      racecheck (quick) on test_gpu_distinct; test_gpu_workspace on base
#   b  bench T = 1, 16, 64, 256, base / split / new (cuda_sm90), the three models whose GEMM2
#      splits K eight ways (device time was short: the slices alone were measured in round 20)
#   c  chain lab T = 1: llama4-scout and mixtral-8x7b, base / split / new
# `run_round20b.sh PARTS [SECONDS]`; each step's limit is cut to what is left.
set -u
PARTS=${1:-tbc}
DEADLINE=${2:-580}
. "$(dirname "$0")/round_common.sh"
unpack bins base split || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
B=build-cuda
if has b; then
  for m in llama4-scout mixtral-8x7b llama4-maverick; do # the models with I >= 64 groups
    for b in build-base build-split $B; do
      echo "== $b $m"
      W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 40)" $b/w4a8moe bench --device cuda --model $m \
        --tokens 1,16,64,256 2>&1 | tee -a "$OUT/bench.log" | grep -E "^ +[0-9]+ |error|FAIL"
    done
  done
fi
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
if has c; then
  for m in llama4-scout mixtral-8x7b; do
    for lab in chain_lab_base chain_lab_split chain_lab; do
      echo "== $lab $m T=1"
      W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 40)" build-lab/$lab $m 1 2>&1 | tee -a "$OUT/chain.log" | tail -n +2
    done
  done
fi
echo "round 20b done in $(( $(date +%s) - t_start )) s"
