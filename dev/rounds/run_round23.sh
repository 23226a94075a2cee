#!/usr/bin/env bash
# Round 23 (branch prepare-tiles, written 2026-12-07, ~250 s of device time left): the
# small-batch tile list written by the prepare's decode kernel (its block 0 sums each expert's
# tiles in the offsets' scan), so cuda_sm90 runs no schedule kernel where GEMM1 does not find its
# own tile (more than 32 local experts). One binary: W4A8MOE_SM90_PREPARE_TILES=0 ("off") is
# main's path. Prediction (H100, graph µs): the schedule's step (~2.2 µs in round 21's chain)
# leaves, the prepare's block 0 adds ~0.1-0.3: T = 1, 16, 64 about −2 µs on qwen3-30b-a3b,
# deepseek-v3, qwen3-235b-a22b and llama4-maverick (128-256 experts); llama4-scout and Mixtral
# (16 and 8 experts: GEMM1 finds its tile, the schedule stays) unchanged.
#   t  test_gpu_distinct (quick: every quick shape also with =0 and =2, bit for bit)
#   b  bench T = 1, 16, 64 of the four models, off / on, twice, alternating (cuda_sm90)
#   c  chain lab T = 1 qwen3-30b-a3b, off / on
# `run_round23.sh PARTS [SECONDS]`; each step's limit is cut to what is left.
set -u
PARTS=${1:-tbc}
DEADLINE=${2:-200}
. "$(dirname "$0")/round_common.sh"
unpack bins || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader
B=build-cuda
if has t; then
  W4A8MOE_TEST_QUICK=1 timeout "$(lim 60)" $B/tests-gpu/test_gpu_distinct > "$OUT/test_gpu_distinct.log" 2>&1
  echo "distinct rc=$?"; grep -h "FAIL\|passed, " "$OUT/test_gpu_distinct.log" | tail -6
fi
if has b; then
  for m in qwen3-30b-a3b deepseek-v3 qwen3-235b-a22b llama4-maverick; do
    for v in 0 1 0 1; do
      echo "== tiles=$v $m"
      W4A8MOE_SM90_PREPARE_TILES=$v W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 30)" $B/w4a8moe bench --device cuda \
        --model $m --tokens 1,16,64 2>&1 | grep -E "^ +[0-9]+ |error|FAIL"
    done
  done
fi
if has c; then
  for v in 0 1; do
    echo "== tiles=$v qwen3-30b-a3b T=1"
    W4A8MOE_SM90_PREPARE_TILES=$v W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 30)" build-lab/chain_lab qwen3-30b-a3b 1 2>&1 \
      | tail -n +2
  done
fi
echo "round 23 done in $(( $(date +%s) - t_start )) s"
