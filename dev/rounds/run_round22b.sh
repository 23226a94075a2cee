#!/usr/bin/env bash
# Round 22b (written 2026-12-07, not run yet: the session's device time went to round 23): on
# main's build, the side-by-side with PyTorch (bench/peers.py at T = 1, 16, 64, 256; not run
# since round 17) — issue 8's "faster than torch._scaled_grouped_mm at every T <= 256" — then
# test_gpu_large, test_gpu_device and test_gpu_fused (where built), with what time is left.
# Build: build_device_bins.sh; run(carry=["build-lab"]).
# `run_round22b.sh [SECONDS]`.
set -u
PARTS=
DEADLINE=${1:-560}
. "$(dirname "$0")/round_common.sh"
unpack bins || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
B=build-cuda
budget=$(lim 330)
W4A8MOE_LIB=$PWD/$B/libw4a8moe.so timeout $(( budget + 30 )) python3 bench/peers.py --tokens 1,16,64,256 \
  --backend cuda_sm90 --budget "$budget" --out "$OUT/peers" > "$OUT/peers.log" 2>&1
echo "peers rc=$?"; grep -E "^\| [a-z]" "$OUT/peers.log" | head -40
for t in test_gpu_large test_gpu_device test_gpu_fused; do
  [ -x $B/tests-gpu/$t ] || continue
  W4A8MOE_TEST_QUICK=1 timeout "$(lim 90)" $B/tests-gpu/$t > "$OUT/$t.log" 2>&1; echo "$t rc=$?"
  grep -h "FAIL\|passed, " "$OUT/$t.log" | tail -3
done
echo "round 22b done in $(( $(date +%s) - t_start )) s"
