#!/usr/bin/env bash
# Round 17: where the small-batch kernel's instructions go, and GEMM2's scales once a group.
#   s  SASS of every sm90_mma_kernel instance (cuobjdump; none here) and ncu's per-instruction
#      source counters of GEMM1 and GEMM2 at qwen3-30b-a3b T = 1 (cuda_sm90)
#   g  branch sm90-group-scales (build-lab/gs.tar.xz, unpacked to build-gs) against main:
#      bench qwen3-30b-a3b T = 1 three times each, alternating, llama4-scout and mixtral T = 1;
#      test_gpu_distinct (quick) on the branch. Prediction: GEMM2 ~6.6 -> ~6.0 us, bits equal.
# `run_round17.sh PARTS [SECONDS]`; each step's limit is cut to what is left.
set -u
PARTS=${1:-sg}
DEADLINE=${2:-560}
. "$(dirname "$0")/round_common.sh"
unpack bins || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
if has s; then
  cuobjdump=$(command -v cuobjdump || echo /usr/local/cuda/bin/cuobjdump)
  timeout "$(lim 90)" $cuobjdump -sass build-cuda/libw4a8moe.so 2>&1 \
    | awk '/Function : /{keep = ($0 ~ /sm90_mma_kernel/)} keep' | xz -6 > "$OUT/mma.sass.xz"
  echo "sass: $(xz -dc "$OUT/mma.sass.xz" | grep -c 'Function : ') functions"
  ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 120)" $ncu --section SourceCounters --section WarpStateStats \
    -k regex:sm90_mma_kernel --launch-skip 4 --launch-count 2 --page source --print-source sass --csv \
    build-cuda/w4a8moe bench --device cuda --model qwen3-30b-a3b --tokens 1 --iters 3 2>&1 | xz -6 > "$OUT/ncu-source.csv.xz"
  echo "ncu source rc=${PIPESTATUS[0]} lines=$(xz -dc "$OUT/ncu-source.csv.xz" | wc -l)"
  xz -dc "$OUT/ncu-source.csv.xz" | head -5 | cut -c1-300
fi
if has g; then
  python3 -c "import tarfile; tarfile.open('build-lab/gs.tar.xz').extractall()" || exit 1
  for i in 1 2 3; do
    for b in build-cuda build-gs; do
      echo "== $b qwen3-30b-a3b T=1 #$i"
      W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 40)" $b/w4a8moe bench --device cuda --model qwen3-30b-a3b --tokens 1 \
        2>&1 | tee -a "$OUT/bench.log" | grep -E "^ +[0-9]+ |error|FAIL"
    done
  done
  for m in llama4-scout mixtral-8x7b; do
    for b in build-cuda build-gs; do
      echo "== $b $m T=1"
      W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 40)" $b/w4a8moe bench --device cuda --model $m --tokens 1 \
        2>&1 | tee -a "$OUT/bench.log" | grep -E "^ +[0-9]+ |error|FAIL"
    done
  done
  W4A8MOE_TEST_QUICK=1 timeout "$(lim 150)" build-gs/tests-gpu/test_gpu_distinct > "$OUT/distinct-gs.log" 2>&1
  echo "distinct (gs, quick) rc=$?"; grep -h "FAIL\|passed, " "$OUT/distinct-gs.log" | tail -4
fi
echo "round 17 done in $(( $(date +%s) - t_start )) s"
