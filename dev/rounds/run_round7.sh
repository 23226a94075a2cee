#!/usr/bin/env bash
# Round 7 (cuda_sm90: GEMM1 promoting, GEMM2 on the scaled kernel), most important first: the GPU
# suite (per-case lines of test_gpu_distinct kept), racecheck where it used to see the stage
# hazard, the lab's scaled kernel with a periodic f32 promotion (for GEMM1), the layer bench with
# cuda_sm90 forced, bench/peers.py, memcheck. Logs under $OUT.
set -u
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
B=build-cuda
python3 -c "import tarfile; tarfile.open('build-lab/bins.tar.xz').extractall()" || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
( timeout 150 tests/gpu/run.sh $B tests > "$OUT/tests.log" 2>&1; echo "gpu tests rc=$?" )
grep -h "FAIL\|passed, \|^== " "$OUT/tests.log" | head -30
timeout 40 $B/tests-gpu/test_gpu_distinct > "$OUT/distinct.log" 2>&1
grep -h "sm90" "$OUT/distinct.log" | head -16
san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
W4A8MOE_TEST_QUICK=1 timeout 60 $san --tool racecheck --error-exitcode 86 $B/tests-gpu/test_gpu_distinct > "$OUT/san-race.log" 2>&1
echo "racecheck distinct rc=$?"; grep -h "RACECHECK SUMMARY\|passed, " "$OUT/san-race.log" | head -3
for c in "2048 8 28672 4096 128 1 2" "2048 8 4096 14336 128 0 1"; do
  LAB_ONLY=24567 timeout 30 build-lab/sm90_lab $c
done > "$OUT/lab.log" 2>&1
grep -v "^version" "$OUT/lab.log"
for m in mixtral-8x7b deepseek-v3 llama4-scout qwen3-235b-a22b; do
  W4A8MOE_BACKEND=cuda_sm90 timeout 30 $B/w4a8moe bench --device cuda --model $m --tokens 256,4096,16384 2>&1 | tee -a "$OUT/bench.log" | grep -v "^ok\|^device" | tail -5
done
W4A8MOE_LIB=$B/libw4a8moe.so PYTHONPATH=python timeout 100 /opt/torch/.venv/bin/python bench/peers.py \
  --models mixtral-8x7b --tokens 4096,16384 --backend cuda_sm90 --contenders ours,fp8 \
  --budget 80 --out "$OUT/peers" > "$OUT/peers.log" 2>&1; echo "peers rc=$?"
tail -8 "$OUT/peers.log"
W4A8MOE_TEST_QUICK=1 timeout 60 $san --tool memcheck --error-exitcode 86 $B/tests-gpu/test_gpu_distinct > "$OUT/san-mem.log" 2>&1
echo "memcheck distinct rc=$?"; grep -h "ERROR SUMMARY\|passed, " "$OUT/san-mem.log" | head -3
# the tile table, measured (src/cuda/configs/sm90_tiles.h)
timeout 150 python3 dev/kernels/tune_sm90_tiles.py --out "$OUT/tiles.txt" > /dev/null 2>&1; echo "tune rc=$?"
cat "$OUT/tiles.txt" 2>/dev/null | grep "table\|gemm"
