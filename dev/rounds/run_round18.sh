#!/usr/bin/env bash
# Round 18: the small-batch kernel's inputs in fragment order (kernels/frag_order.cuh; branch
# sm90-frag-inputs): GEMM2's f16 codes and, for tiles of 16 or 32 rows, GEMM1's rows widened by
# sm90_widen_kernel<true>, one 16-byte load per 8-row fragment a k32 step instead of four loads
# (and four widenings). Baseline: main at 560e7a7 (build-lab/base.tar.xz → build-base).
# Prediction (H100): Mixtral T = 64 (16 rows an expert) 918 → ~650 µs, T = 128 1,822 → ~1,100;
# T = 1 unchanged or a little faster (GEMM2's loads).
#   t  test_gpu_distinct (full; 16- and 24-row shapes), test_gpu_workspace
#   b  bench cuda_sm90 build-base / new: Mixtral T = 16, 64, 128; qwen3-30b-a3b T = 1, 256;
#      llama4-scout T = 1, 256; qwen3-235b-a22b T = 256; cuda_sm89 Mixtral T = 64, 128
#   m  memcheck on test_gpu_distinct (quick)
# `run_round18.sh PARTS [SECONDS]`; each step's limit is cut to what is left.
set -u
PARTS=${1:-tbm}
DEADLINE=${2:-400}
. "$(dirname "$0")/round_common.sh"
unpack bins base || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
B=build-cuda
if has t; then
  timeout "$(lim 150)" $B/tests-gpu/test_gpu_distinct > "$OUT/distinct.log" 2>&1; echo "distinct rc=$?"
  grep -h "FAIL\|passed, " "$OUT/distinct.log" | tail -6
  timeout "$(lim 60)" $B/tests-gpu/test_gpu_workspace > "$OUT/workspace.log" 2>&1; echo "workspace rc=$?"
  grep -h "FAIL\|passed, " "$OUT/workspace.log" | tail -3
fi
bench() { # backend build model tokens
  echo "== $1 $2 $3"
  W4A8MOE_BACKEND=$1 timeout "$(lim 45)" $2/w4a8moe bench --device cuda --model $3 --tokens $4 \
    2>&1 | tee -a "$OUT/bench.log" | grep -E "^ +[0-9]+ |error|FAIL"
}
if has b; then
  for mt in mixtral-8x7b:16,64,128 qwen3-30b-a3b:1,256 llama4-scout:1,256 qwen3-235b-a22b:256; do
    for b in build-base $B; do bench cuda_sm90 $b ${mt%%:*} ${mt##*:}; done
  done
  bench cuda_sm89 $B mixtral-8x7b 64,128
fi
if has m; then
  W4A8MOE_TEST_QUICK=1 SAN_TIMEOUT=$(lim 100) tests/gpu/run.sh $B san memcheck test_gpu_distinct \
    > "$OUT/memcheck-distinct.log" 2>&1
  echo "memcheck distinct rc=$?"; grep -h "ERROR SUMMARY\|passed, \|exit" "$OUT/memcheck-distinct.log" | head -4
fi
echo "round 18 done in $(( $(date +%s) - t_start )) s"
