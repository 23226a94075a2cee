#!/usr/bin/env bash
# One device call: lab (fast vs precise promotion), the probes, the GPU tests on the new
# backend, and a short bench. Logs under $OUT.
set -u
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
B=build-cuda; L=build-lab
{
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv
git log -1 --format=%h 2>/dev/null
$L/tc_probe | head -3
while read -r args; do timeout 60 $L/sm90_lab $args || echo "!! sm90_lab $args: exit $?"; done <<CASES
64 4 512 1024 128 1 11
2048 8 4096 14336 128 0 1
2048 8 28672 4096 128 1 2
512 64 1536 2048 128 1 6
CASES
} 2>&1 | tee "$OUT/lab.log"
for t in test_gpu_distinct test_gpu_consistency test_gpu_large; do
  timeout 240 $B/tests-gpu/$t > "$OUT/$t.log" 2>&1; echo "$t rc=$?"; grep -v "^ok" "$OUT/$t.log" | tail -8
done
grep "^ok" "$OUT/test_gpu_distinct.log"
for m in mixtral-8x7b qwen3-30b-a3b deepseek-v3; do
  timeout 120 $B/w4a8moe bench --device cuda --model $m --tokens 1,64,1024,4096,16384 2>&1 | tee -a "$OUT/bench.log" | tail -8
done
