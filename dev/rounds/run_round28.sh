#!/usr/bin/env bash
# Round 28 (branch sm90-two-ctas, written 2026-12-07, not run yet): the BN = 64 wgmma kernels
# (17-64 rows an expert) two CTAs an SM: rings of 9 (promoting) and 8 (scaled) stages, at most
# 113 KB each, 80 registers a thread at launch, the producer's 32 and the consumers' 104 after
# setmaxnreg (ptxas: no spills). Round 25/27's ncu at Mixtral T = 256: one CTA an SM, tensor
# pipe 30 % busy, DRAM 20 %, stalls spread over fixed-latency chains, loads and polls — more
# warps an SM to hide them. Same sums: same bits. Prediction (H100): GEMM1 and GEMM2 at those
# points 1.3-1.6x faster (Mixtral T = 256 ~1,200 -> ~850 µs); BN = 128 unchanged.
# Build here: build_device_bins.sh on the branch; main's w4a8moe (the branch's base) as
# build-lab/base.tar.xz (build-base/w4a8moe).
#   t  test_gpu_distinct (full), test_gpu_consistency, test_gpu_workspace and test_gpu_large
#      (quick); memcheck and racecheck on test_gpu_distinct (quick)
#   b  bench base / new, twice: Mixtral T = 128, 256, 1024 (BN = 128, the control);
#      qwen3-30b-a3b and qwen3-235b-a22b T = 512; llama4-scout T = 512; deepseek-v3 T = 1024
#   n  ncu at Mixtral T = 256: the two GEMMs' time, tensor pipe, occupancy, DRAM
# `run_round28.sh PARTS [SECONDS]`.
set -u
PARTS=${1:-tbn}
DEADLINE=${2:-560}
. "$(dirname "$0")/round_common.sh"
unpack bins base || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader
B=build-cuda
if has t; then
  timeout "$(lim 150)" $B/tests-gpu/test_gpu_distinct > "$OUT/test_gpu_distinct.log" 2>&1; echo "distinct rc=$?"
  grep -h "FAIL\|passed, " "$OUT/test_gpu_distinct.log" | tail -4
  for t in test_gpu_consistency test_gpu_workspace test_gpu_large; do
    W4A8MOE_TEST_QUICK=1 timeout "$(lim 90)" $B/tests-gpu/$t > "$OUT/$t.log" 2>&1; echo "$t rc=$?"
    grep -h "FAIL\|passed, " "$OUT/$t.log" | tail -4
  done
fi
if has b; then
  for mt in mixtral-8x7b:128,256,1024 qwen3-30b-a3b:512 qwen3-235b-a22b:512 llama4-scout:512 deepseek-v3:1024; do
    m=${mt%%:*}; t=${mt##*:}
    for bin in build-base $B build-base $B; do
      echo "== $bin $m"
      W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 40)" $bin/w4a8moe bench --device cuda --model $m --tokens $t \
        2>&1 | grep -E "^ +[0-9]+ |error|FAIL"
    done
  done 2>&1 | tee "$OUT/bench.log"
fi
if has n; then
  ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  for bin in build-base $B; do
    W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 90)" $ncu --csv --metrics \
      gpu__time_duration.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__warps_active.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed \
      -k "regex:sm90_gemm_kernel|sm90s_gemm_kernel" --launch-count 2 \
      $bin/w4a8moe bench --device cuda --model mixtral-8x7b --tokens 256 --iters 1 --warmup 0 --layers 1 \
      > "$OUT/ncu-$bin.csv" 2>&1; echo "== ncu $bin rc=$?"
    grep -E '"(gpu__time|sm__pipe|sm__warps|dram__)' "$OUT/ncu-$bin.csv" \
      | awk -F'","' '{ printf "%-34s %-60s %s\n", substr($5, 1, 34), $(NF-2), $NF }' | tr -d '"'
  done
fi
if has t; then
  for tool in memcheck racecheck; do
    W4A8MOE_TEST_QUICK=1 SAN_TIMEOUT=$(lim 120) tests/gpu/run.sh $B san $tool test_gpu_distinct \
      > "$OUT/$tool.log" 2>&1; echo "$tool rc=$?"; grep -h "ERROR SUMMARY\|RACECHECK SUMMARY" "$OUT/$tool.log"
  done
fi
echo "round 28 done in $(( $(date +%s) - t_start )) s"
