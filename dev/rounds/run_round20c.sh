#!/usr/bin/env bash
# Round 20c (2026-12-07, branch sm90-rows-split, ~100 s of device time left): GEMM2's eight-way
# K split now only at most 8 routed rows. test_gpu_distinct (quick: its g = 128 shape of 4 rows
# takes the split, PDL prologues on and off) and bench llama4-scout T = 1, 16 (expected: T = 1
# as round 20b's new build, T = 16 as its split build). Build: build_device_bins.sh.
set -u
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
python3 -c "import tarfile; tarfile.open('build-lab/bins.tar.xz').extractall()" || exit 1
W4A8MOE_TEST_QUICK=1 timeout 40 build-cuda/tests-gpu/test_gpu_distinct > "$OUT/distinct.log" 2>&1
echo "distinct rc=$?"; grep -h "FAIL\|passed, \|8192" "$OUT/distinct.log" | tail -8
W4A8MOE_BACKEND=cuda_sm90 timeout 20 build-cuda/w4a8moe bench --device cuda --model llama4-scout --tokens 1,16 \
  2>&1 | grep -E "^ +[0-9]+ |error|FAIL"
