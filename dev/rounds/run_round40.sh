#!/usr/bin/env bash
# Round 40 (written 2026-12-08, after round 39b): what the next levers at T = 1 need, and the
# one-launch path's racecheck after its fence.
#   r  racecheck of test_gpu_distinct, quick, one token only (W4A8MOE_TEST_MAX_T=1: ~200 s on an
#      H100 in round 39b, which found 6 hazards in the opt-in one-launch path, W4A8MOE_SM90_FUSED=1,
#      a bulk copy refilling a stage against ld.shared reads with no fence.proxy.async between;
#      7e92c9b adds it). Prediction: 0 hazards
#   s  the SASS of the default T = 1 kernels (cuobjdump, no GPU time): GEMM1 (FIND_IDS | PRE_W |
#      STAGE | PRE_ROWS, g = 128), GEMM2 in quarters and in eighths (PRE_W | STAGE, f16 rows,
#      scaled), for counting the instructions of a k32 step — round 39's stream lab says the
#      small-batch GEMMs' reads stream at the copy rate, so their ~2.4 TB/s is their chain
#   k  ncu of every kernel of one T = 1 layer with today's defaults, four models (round 35's
#      table after: the quant-first kernel, the prepare, GEMM1, requant, GEMM2, combine)
# Run: bash dev/rounds/build_device_bins.sh, then run(command="bash dev/rounds/run_round40.sh rsk 560",
#      carry=["build-lab/bins.tar.xz"]).
set -u
PARTS=${1:-rsk}
DEADLINE=${2:-560}
. "$(dirname "$0")/round_common.sh"
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
B=build-cuda
part_r() {
  [ -x $B/w4a8moe ] || unpack bins || return 1
  W4A8MOE_TEST_MAX_T=1 W4A8MOE_TEST_QUICK=1 SAN_TIMEOUT=$(lim 280) tests/gpu/run.sh $B san racecheck \
    test_gpu_distinct > "$OUT/san-racecheck-t1.log" 2>&1; echo "racecheck (T = 1) rc=$?"
  grep -h "RACECHECK SUMMARY\|Race reported\|FAIL\|exit\|passed, " "$OUT/san-racecheck-t1.log" | head -8
}
part_s() {
  [ -x $B/w4a8moe ] || unpack bins || return 1
  local name k
  for name in gemm1:_Z15sm90_mma_kernelILi1ELi4ELi4ELb1ELb0ELb0ELi106EEv14sm90_gemm_argsPKvi9sm90m_ids \
              gemm2-quarters:_Z15sm90_mma_kernelILi1ELi4ELi4ELb0ELb1ELb1ELi34EEv14sm90_gemm_argsPKvi9sm90m_ids \
              gemm2-eighths:_Z15sm90_mma_kernelILi1ELi8ELi4ELb0ELb1ELb1ELi34EEv14sm90_gemm_argsPKvi9sm90m_ids; do
    k=${name#*:}; name=${name%%:*}
    timeout "$(lim 40)" cuobjdump -sass -fun "$k" $B/libw4a8moe.so > "$OUT/sass-$name.txt" 2>&1
    echo "sass $name: $(grep -c '/\*[0-9a-f]*\*/' "$OUT/sass-$name.txt") instructions"
  done
}
part_k() {
  [ -x $B/w4a8moe ] || unpack bins || return 1
  local ncu m
  ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  for m in qwen3-30b-a3b mixtral-8x7b llama4-scout deepseek-v3; do
    W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 50)" $ncu --csv \
      --metrics gpu__time_duration.sum,launch__grid_size,launch__registers_per_thread \
      -k "regex:dispatch|schedule|requant|combine|sm90_mma" --launch-count 10 \
      $B/w4a8moe bench --device cuda --model $m --tokens 1 --iters 1 --warmup 0 --layers 1 \
      > "$OUT/ncu-t1-$m.csv" 2> "$OUT/ncu-t1-$m.err"
    echo "== $m T=1 rc=$?"
    grep -E '"gpu__time_duration.sum"|"launch__grid_size"|"launch__registers' "$OUT/ncu-t1-$m.csv" |
      awk -F'","' '{ sub(/\(.*/, "", $5); printf "%-14s %-40s %s\n", $(NF-2), substr($5, 1, 40), $NF }' |
      tr -d '"' | head -40
  done
}
for (( i = 0; i < ${#PARTS}; i++ )); do part_${PARTS:i:1}; done
echo "round 40 done in $(( $(date +%s) - t_start )) s"
