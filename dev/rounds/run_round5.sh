#!/usr/bin/env bash
# Round 5 (final): GPU tests + compute-sanitizer over build-cuda, verify on CUDA, and the bench
# of cuda_sm90 (forced) against the oracle's default at prefill sizes. Logs under $OUT.
set -u
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
B=build-cuda
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
( timeout 200 tests/gpu/run.sh $B tests > "$OUT/tests.log" 2>&1; echo "gpu tests rc=$?" ) | tee "$OUT/summary.txt"
grep -h "FAIL\|passed" "$OUT/tests.log" | head -12
timeout 100 $B/w4a8moe verify --device cuda 2>&1 | tail -2 | tee -a "$OUT/summary.txt"
for m in mixtral-8x7b qwen3-235b-a22b deepseek-v3 llama4-scout; do
  W4A8MOE_BACKEND=cuda_sm90 timeout 60 $B/w4a8moe bench --device cuda --model $m --tokens 1,64,1024,4096,16384 2>&1 | tee -a "$OUT/bench.log" | grep -v "^ok\|^device" | tail -8
done
( SAN_TIMEOUT=100 timeout 230 tests/gpu/run.sh $B san > "$OUT/san.log" 2>&1; echo "sanitizers rc=$?" ) | tee -a "$OUT/summary.txt"
grep -h "compute-sanitizer\|SUMMARY\|!!\|Race reported" "$OUT/san.log" | head -24
