#!/usr/bin/env bash
# Round 3 on the device: the GPU suite (tests + compute-sanitizer) over build-cuda, verify on
# CUDA and the checkpoint CLI on CUDA. Logs under $OUT.
set -u
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
B=build-cuda
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
( timeout 300 tests/gpu/run.sh $B tests > "$OUT/tests.log" 2>&1; echo "gpu tests rc=$?" ) | tee "$OUT/summary.txt"
grep -h "FAIL\|passed\|SKIP" "$OUT/tests.log" | head -30
gq=tests/data/golden-qwen3-tiny
{
timeout 120 $B/w4a8moe verify --device cuda 2>&1 | tail -4
timeout 60 $B/w4a8moe run $gq --layer 1 --input $gq/input.safetensors --output /tmp/o.safetensors --device cuda 2>&1 | tail -3; echo "run rc=$?"
timeout 60 $B/w4a8moe verify --checkpoint $gq --layer 1 --device cuda 2>&1 | tail -6
timeout 60 $B/w4a8moe bench --checkpoint $gq --layer 1 --device cuda --tokens 1,16,64 2>&1 | tail -6
timeout 120 tests/cli/run.sh $B/w4a8moe 2>&1 | tail -4
} 2>&1 | tee "$OUT/cli.log"
( SAN_TIMEOUT=150 timeout 330 tests/gpu/run.sh $B san > "$OUT/san.log" 2>&1; echo "sanitizers rc=$?" ) | tee -a "$OUT/summary.txt"
grep -h "compute-sanitizer\|exit\|ERROR SUMMARY\|RACECHECK SUMMARY\|!!" "$OUT/san.log" | head -30
