#!/usr/bin/env bash
# Round 7, short form (little device time left): the GPU suite, racecheck on the distinct-expert
# test, one lab case of the periodic-promotion variants. Logs under $OUT.
set -u
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
B=build-cuda
python3 -c "import tarfile; tarfile.open('build-lab/bins.tar.xz').extractall()" || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader
( timeout 110 tests/gpu/run.sh $B tests > "$OUT/tests.log" 2>&1; echo "gpu tests rc=$?" )
grep -h "FAIL\|passed, \|^== " "$OUT/tests.log" | head -30
san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
W4A8MOE_TEST_QUICK=1 timeout 45 $san --tool racecheck --error-exitcode 86 $B/tests-gpu/test_gpu_distinct > "$OUT/san-race.log" 2>&1
echo "racecheck distinct rc=$?"; grep -h "RACECHECK SUMMARY\|passed, " "$OUT/san-race.log" | head -3
LAB_ONLY=24567 LAB_ITERS=7 timeout 25 build-lab/sm90_lab 2048 8 4096 14336 128 0 1 2>&1 | grep -v "^version"
