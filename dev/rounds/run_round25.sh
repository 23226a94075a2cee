#!/usr/bin/env bash
# Round 25 (written 2026-12-07): what holds the GEMMs at 16-64 rows an expert, where we are
# slowest against the copy rate and against torch (Mixtral T = 64: 16 rows an expert on the
# two-fragment mma tiles, ~550 µs against a 240 µs floor; T = 256: 64 rows on the BN = 64 wgmma
# tiles, ~1,050 µs against torch's 559). ncu on main's build, caches flushed per kernel:
#   k  every kernel's time at Mixtral T = 64 and 256, qwen3-30b-a3b T = 256
#   s  GEMM1 and GEMM2 of Mixtral T = 64 and T = 256: speed of light, memory workload,
#      warp states, scheduler, occupancy (the limiter: issue, tensor, L2 or DRAM)
# Build: build_device_bins.sh; run(carry=["build-lab"]). `run_round25.sh PARTS [SECONDS]`.
set -u
PARTS=${1:-ks}
DEADLINE=${2:-300}
. "$(dirname "$0")/round_common.sh"
unpack bins || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
B=build-cuda
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
gemms="regex:sm90_mma_kernel|sm90s_gemm_kernel|sm90_gemm_kernel"
export W4A8MOE_BACKEND=cuda_sm90
args() { echo "$B/w4a8moe bench --device cuda --model $1 --tokens $2 --iters 1 --warmup 0 --layers 1"; }
if has k; then
  for mt in mixtral-8x7b:64 mixtral-8x7b:256 qwen3-30b-a3b:256; do
    m=${mt%%:*}; t=${mt##*:}
    timeout "$(lim 60)" $ncu --csv --metrics gpu__time_duration.sum,launch__grid_size,launch__registers_per_thread \
      -k "regex:dispatch|schedule|widen|requant|sm90_mma|sm90s_gemm|sm90_gemm_kernel" --launch-count 12 \
      $(args $m $t) \
      > "$OUT/ncu-times-$m-$t.csv" 2> "$OUT/ncu-times-$m-$t.err"
    echo "== $m T=$t rc=$?"
    grep -E '"gpu__time_duration.sum"|"launch__grid_size"|"launch__registers' "$OUT/ncu-times-$m-$t.csv" \
      | awk -F'","' '{ sub(/\(.*/, "", $5); printf "%-14s %-28s %s\n", $(NF-2), substr($5, 1, 28), $NF }' | tr -d '"' | head -30
  done
fi
if has s; then
  secs="--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats --section ComputeWorkloadAnalysis"
  for t in 64 256; do
    timeout "$(lim 150)" $ncu $secs -k "$gemms" --launch-count 2 \
      $(args mixtral-8x7b $t) > "$OUT/ncu-sections-mixtral-$t.txt" 2>&1
    echo "== sections mixtral T=$t rc=$?"
    grep -E "^  [a-z_0-9]+<|sm90_mma_kernel|sm90s_gemm|sm90_gemm_kernel|Duration|DRAM Throughput|L2 Cache Throughput|L1/TEX Cache Throughput|Compute \(SM\) Throughput|Memory Throughput|Registers Per|Achieved Occupancy|Theoretical Occupancy|No Eligible|Issued Warp Per|Warp Cycles Per Issued|Block Limit|Executed Ipc A|Grid Size|Mem Busy|Max Bandwidth|L2 Hit" \
      "$OUT/ncu-sections-mixtral-$t.txt" | cut -c1-150 | head -60
  done
fi
echo "round 25 done in $(( $(date +%s) - t_start )) s"
