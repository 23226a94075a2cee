#!/usr/bin/env bash
# Decode round 1: the decode-GEMM lab (sm89_gemm_kernel vs sm89_decode_kernel), the GPU tests
# that force every GPU backend, the whole layer at decode sizes before (build-lab/w4a8moe-base,
# the parent commit) and after, and the sanitizers on the distinct-expert test. Logs under $OUT.
set -u
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
B=build-cuda
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/summary.txt"
{
for c in "2 1 4096 14336" "2 1 28672 4096" "8 1 2048 768" "8 1 1536 2048" "8 1 7168 2048" \
         "8 1 4096 7168" "8 16 4096 14336" "64 2 7168 2048" "2 1 4096 14336 32"; do
  timeout 60 build-lab/decode_lab $c
done
} > "$OUT/lab.log" 2>&1
grep -v "^naive" "$OUT/lab.log"
( timeout 150 tests/gpu/run.sh $B tests > "$OUT/tests.log" 2>&1; echo "gpu tests rc=$?" ) | tee -a "$OUT/summary.txt"
grep -h "FAIL\|passed" "$OUT/tests.log" | head -12
for m in mixtral-8x7b qwen3-30b-a3b deepseek-v3 llama4-scout qwen3-235b-a22b; do
  for bin in build-lab/w4a8moe-base $B/w4a8moe; do
    echo "== $bin $m" >> "$OUT/bench.log"
    timeout 75 $bin bench --device cuda --model $m --tokens 1,16,64 2>&1 | tee -a "$OUT/bench.log" | grep -v "^ok\|^device" | tail -4
  done
done
for tool in memcheck racecheck; do
  echo "== $tool" >> "$OUT/san.log"
  W4A8MOE_TEST_QUICK=1 timeout 120 compute-sanitizer --tool $tool --error-exitcode 86 $B/tests-gpu/test_gpu_distinct > "$OUT/san-$tool.log" 2>&1
  echo "$tool rc=$?" | tee -a "$OUT/summary.txt"
  grep -h "SUMMARY\|Race reported\|passed" "$OUT/san-$tool.log" | head -5
done
