#!/usr/bin/env bash
# Round 13: the one-kernel decode layer of dev/kernels/fused_decode_lab.cu (build it with the
# nvcc line in its header into build-lab/fused_lab; build_device_bins.sh for the rest), then
# main's test_gpu_distinct (its new decode shapes had only run on a branch). Prediction (H100):
# qwen3-30b-a3b shape at T = 1 ~12 us a layer cold, against the library's 36 us (six kernels).
# `run_round13.sh [SECONDS]`; each step's limit is cut to what is left.
set -u
DEADLINE=${1:-280}
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
t_start=$(date +%s)
lim() { local left=$(( DEADLINE - ($(date +%s) - t_start) )); [ "$left" -lt "$1" ] && echo $(( left > 15 ? left : 1 )) || echo "$1"; }
python3 -c "import tarfile; tarfile.open('build-lab/bins.tar.xz').extractall()" || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader
for shape in "2048 768 128 8" "1024 512 64 8 64" "4096 1536 128 8"; do
  echo "== fused_lab $shape"
  timeout "$(lim 60)" build-lab/fused_lab $shape 2>&1 | tee -a "$OUT/fused.log"
done
timeout "$(lim 120)" build-cuda/tests-gpu/test_gpu_distinct > "$OUT/distinct.log" 2>&1; echo "distinct (main) rc=$?"
grep -h "FAIL\|passed, " "$OUT/distinct.log" | tail -4
echo "round 13 done at $(( $(date +%s) - t_start )) s"
