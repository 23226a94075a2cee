#!/usr/bin/env bash
# Round 15: cuda_sm90's small-batch schedules (W4A8MOE_SM90_EARLY, cuda_sm90_experts.cu mma_layer):
#   1 GEMM1's main loop beside the schedule kernel, GEMM2's first weights beside the requantisation;
#   2 no schedule kernel (tiles found from the offsets, the amax in the requantisation), GEMM2's
#     first weights beside the requantisation;   0 as before. W4A8MOE_SM90_DEPTH=4: four groups a
#     warp in flight instead of two (configs below: backend:early:depth).
# Prediction (H100): qwen3-30b-a3b T = 1 from ~35 to ~30 us (1), ~29 (2); the chain lab
# (dev/kernels/chain_lab.c) gives each kernel's share of the graph time, before and after.
# `run_round15.sh PARTS [SECONDS]`, parts in order, each step cut to the deadline:
#   c  chain lab, T = 1: qwen3-30b (every config), mixtral and llama4-scout (sm90 1:2, 1:4, sm89)
#   t  test_gpu_distinct (the other configs against the default bit for bit), test_gpu_workspace
#   q  bench qwen3-30b-a3b T = 1, 16, 64 (and T = 1 on one layer copy), every config
#   m  memcheck on test_gpu_distinct (quick)
#   b  bench T = 1, 16, 64: mixtral, llama4-scout (as q)
#   d  bench llama4-maverick, qwen3-235b-a22b (as q)
set -u
PARTS=${1:-ctqmbd}
DEADLINE=${2:-560}
has() { case "$PARTS" in *"$1"*) return 0 ;; esac; return 1; }
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
B=build-cuda
t_start=$(date +%s)
lim() { local left=$(( DEADLINE - ($(date +%s) - t_start) )); [ "$left" -lt "$1" ] && echo $(( left > 15 ? left : 1 )) || echo "$1"; }
python3 -c "import tarfile; tarfile.open('build-lab/bins.tar.xz').extractall()" || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
configs="cuda_sm90:1:2 cuda_sm90:2:2 cuda_sm90:1:4 cuda_sm90:2:4 cuda_sm90:0:2 cuda_sm89:1:2"
bench() { # model tokens [extra]
  for c in $configs; do
    IFS=: read be early depth <<< "$c"
    echo "== $1 T=$2 $be early=$early depth=$depth ${3:-} ${4:-}"
    W4A8MOE_SM90_EARLY=$early W4A8MOE_SM90_DEPTH=$depth W4A8MOE_BACKEND=$be timeout "$(lim 45)" $B/w4a8moe bench \
      --device cuda --model $1 --tokens $2 ${3:-} ${4:-} 2>&1 | tee -a "$OUT/bench.log" | grep -E "^ +[0-9]+ |error|FAIL"
  done
}
if has c; then
  for m in qwen3-30b-a3b mixtral-8x7b llama4-scout; do
    cs=$configs; [ $m = qwen3-30b-a3b ] || cs="cuda_sm90:1:2 cuda_sm90:1:4 cuda_sm89:1:2"
    for c in $cs; do
      IFS=: read be early depth <<< "$c"
      echo "== chain $m T=1 $be early=$early depth=$depth"
      W4A8MOE_SM90_EARLY=$early W4A8MOE_SM90_DEPTH=$depth W4A8MOE_BACKEND=$be timeout "$(lim 40)" build-lab/chain_lab $m 1 \
        2>&1 | tee -a "$OUT/chain.log" | tail -n +2
    done
  done
fi
if has t; then
  timeout "$(lim 200)" $B/tests-gpu/test_gpu_distinct > "$OUT/distinct.log" 2>&1; echo "distinct rc=$?"
  grep -h "FAIL\|passed, " "$OUT/distinct.log" | tail -6
  timeout "$(lim 60)" $B/tests-gpu/test_gpu_workspace > "$OUT/workspace.log" 2>&1; echo "workspace rc=$?"
  grep -h "FAIL\|passed, " "$OUT/workspace.log" | tail -3
fi
if has q; then
  bench qwen3-30b-a3b 1,16,64
  bench qwen3-30b-a3b 1 --layers 1
fi
if has b; then
  for m in mixtral-8x7b llama4-scout; do bench $m 1,16,64; done
fi
if has m; then
  W4A8MOE_TEST_QUICK=1 SAN_TIMEOUT=$(lim 150) tests/gpu/run.sh $B san memcheck test_gpu_distinct \
    > "$OUT/memcheck-distinct.log" 2>&1
  echo "memcheck distinct rc=$?"; grep -h "ERROR SUMMARY\|passed, \|exit" "$OUT/memcheck-distinct.log" | head -4
fi
if has d; then
  for m in llama4-maverick qwen3-235b-a22b; do bench $m 1,16,64; done
fi
echo "round15 done in $(( $(date +%s) - t_start )) s"
