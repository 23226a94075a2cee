#!/usr/bin/env bash
# Round 18b: T = 1 again, build-base / new (round 18 saw llama4-scout 62.9 → 64.6 µs), then
# cuda_sm89 against cuda_sm90 (new) at T = 1, 16, 64 on every model: does cuda_sm90 now win at
# every decode point (src/core/registry.c's condition for putting it first)?
# `run_round18b.sh [SECONDS]`; each step's limit is cut to what is left.
set -u
DEADLINE=${1:-300}
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
t_start=$(date +%s)
lim() { local left=$(( DEADLINE - ($(date +%s) - t_start) )); [ "$left" -lt "$1" ] && echo $(( left > 15 ? left : 1 )) || echo "$1"; }
python3 -c "import tarfile; tarfile.open('build-lab/bins.tar.xz').extractall(); tarfile.open('build-lab/base.tar.xz').extractall()" || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
bench() { # backend build model tokens
  echo "== $1 $2 $3"
  W4A8MOE_BACKEND=$1 timeout "$(lim 45)" $2/w4a8moe bench --device cuda --model $3 --tokens $4 \
    2>&1 | tee -a "$OUT/bench.log" | grep -E "^ +[0-9]+ |error|FAIL"
}
for m in llama4-scout qwen3-30b-a3b; do
  for b in build-base build-cuda build-base build-cuda; do bench cuda_sm90 $b $m 1; done
done
for m in mixtral-8x7b qwen3-30b-a3b qwen3-235b-a22b deepseek-v3 llama4-scout llama4-maverick; do
  for be in cuda_sm89 cuda_sm90; do bench $be build-cuda $m 1,16,64; done
done
echo "round 18b done in $(( $(date +%s) - t_start )) s"
