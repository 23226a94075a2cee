#!/usr/bin/env bash
# Round 17b: cuda_sm90's small-batch kernel with fewer instructions a k32 step and its inputs
# prefetched (branch sm90-mma-r17): one lop3 a nibble pair and one shift a word in the int4
# widening, the group's weight words at constant offsets from its base, the inputs two groups
# ahead into L1, the tile's end read after its first weights are asked for, no runtime g
# division. Baseline: main with sm90-group-scales (build-lab/gs.tar.xz → build-gs).
# Prediction (H100): qwen3-30b-a3b T = 1 GEMM1 ~11 → ~8 µs, the layer ~31 → ~27 µs.
#   b  bench qwen3-30b-a3b, llama4-scout, mixtral T = 1, 16, 64: build-gs, new (cuda_sm90)
#   d  bench llama4-maverick, qwen3-235b-a22b, deepseek-v3 T = 1, 16, 64 (as b)
#   c  chain lab qwen3-30b-a3b and llama4-scout T = 1 (new)
#   t  test_gpu_distinct (full), test_gpu_workspace (new)
#   n  ncu source counters of GEMM1 and GEMM2, qwen3-30b-a3b T = 1 (new)
#   m  memcheck on test_gpu_distinct (quick)
#   s  local-memory (spill) instructions in the NT = 1 kernels (cuobjdump)
# `run_round17b.sh PARTS [SECONDS]`; each step's limit is cut to what is left.
set -u
PARTS=${1:-bctnm}
DEADLINE=${2:-560}
. "$(dirname "$0")/round_common.sh"
unpack bins gs || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
B=build-cuda
pair() { # models: build-gs, then this build, T = 1, 16, 64
  for m in "$@"; do
    for b in build-gs $B; do
      echo "== $b $m"
      W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 45)" $b/w4a8moe bench --device cuda --model $m --tokens 1,16,64 \
        2>&1 | tee -a "$OUT/bench.log" | grep -E "^ +[0-9]+ |error|FAIL"
    done
  done
}
has b && pair qwen3-30b-a3b llama4-scout mixtral-8x7b
has d && pair llama4-maverick qwen3-235b-a22b deepseek-v3
if has c; then
  for m in qwen3-30b-a3b llama4-scout; do
    echo "== chain $m T=1"
    W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 40)" build-lab/chain_lab $m 1 2>&1 | tee -a "$OUT/chain.log" | tail -n +2
  done
fi
if has t; then
  timeout "$(lim 200)" $B/tests-gpu/test_gpu_distinct > "$OUT/distinct.log" 2>&1; echo "distinct rc=$?"
  grep -h "FAIL\|passed, " "$OUT/distinct.log" | tail -6
  timeout "$(lim 60)" $B/tests-gpu/test_gpu_workspace > "$OUT/workspace.log" 2>&1; echo "workspace rc=$?"
  grep -h "FAIL\|passed, " "$OUT/workspace.log" | tail -3
fi
if has n; then
  ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 120)" $ncu --section SourceCounters --section WarpStateStats \
    -k regex:sm90_mma_kernel --launch-skip 4 --launch-count 2 --page source --print-source sass --csv \
    $B/w4a8moe bench --device cuda --model qwen3-30b-a3b --tokens 1 --iters 3 2>&1 | xz -6 > "$OUT/ncu-source.csv.xz"
  echo "ncu source rc=${PIPESTATUS[0]}"
fi
if has m; then
  W4A8MOE_TEST_QUICK=1 SAN_TIMEOUT=$(lim 150) tests/gpu/run.sh $B san memcheck test_gpu_distinct \
    > "$OUT/memcheck-distinct.log" 2>&1
  echo "memcheck distinct rc=$?"; grep -h "ERROR SUMMARY\|passed, \|exit" "$OUT/memcheck-distinct.log" | head -4
fi
# s (after the rest): local-memory accesses (spills) in the NT = 1 kernels' SASS
if has s; then
  cuobjdump=$(command -v cuobjdump || echo /usr/local/cuda/bin/cuobjdump)
  $cuobjdump -sass $B/libw4a8moe.so | awk '/Function : /{name=$3; keep=($0 ~ /sm90_mma_kernelILi1E/)} keep && /STL|LDL/{n[name]++} END{for (f in n) print "spill ops", n[f], f}'
fi
echo "round 17b done in $(( $(date +%s) - t_start )) s"
