#!/usr/bin/env bash
# Round 9: cuda_sm90's small-batch mma.sync kernel (kernels/sm90_mma_decode.cuh), the
# promoting kernel's per-thread stage release, and the one-launch decode prepare
# (dispatch_decode_kernel). Most important first: test_gpu_distinct (both
# cuda_sm90 paths), racecheck on it, the rest of the suite, decode/small-batch timing of
# cuda_sm90 forced against the oracle's cuda_sm89 on the same card, memcheck. Logs under $OUT.
set -u
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
B=build-cuda
t_start=$(date +%s)
python3 -c "import tarfile; tarfile.open('build-lab/bins.tar.xz').extractall()" || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 60 $B/tests-gpu/test_gpu_distinct > "$OUT/distinct.log" 2>&1; echo "distinct rc=$?"
grep -h "sm90\|FAIL\|passed, " "$OUT/distinct.log" | head -24
san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
W4A8MOE_TEST_QUICK=1 timeout 70 $san --tool racecheck --error-exitcode 86 --print-limit 4 \
  $B/tests-gpu/test_gpu_distinct > "$OUT/san-race.log" 2>&1
echo "racecheck distinct rc=$? $(grep -h 'SUMMARY' "$OUT/san-race.log")"; grep -m3 "Race reported\|hazard detected" "$OUT/san-race.log"
# cuda_sm89 without/with the one-launch prepare; cuda_sm90 (small-batch path) with the schedule
# kernel (the first form) and finding its own tiles (the default)
for m in qwen3-30b-a3b mixtral-8x7b; do
  for cfg in "cuda_sm89 W4A8MOE_DECODE_PREPARE=0" "cuda_sm89 W4A8MOE_DECODE_PREPARE=1" \
             "cuda_sm90 W4A8MOE_SM90_MMA_SCHEDULE=1" "cuda_sm90 W4A8MOE_SM90_MMA_SCHEDULE=0"; do
    echo "== $m $cfg"
    env W4A8MOE_BACKEND=$cfg timeout 30 $B/w4a8moe bench --device cuda \
      --model $m --tokens 1,16,64,256 2>&1 | tee -a "$OUT/bench.log" | grep -v "^ok\|^device\|GB/s, TFLOP"
  done
done
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
W4A8MOE_BACKEND=cuda_sm90 timeout 90 $ncu --csv --metrics gpu__time_duration.sum -k "regex:dispatch|route_kernel|sm89_gemm|sm90_mma|schedule|requant|combine" \
  --launch-count 24 $B/w4a8moe bench --device cuda --model qwen3-30b-a3b --tokens 1 --iters 3 --layers 1 \
  > "$OUT/ncu-qwen3-t1.csv" 2> "$OUT/ncu-qwen3-t1.err"; echo "ncu rc=$?"
# the converter-warpgroup lab versions (a, b) against the promoting (2) and scaled (4) kernels
LAB_ONLY=24ab LAB_ITERS=9 timeout 40 build-lab/sm90_lab 2048 8 28672 4096 128 1 2 > "$OUT/lab.log" 2>&1
echo "lab rc=$?"; grep -v "^version" "$OUT/lab.log"
( timeout 100 tests/gpu/run.sh $B tests > "$OUT/tests.log" 2>&1; echo "gpu tests rc=$?" )
grep -h "FAIL\|passed, " "$OUT/tests.log" | tail -9
W4A8MOE_TEST_QUICK=1 timeout 45 $san --tool memcheck --error-exitcode 86 $B/tests-gpu/test_gpu_distinct > "$OUT/san-mem.log" 2>&1
echo "memcheck distinct rc=$? $(grep -h 'SUMMARY' "$OUT/san-mem.log")"
# the time left: racecheck on the other GPU test binaries (issue 9), as run_round10.sh
for spec in test_gpu_routing:60 test_gpu_device:40 test_gpu_workspace:150 test_gpu_shared:150 \
            test_gpu_consistency:150 test_gpu_large:90; do
  name=${spec%%:*}; lim=${spec##*:}
  left=$(( 560 - ($(date +%s) - t_start) )); [ "$left" -lt "$lim" ] && lim=$left
  [ "$lim" -lt 20 ] && { echo "== racecheck $name: no time left"; continue; }
  SAN_TIMEOUT=$lim tests/gpu/run.sh $B san racecheck "$name" > "$OUT/race-$name.log" 2>&1
  echo "== racecheck $name rc=$? (limit $lim s)"; grep -h "exit\|SUMMARY\|hazard\|Race\|passed, " "$OUT/race-$name.log" | head -6
done
