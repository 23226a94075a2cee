#!/usr/bin/env bash
# Round 15: cuda_sm90's small-batch PDL prologues (kernels/sm90_mma_decode.cuh, SM90M_*; for at
# most 8 routed rows, 16 until round 15d): GEMM1 releases the requantisation first and, for at
# most 32 local experts (W4A8MOE_SM90_FIND_MAX), finds its tile from the offsets and loads its
# first two groups of weights beside the schedule kernel; GEMM2 loads its first weights beside
# the requantisation. W4A8MOE_SM90_EARLY=0 turns them off. Prediction (H100): qwen3-30b-a3b
# T = 1 from ~34.8 to ~33; llama4-scout T = 1 ~63. Config sm90f: tile finding for up to 256
# experts (its division now a shift). (Rounds 15a-c measured earlier versions: sm90-early-r15a,
# 0bf2d8f, 62bcd5a.)
# `run_round15.sh PARTS [SECONDS]`, parts in order, each step cut to the deadline:
#   c  chain lab T = 1: qwen3-30b (every config), llama4-scout (sm90 early / plain)
#   t  test_gpu_distinct (early against plain bit for bit), test_gpu_workspace
#   q  bench qwen3-30b-a3b T = 1, 16, 64 and T = 1 on one layer copy: sm90 early / plain, sm89
#   b  bench mixtral T = 1, llama4-scout T = 1, 8, 16 (as q)
#   m  memcheck on test_gpu_distinct (quick)
#   d  bench llama4-maverick, qwen3-235b-a22b, deepseek-v3 T = 1 (as q)
#   n  ncu of dispatch_decode_kernel (the prepare, ~5 us of a T = 1 step): where its time goes
set -u
PARTS=${1:-ctqbmd}
DEADLINE=${2:-560}
B=build-cuda
. "$(dirname "$0")/round_common.sh"
unpack bins || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
configs="cuda_sm90:1 cuda_sm90:0 cuda_sm89:1 cuda_sm90:f"
bench() { # model tokens [extra]
  for c in $configs; do
    e=${c##*:}; fm=32; [ "$e" = f ] && { e=1; fm=256; }
    echo "== $1 T=$2 ${c%%:*} early=${c##*:} ${3:-} ${4:-}"
    W4A8MOE_SM90_FIND_MAX=$fm W4A8MOE_SM90_EARLY=$e W4A8MOE_BACKEND=${c%%:*} timeout "$(lim 45)" $B/w4a8moe bench \
      --device cuda --model $1 --tokens $2 ${3:-} ${4:-} 2>&1 | tee -a "$OUT/bench.log" | grep -E "^ +[0-9]+ |error|FAIL"
  done
}
chain() { # model configs
  for c in $2; do
    e=${c##*:}; fm=32; [ "$e" = f ] && { e=1; fm=256; }
    echo "== chain $1 T=1 ${c%%:*} early=${c##*:}"
    W4A8MOE_SM90_FIND_MAX=$fm W4A8MOE_SM90_EARLY=$e W4A8MOE_BACKEND=${c%%:*} timeout "$(lim 40)" build-lab/chain_lab $1 1 \
      2>&1 | tee -a "$OUT/chain.log" | tail -n +2
  done
}
if has c; then
  chain qwen3-30b-a3b "$configs"
  chain llama4-scout "cuda_sm90:1 cuda_sm90:0"
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
  bench mixtral-8x7b 1
  bench llama4-scout 1,8,16
fi
if has m; then
  W4A8MOE_TEST_QUICK=1 SAN_TIMEOUT=$(lim 150) tests/gpu/run.sh $B san memcheck test_gpu_distinct \
    > "$OUT/memcheck-distinct.log" 2>&1
  echo "memcheck distinct rc=$?"; grep -h "ERROR SUMMARY\|passed, \|exit" "$OUT/memcheck-distinct.log" | head -4
fi
if has d; then
  for m in llama4-maverick qwen3-235b-a22b deepseek-v3; do bench $m 1; done
fi
if has n; then
  ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  secs="--section SpeedOfLight --section WarpStateStats --section SchedulerStats --section LaunchStats --section SourceCounters"
  W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 90)" $ncu $secs -k regex:dispatch_decode --launch-skip 2 --launch-count 1 \
    $B/w4a8moe bench --device cuda --model qwen3-30b-a3b --tokens 1 --iters 3 > "$OUT/ncu-prepare.txt" 2>&1
  echo "ncu prepare rc=$?"
  grep -E "Duration|Elapsed Cycles|Registers|Warp Cycles Per Issued|Issued Warp|No Eligible|Stall|Block Size" "$OUT/ncu-prepare.txt" | head -30
fi
echo "round15 done in $(( $(date +%s) - t_start )) s"
