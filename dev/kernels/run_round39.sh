#!/usr/bin/env bash
# Round 39 (written 2026-12-07): the speed of light of each way of streaming a decode layer's
# weights (dev/kernels/stream_lab.cu: 16-byte loads at 1, 2, 4 blocks an SM; short blocks shaped as the
# small-batch kernel's, with and without an L2 prefetch of each block's bytes; the bulk-copy ring
# at 1 and 2 blocks an SM, 1, 4, 8 producer lanes, 4-32 KB stages), against the one-launch
# decode's ~2.2 TB/s "stream alone" (round 38), then a racecheck long enough to finish.
#   s  stream_lab at 198 MB (Mixtral T = 1), 117 (its GEMM1), 59 (its GEMM2), 21 (qwen3-30b-a3b)
#   p  bench/peers.py at T = 1, 16, 64, 256 (issue 8's table: ours, the floor, torch's grouped GEMMs)
#   r  racecheck of test_gpu_distinct, quick (the one-launch runs at 1, 2, 4 groups a stage
#      included), 330 s
# Run: bash dev/kernels/build_device_bins.sh, then run(command="bash dev/kernels/run_round39.sh spr 500",
#      carry=["build-lab/bins.tar.xz","build-lab/stream_lab"]).
set -u
PARTS=${1:-spr}
DEADLINE=${2:-420}
. "$(dirname "$0")/round_common.sh"
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
part_s() { timeout "$(lim 90)" build-lab/stream_lab 198 117 59 21 2>&1 | tee "$OUT/stream.log"; }
part_p() {
  local budget; budget=$(lim 200)
  unpack bins || return 1
  W4A8MOE_LIB=$PWD/build-cuda/libw4a8moe.so timeout $(( budget + 30 )) python3 bench/peers.py --tokens 1,16,64,256 \
    --backend cuda_sm90 --budget "$budget" --out "$OUT/peers" > "$OUT/peers.log" 2>&1
  echo "peers rc=$?"; grep -E "^\| [a-z]" "$OUT/peers.log" | head -40
}
part_r() {
  [ -x build-cuda/w4a8moe ] || unpack bins || return 1
  W4A8MOE_TEST_QUICK=1 SAN_TIMEOUT=$(lim 330) tests/gpu/run.sh build-cuda san racecheck test_gpu_distinct \
    > "$OUT/san-racecheck.log" 2>&1; echo "racecheck rc=$?"
  grep -h "RACECHECK SUMMARY\|ERROR SUMMARY\|FAIL\|exit\|passed, " "$OUT/san-racecheck.log" | tail -5
}
for (( i = 0; i < ${#PARTS}; i++ )); do part_${PARTS:i:1}; done
echo "round 39 done in $(( $(date +%s) - t_start )) s"
