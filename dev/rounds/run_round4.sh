#!/usr/bin/env bash
# Round 4: the bf16 wgmma variant in the lab (accuracy + speed next to e4m3), then the GPU tests
# that compare every backend with cpu_ref on distinct experts. Logs under $OUT.
set -u
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
L=build-lab; B=build-cuda
{
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
while read -r args; do timeout 60 $L/sm90_lab $args || echo "!! sm90_lab $args: exit $?"; done <<CASES
64 4 512 1024 128 1 11
37 5 320 1056 32 0 12
100 3 1024 1536 64 1 13
2048 8 4096 14336 128 0 1
2048 8 28672 4096 128 1 2
1024 16 7168 2048 128 0 3
512 64 1536 2048 128 1 6
CASES
} 2>&1 | tee "$OUT/lab.log"
for t in test_gpu_distinct test_gpu_consistency test_gpu_large; do
  timeout 200 $B/tests-gpu/$t > "$OUT/$t.log" 2>&1; echo "$t rc=$?"; grep -h "FAIL" "$OUT/$t.log" | head -5; tail -1 "$OUT/$t.log"
done
grep -h "^ok" "$OUT/test_gpu_distinct.log" | grep sm90
