#!/usr/bin/env bash
# dev/rounds/run_lab.sh — one device call's worth of kernel-lab runs (binaries built here into
# build-lab/ and carried): the tensor-core accumulation probe, then the sm90 GEMM lab on the
# shapes that matter (prefill GEMM1/GEMM2 of the built-in models, odd sizes, every g).
# Logs go to $OUT/lab.log.
set -u
OUT=${OUT:-lab-out}
mkdir -p "$OUT"
L=build-lab
{
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv
$L/tc_probe
# M E N K g gated seed
while read -r args; do
    timeout 60 $L/sm90_lab $args || echo "!! sm90_lab $args: exit $?"
done <<CASES
64 4 512 1024 128 1 11
37 5 320 1056 32 0 12
100 3 1024 1536 64 1 13
2048 8 4096 14336 128 0 1
2048 8 28672 4096 128 1 2
1024 16 7168 2048 128 0 3
1024 16 4096 7168 128 1 4
512 64 2048 768 128 0 5
512 64 1536 2048 128 1 6
CASES
} 2>&1 | tee "$OUT/lab.log"
