#!/usr/bin/env bash
# Round 9: cuda_sm90's small-batch mma.sync path (kernels/sm90_mma_decode.cuh, no schedule
# kernel), the one-launch decode prepare (dispatch_decode_kernel), the promoting kernel's
# per-thread stage release, and GEMM1 on the converter kernel (kernels/sm90_convert_gemm.cuh,
# W4A8MOE_SM90_CONVERT=1). Most important first; every step's time limit is cut to what is left
# of 575 s, so the call ends inside its 600. Logs under $OUT. Ran once, at 9468834 (H100;
# docs/PERFORMANCE.md "Round 9, measured"); the two switches it names (W4A8MOE_SM90_MMA_SCHEDULE,
# W4A8MOE_SM90_CONVERT) went with the forms they chose between, so this is its record.
set -u
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
B=build-cuda
t_start=$(date +%s)
# lim N: N seconds, or what is left before the deadline if less (1: the step is all but skipped; timeout 0 would mean none)
lim() { local left=$(( 575 - ($(date +%s) - t_start) )); [ "$left" -lt "$1" ] && echo $(( left > 15 ? left : 1 )) || echo "$1"; }
python3 -c "import tarfile; tarfile.open('build-lab/bins.tar.xz').extractall()" || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader
san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)

# 1. correctness of both cuda_sm90 paths (and cuda_sm89) on distinct experts
timeout 60 $B/tests-gpu/test_gpu_distinct > "$OUT/distinct.log" 2>&1; echo "distinct rc=$?"
grep -h "sm90\|FAIL\|passed, " "$OUT/distinct.log" | head -24

# 2. decode: cuda_sm89 without/with the one-launch prepare; cuda_sm90's small-batch path with
#    the schedule kernel (its first form) and finding its own tiles (the default)
for m in qwen3-30b-a3b mixtral-8x7b; do
  for cfg in "cuda_sm89 W4A8MOE_DECODE_PREPARE=0" "cuda_sm89 W4A8MOE_DECODE_PREPARE=1" \
             "cuda_sm90 W4A8MOE_SM90_MMA_SCHEDULE=1" "cuda_sm90 W4A8MOE_SM90_MMA_SCHEDULE=0"; do
    echo "== $m $cfg"
    env W4A8MOE_BACKEND=$cfg timeout "$(lim 30)" $B/w4a8moe bench --device cuda \
      --model $m --tokens 1,16,64,256 2>&1 | tee -a "$OUT/bench.log" | grep -v "^ok\|^device\|GB/s, TFLOP"
  done
done

# 3. the converter kernel: lab (a, b against the promoting 2 and scaled 4), the library with it
LAB_ONLY=24ab LAB_ITERS=9 timeout "$(lim 40)" build-lab/sm90_lab 2048 8 28672 4096 128 1 2 > "$OUT/lab.log" 2>&1
echo "lab rc=$?"; grep -v "^version" "$OUT/lab.log"
W4A8MOE_SM90_CONVERT=1 timeout "$(lim 60)" $B/tests-gpu/test_gpu_distinct > "$OUT/distinct-convert.log" 2>&1
echo "distinct convert rc=$?"; grep -h "sm90\|FAIL\|passed, " "$OUT/distinct-convert.log" | tail -6
for m in mixtral-8x7b deepseek-v3; do
  for cv in 0 1; do
    echo "== $m cuda_sm90 convert $cv"
    W4A8MOE_SM90_CONVERT=$cv W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 40)" $B/w4a8moe bench --device cuda \
      --model $m --tokens 1024,4096,16384 2>&1 | tee -a "$OUT/bench-convert.log" | grep -v "^ok\|^device\|GB/s, TFLOP"
  done
done

# 4. the whole GPU suite, racecheck and memcheck on the distinct test
( timeout "$(lim 110)" tests/gpu/run.sh $B tests > "$OUT/tests.log" 2>&1; echo "gpu tests rc=$?" )
grep -h "FAIL\|passed, " "$OUT/tests.log" | tail -9
W4A8MOE_TEST_QUICK=1 timeout "$(lim 80)" $san --tool racecheck --error-exitcode 86 --print-limit 4 \
  $B/tests-gpu/test_gpu_distinct > "$OUT/san-race.log" 2>&1
echo "racecheck distinct rc=$? $(grep -h 'SUMMARY' "$OUT/san-race.log")"; grep -m3 "Race reported\|hazard detected" "$OUT/san-race.log"

# 5. per-kernel times of cuda_sm90 at qwen3-30b T = 1
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 60)" $ncu --csv --metrics gpu__time_duration.sum \
  -k "regex:dispatch|route_kernel|sm89_gemm|sm90_mma|schedule|requant|combine" \
  --launch-count 24 $B/w4a8moe bench --device cuda --model qwen3-30b-a3b --tokens 1 --iters 3 --layers 1 \
  > "$OUT/ncu-qwen3-t1.csv" 2> "$OUT/ncu-qwen3-t1.err"; echo "ncu rc=$?"
W4A8MOE_TEST_QUICK=1 timeout "$(lim 45)" $san --tool memcheck --error-exitcode 86 $B/tests-gpu/test_gpu_distinct > "$OUT/san-mem.log" 2>&1
echo "memcheck distinct rc=$? $(grep -h 'SUMMARY' "$OUT/san-mem.log")"

# 6. the time left: racecheck on the other GPU test binaries (issue 9), as run_round10.sh
for spec in test_gpu_routing:60 test_gpu_device:40 test_gpu_workspace:150 test_gpu_shared:150 \
            test_gpu_consistency:150 test_gpu_large:90; do
  name=${spec%%:*}; l=$(lim "${spec##*:}")
  [ "$l" -lt 20 ] && { echo "== racecheck $name: no time left"; continue; }
  SAN_TIMEOUT=$l tests/gpu/run.sh $B san racecheck "$name" > "$OUT/race-$name.log" 2>&1
  echo "== racecheck $name rc=$? (limit $l s)"; grep -h "exit\|SUMMARY\|hazard\|Race\|passed, " "$OUT/race-$name.log" | head -6
done
echo "round 9 done at $(( $(date +%s) - t_start )) s"
