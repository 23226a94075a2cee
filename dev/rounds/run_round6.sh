#!/usr/bin/env bash
# Round 6 (cuda_sm90, the scaled kernel): the lab's five versions on the round-4 shapes, the GPU
# suite with the new backend, cuda_sm90 forced at prefill sizes, then decode round 4's lab.
# Needs build-lab/{sm90_lab,decode_lab,bins.tar.xz}. Logs under $OUT.
set -u
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
L=build-lab; B=build-cuda
python3 -c "import tarfile; tarfile.open('$L/bins.tar.xz').extractall()" || exit 1
{
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,driver_version --format=csv,noheader
while read -r args; do timeout 60 $L/sm90_lab $args || echo "!! sm90_lab $args: exit $?"; done <<CASES
64 4 512 1024 128 1 11
37 5 320 1056 32 0 12
100 3 1024 1536 64 1 13
2048 8 4096 14336 128 0 1
2048 8 28672 4096 128 1 2
1024 16 7168 2048 128 0 3
512 64 1536 2048 128 1 6
256 32 4096 2048 128 1 7
CASES
} > "$OUT/lab.log" 2>&1
grep -v "^version" "$OUT/lab.log"
( timeout 280 tests/gpu/run.sh $B tests > "$OUT/tests.log" 2>&1; echo "gpu tests rc=$?" )
grep -h "FAIL\|passed\|^== \|!!" "$OUT/tests.log" | head -30
for m in mixtral-8x7b deepseek-v3 qwen3-235b-a22b llama4-scout; do
  W4A8MOE_BACKEND=cuda_sm90 timeout 45 $B/w4a8moe bench --device cuda --model $m --tokens 256,1024,4096,16384 2>&1 | tee -a "$OUT/bench.log" | grep -v "^ok\|^device" | tail -6
done
for c in "2 1 4096 14336" "2 1 28672 4096" "8 1 7168 2048" "8 16 4096 14336"; do
  timeout 30 $L/decode_lab $c
done > "$OUT/decode.log" 2>&1
grep -v "^naive\|^version\|^ring" "$OUT/decode.log"
# the independent goldens on CUDA (issue 9), on the oracle's backend and cuda_sm90 forced
for c in indep-llama4-tiny indep-sglang-w4afp8-tiny golden-deepseek-tiny golden-qwen3-tiny gpu-row-mixtral-h1024; do
  for be in "" cuda_sm90; do
    W4A8MOE_BACKEND=$be timeout 30 $B/w4a8moe verify --checkpoint tests/data/$c --layer 1 --device cuda 2>&1 | tail -1 | sed "s/^/$c ${be:-auto}: /"
  done
done
