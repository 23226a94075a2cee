#!/usr/bin/env bash
# Decode round 2 (one device call): the decode lab with the bulk-copy kernel
# (src/cuda/kernels/sm90_decode_gemm.cuh) and ncu of its gated form against sm89's, every GPU test
# binary (shared experts and shared workspaces included), the whole layer at decode sizes, the
# sanitizers on the distinct-expert and shared-expert tests, the torch suite, and a per-kernel
# ncu breakdown of qwen3-30b-a3b at T = 1. Binaries come in build-lab/bins.tar.xz (xz packs
# the ~70 MB of statically linked binaries, which share their device code, into ~2 MB).
# Logs under $OUT.
set -u
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
B=build-cuda
python3 -c "import tarfile; tarfile.open('build-lab/bins.tar.xz').extractall()" || exit 1
PY=$(test -x /opt/torch/.venv/bin/python && echo /opt/torch/.venv/bin/python || echo python3)
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/summary.txt"
for c in "2 1 4096 14336" "2 1 28672 4096" "8 1 2048 768" "8 1 1536 2048" "8 1 7168 2048" \
         "8 1 4096 7168" "8 16 4096 14336" "64 2 7168 2048" "2 1 4096 14336 32"; do
  timeout 60 build-lab/decode_lab $c
done > "$OUT/lab.log" 2>&1
grep -v "^naive" "$OUT/lab.log" | grep -v "^version"
for v in 7 8; do
  LAB_ONLY=$v LAB_ITERS=1 timeout 90 ncu --section SpeedOfLight --section Occupancy --section WarpStateStats \
    --section LaunchStats -k regex:"sm89_gemm_kernel|sm90_decode_kernel" build-lab/decode_lab 2 1 28672 4096
done > "$OUT/ncu-lab.txt" 2>&1
grep -h "Duration\|DRAM Throughput\|Achieved Occupancy\|Registers Per\|Warp Cycles Per Issued\|Block Limit [RS]" "$OUT/ncu-lab.txt" | head -24
( timeout 240 tests/gpu/run.sh $B tests > "$OUT/tests.log" 2>&1; echo "gpu tests rc=$?" ) | tee -a "$OUT/summary.txt"
grep -h "FAIL\|passed\|^not ok\|SKIP" "$OUT/tests.log" | head -20
for m in mixtral-8x7b qwen3-30b-a3b deepseek-v3 llama4-scout qwen3-235b-a22b; do
  echo "== $m" >> "$OUT/bench.log"
  timeout 60 $B/w4a8moe bench --device cuda --model $m --tokens 1,16,64 2>&1 | tee -a "$OUT/bench.log" | grep -v "^ok\|^device" | tail -4
done
for t in test_gpu_distinct test_gpu_shared; do
  for tool in memcheck racecheck; do
    W4A8MOE_TEST_QUICK=1 timeout 100 compute-sanitizer --tool $tool --error-exitcode 86 $B/tests-gpu/$t > "$OUT/san-$tool-$t.log" 2>&1
    echo "$t $tool rc=$?" | tee -a "$OUT/summary.txt"
    grep -h "SUMMARY\|Race reported\|passed" "$OUT/san-$tool-$t.log" | sort | uniq -c | head -4
  done
done
( PYTHONDONTWRITEBYTECODE=1 W4A8MOE_LIB=$PWD/$B/libw4a8moe.so W4A8MOE_BUILD=$PWD/$B CC=cc timeout 150 \
  $PY python/tests/run_all.py --strict python/tests/with_torch > "$OUT/torch.log" 2>&1
  echo "torch suite ($PY) rc=$?" ) | tee -a "$OUT/summary.txt"
tail -6 "$OUT/torch.log"
timeout 100 ncu --print-summary per-kernel --section SpeedOfLight -k regex:"dispatch|route|gemm|decode|combine|requant|schedule" \
  $B/w4a8moe bench --device cuda --model qwen3-30b-a3b --tokens 1 --iters 3 --warmup 0 > "$OUT/ncu-qwen-t1.txt" 2>&1
echo "ncu qwen rc=$?"
