#!/usr/bin/env bash
# Round 10: the racecheck pass of make test-gpu in pieces (issue 9: clean under compute-sanitizer
# on every GPU test binary), each bounded so the call fits 600 s; a piece that runs out of time
# says so (exit 124) and how far it got. Logs under $OUT.
set -u
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
B=build-cuda
python3 -c "import tarfile; tarfile.open('build-lab/bins.tar.xz').extractall()" || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader
t_start=$(date +%s)
for spec in test_gpu_routing:60 test_gpu_device:40 test_gpu_consistency:120 test_gpu_large:90 \
            test_gpu_workspace:120 test_gpu_shared:120; do
  name=${spec%%:*}; lim=${spec##*:}
  left=$(( 570 - ($(date +%s) - t_start) )); [ "$left" -lt "$lim" ] && lim=$left
  [ "$lim" -lt 10 ] && { echo "== $name: no time left"; continue; }
  SAN_TIMEOUT=$lim tests/gpu/run.sh $B san racecheck "$name" > "$OUT/race-$name.log" 2>&1
  echo "== $name rc=$? (limit $lim s)"; grep -h "exit\|SUMMARY\|hazard\|Race\|passed, " "$OUT/race-$name.log" | head -6
done
