#!/usr/bin/env bash
# Decode round 2: the decode lab with the bulk-copy kernel (src/cuda/kernels/sm90_decode_gemm.cuh),
# ncu of the gated sm89 and bulk versions, the GPU tests, the whole layer at decode sizes, the
# sanitizers on the distinct-expert test, the torch suite, and a per-kernel ncu breakdown of
# qwen3-30b-a3b at T = 1. Logs under $OUT.
set -u
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
B=build-cuda
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/summary.txt"
for c in "2 1 4096 14336" "2 1 28672 4096" "8 1 2048 768" "8 1 1536 2048" "8 1 7168 2048" \
         "8 1 4096 7168" "8 16 4096 14336" "64 2 7168 2048" "2 1 4096 14336 32"; do
  timeout 60 build-lab/decode_lab $c
done > "$OUT/lab.log" 2>&1
grep -v "^naive" "$OUT/lab.log"
for v in 7 8; do
  LAB_ONLY=$v LAB_ITERS=1 timeout 90 ncu --section SpeedOfLight --section Occupancy --section WarpStateStats \
    --section LaunchStats -k regex:"sm89_gemm_kernel|sm90_decode_kernel" build-lab/decode_lab 2 1 28672 4096
done > "$OUT/ncu-lab.txt" 2>&1
grep -h "Duration\|DRAM Throughput\|Achieved Occupancy\|Registers Per\|Stall\|Warp Cycles Per Issued\|Block Limit" "$OUT/ncu-lab.txt" | head -40
( timeout 150 tests/gpu/run.sh $B tests > "$OUT/tests.log" 2>&1; echo "gpu tests rc=$?" ) | tee -a "$OUT/summary.txt"
grep -h "FAIL\|passed" "$OUT/tests.log" | head -12
for m in mixtral-8x7b qwen3-30b-a3b deepseek-v3 llama4-scout qwen3-235b-a22b; do
  echo "== $m" >> "$OUT/bench.log"
  timeout 75 $B/w4a8moe bench --device cuda --model $m --tokens 1,16,64 2>&1 | tee -a "$OUT/bench.log" | grep -v "^ok\|^device" | tail -4
done
for tool in memcheck racecheck; do
  W4A8MOE_TEST_QUICK=1 timeout 120 compute-sanitizer --tool $tool --error-exitcode 86 $B/tests-gpu/test_gpu_distinct > "$OUT/san-$tool.log" 2>&1
  echo "$tool rc=$?" | tee -a "$OUT/summary.txt"
  grep -h "SUMMARY\|Race reported\|passed" "$OUT/san-$tool.log" | sort | uniq -c | head -6
done
( PYTHONDONTWRITEBYTECODE=1 W4A8MOE_LIB=$PWD/$B/libw4a8moe.so W4A8MOE_BUILD=$PWD/$B CC=cc timeout 200 \
  /opt/torch/.venv/bin/python python/tests/run_all.py --strict python/tests/with_torch > "$OUT/torch.log" 2>&1
  echo "torch suite rc=$?" ) | tee -a "$OUT/summary.txt"
tail -5 "$OUT/torch.log"
timeout 120 ncu --print-summary per-kernel --section SpeedOfLight -k regex:"dispatch|route|gemm|decode|combine|requant|schedule" \
  $B/w4a8moe bench --device cuda --model qwen3-30b-a3b --tokens 1 --iters 3 --warmup 0 > "$OUT/ncu-qwen-t1.txt" 2>&1
echo "ncu qwen rc=$?"
