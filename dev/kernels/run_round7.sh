#!/usr/bin/env bash
# Round 7 (cuda_sm90: GEMM1 promoting, GEMM2 on the scaled kernel): the GPU suite (per-case lines
# of test_gpu_distinct kept), sanitizers on the distinct-expert test, the layer bench with
# cuda_sm90 forced, and bench/peers.py against torch's FP8 grouped GEMMs. Logs under $OUT.
set -u
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
B=build-cuda
python3 -c "import tarfile; tarfile.open('build-lab/bins.tar.xz').extractall()" || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
( timeout 240 tests/gpu/run.sh $B tests > "$OUT/tests.log" 2>&1; echo "gpu tests rc=$?" )
grep -h "FAIL\|passed, \|^== " "$OUT/tests.log" | head -30
timeout 60 $B/tests-gpu/test_gpu_distinct > "$OUT/distinct-sm90.log" 2>&1
grep -h "sm90" "$OUT/distinct-sm90.log" | head -30
for m in mixtral-8x7b deepseek-v3 qwen3-235b-a22b llama4-scout; do
  W4A8MOE_BACKEND=cuda_sm90 timeout 45 $B/w4a8moe bench --device cuda --model $m --tokens 256,1024,4096,16384 2>&1 | tee -a "$OUT/bench.log" | grep -v "^ok\|^device" | tail -6
done
W4A8MOE_LIB=$B/libw4a8moe.so PYTHONPATH=python timeout 175 /opt/torch/.venv/bin/python bench/peers.py \
  --models mixtral-8x7b,deepseek-v3 --tokens 256,4096,16384 --backend cuda_sm90 --contenders ours,fp8 \
  --budget 150 --out "$OUT/peers" > "$OUT/peers.log" 2>&1; echo "peers rc=$?"
tail -12 "$OUT/peers.log"
san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
for tool in memcheck racecheck; do
  W4A8MOE_TEST_QUICK=1 timeout 90 $san --tool $tool --error-exitcode 86 $B/tests-gpu/test_gpu_distinct > "$OUT/san-$tool.log" 2>&1
  echo "$tool distinct rc=$?"; grep -h "ERROR SUMMARY\|RACECHECK SUMMARY\|hazard" "$OUT/san-$tool.log" | head -4
done
