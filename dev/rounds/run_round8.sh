#!/usr/bin/env bash
# Round 8: after the stage-release fence moved into every lane and the forward's small kernels
# took programmatic dependent launch (kernels/pdl.cuh): the GPU suite, racecheck and memcheck on
# the binaries that cover the sm90 GEMMs, shared experts and chunked forwards, decode with PDL
# on and off (W4A8MOE_PDL=0), the per-kernel ncu times of qwen3-30b-a3b at T = 1, and the lab's
# periodic-promotion versions at BN = 192. Logs under $OUT.
set -u
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
B=build-cuda
python3 -c "import tarfile; tarfile.open('build-lab/bins.tar.xz').extractall()" || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
( timeout 150 tests/gpu/run.sh $B tests > "$OUT/tests.log" 2>&1; echo "gpu tests rc=$?" )
grep -h "FAIL\|passed, " "$OUT/tests.log" | tail -9
san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
for t in racecheck:distinct racecheck:shared racecheck:workspace memcheck:shared; do
  tool=${t%%:*}; bin=${t##*:}
  W4A8MOE_TEST_QUICK=1 timeout 75 $san --tool $tool --error-exitcode 86 --print-limit 4 \
    $B/tests-gpu/test_gpu_$bin > "$OUT/san-$tool-$bin.log" 2>&1
  echo "$tool $bin rc=$? $(grep -h 'SUMMARY' "$OUT/san-$tool-$bin.log") $(grep -h 'passed, ' "$OUT/san-$tool-$bin.log")"
done
grep -h "hazard detected\|Read Thread\|Write Thread" "$OUT"/san-racecheck-*.log | head -6
for m in qwen3-30b-a3b mixtral-8x7b; do
  for pdl in 0 1; do
    echo "== $m PDL=$pdl"
    W4A8MOE_PDL=$pdl timeout 40 $B/w4a8moe bench --device cuda --model $m --tokens 1,16,64 2>&1 \
      | tee -a "$OUT/bench-decode.log" | grep -v "^ok\|^device\|GB/s, TFLOP"
  done
done
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
timeout 120 $ncu --csv --metrics gpu__time_duration.sum -k "regex:dispatch|route_kernel|sm89_gemm|sm90_decode|schedule|requant|shared_gate" --launch-count 32 \
  $B/w4a8moe bench --device cuda --model qwen3-30b-a3b --tokens 1 --iters 3 --layers 1 \
  > "$OUT/ncu-qwen3-t1.csv" 2> "$OUT/ncu-qwen3-t1.err"; echo "ncu rc=$?"
for c in "2048 8 28672 4096 128 1 2"; do
  LAB_ONLY=2467 LAB_ITERS=9 timeout 40 build-lab/sm90_lab $c
done > "$OUT/lab.log" 2>&1
grep -v "^version" "$OUT/lab.log"
