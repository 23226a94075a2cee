#!/usr/bin/env bash
# Round 36 (written 2026-12-07, main from ec0f3c9; no device came that session): GEMM2's K in parts
# on the wgmma tiles where its grid is short of a wave, and GEMM1 finding its tile's expert from
# the routing ids, both off by default, checked and measured; explain's by-batch lines; and where
# the points that miss issue 8's 1.3x the floor above T = 1 spend their time.
#   t  test_gpu_distinct (full, with the K-part shapes), routing, workspace, consistency, large
#      (quick); memcheck, racecheck
#   x  explain --device cuda on mixtral-8x7b and qwen3-30b-a3b (the by-batch lines on the GPU)
#   n  ncu per kernel (time, grid, registers, DRAM / L2 / SM throughput, waves, occupancy) at
#      Mixtral T = 64 (16 rows an expert, 32-row wgmma tiles), qwen3-235b T = 64 (4 rows, mma
#      tiles) and qwen3-30b T = 16 (1 row, mma tiles). Prediction: Mixtral's GEMM2 (256 working
#      CTAs of 224 K stages, three slots an SM = 396) well under the copy rate, under-filled.
#   s  GEMM2's K parts by the grid (W4A8MOE_SM90_SPLIT_K=0) against none (=1, the default), graph
#      us, alternating: Mixtral T = 32-320, llama4-scout T = 256 (SPLIT_POINTS=model:T,...). Prediction: Mixtral T = 64 390 -> ~340 us (GEMM2
#      at GEMM1's rate), T = 256 -5 to -10 %; scout unchanged (one part).
#   k  GEMM1 finding its tile's expert from the routing ids before its PDL wait
#      (W4A8MOE_SM90_FIND_IDS=1) against the default (=0), T = 1, 2, graph us (FIND_MODELS=...).
#      Prediction (H100): qwen3-30b T = 1 27.3 -> ~24, Mixtral 96.5 -> ~91 (no schedule kernel
#      either), llama4-scout ~53 -> ~49, deepseek-v3 ~97 -> ~94.
#   u  t's short form: test_gpu_distinct (full), test_gpu_routing, memcheck, racecheck
#   v  the shortest: test_gpu_distinct and test_gpu_routing quick, memcheck, racecheck
#   b  the layer at those points, two runs each (graph us)
# `run_round36.sh [PARTS] [SECONDS]` runs the parts in PARTS' order (NCU_POINTS=model:T:split_k...
# sets part n's points); build with dev/rounds/build_device_bins.sh, carry
# build-lab/bins.tar.xz.
set -u
PARTS=${1:-txnsb}
DEADLINE=${2:-540}
. "$(dirname "$0")/round_common.sh"
unpack bins || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
B=build-cuda
part_t() { gpu_tests $B routing workspace consistency large; }
part_u() { gpu_tests $B routing; } # the short form: distinct (full), routing, the sanitizers
part_v() { # the shortest: distinct and routing (quick), memcheck and racecheck (distinct, quick)
  W4A8MOE_TEST_QUICK=1 timeout "$(lim 100)" $B/tests-gpu/test_gpu_distinct > "$OUT/test_gpu_distinct.log" 2>&1
  echo "distinct (quick) rc=$?"; grep -h "FAIL\|passed, " "$OUT/test_gpu_distinct.log" | tail -4
  W4A8MOE_TEST_QUICK=1 timeout "$(lim 60)" $B/tests-gpu/test_gpu_routing > "$OUT/test_gpu_routing.log" 2>&1
  echo "routing rc=$?"; grep -h "FAIL\|passed, " "$OUT/test_gpu_routing.log" | tail -4
  for tool in memcheck racecheck; do
    W4A8MOE_TEST_QUICK=1 SAN_TIMEOUT=$(lim 100) tests/gpu/run.sh "$B" san $tool test_gpu_distinct \
      > "$OUT/$tool.log" 2>&1; echo "$tool rc=$?"; grep -h "ERROR SUMMARY\|RACECHECK SUMMARY" "$OUT/$tool.log"
  done
}
part_x() {
  for m in mixtral-8x7b qwen3-30b-a3b; do
    timeout "$(lim 30)" $B/w4a8moe explain --device cuda --model $m 2>&1 | tee "$OUT/explain-$m.log" | tail -14
  done
}
part_n() {
  ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  met=gpu__time_duration.sum,launch__grid_size,launch__registers_per_thread,launch__waves_per_multiprocessor
  met=$met,dram__throughput.avg.pct_of_peak_sustained_elapsed,lts__throughput.avg.pct_of_peak_sustained_elapsed
  met=$met,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active
  met=$met,smsp__issue_active.avg.pct_of_peak_sustained_active,dram__bytes_read.sum
  for mt in ${NCU_POINTS:-mixtral-8x7b:64:0 mixtral-8x7b:64:1 qwen3-235b-a22b:64:0 qwen3-30b-a3b:16:0}; do
    m=${mt%%:*} T=${mt#*:}; sk=${T#*:}; T=${T%%:*}
    W4A8MOE_SM90_SPLIT_K=$sk W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 60)" $ncu --csv --metrics $met \
      -k "regex:dispatch|schedule|widen|requant|combine|route|sm90_mma|sm90s_gemm|sm90_gemm_kernel" --launch-count 9 \
      $B/w4a8moe bench --device cuda --model $m --tokens $T --iters 1 --warmup 0 --layers 1 \
      > "$OUT/ncu-$m-$T-$sk.csv" 2> "$OUT/ncu-$m-$T-$sk.err"
    echo "== $m T=$T split_k=$sk rc=$?"
    python3 - "$OUT/ncu-$m-$T-$sk.csv" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
hdr, rows = rows[0], rows[1:]
ix = {h: i for i, h in enumerate(hdr)}
k = {}
for r in rows:
    key = (r[ix["ID"]], r[ix["Kernel Name"]][:48])
    k.setdefault(key, {})[r[ix["Metric Name"]]] = r[ix["Metric Value"]]
short = lambda n: n.split("__")[-1].split(".")[0][:14]
for (i, name), m in k.items():
    print(i.rjust(2), name.ljust(48), " ".join("%s=%s" % (short(a), m[a]) for a in sorted(m)))
PY
  done 2>&1 | tee -a "$OUT/ncu-summary.log"
}
bench() { W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 40)" $B/w4a8moe bench --device cuda --model "$1" --tokens "$2" \
  2>&1 | grep -E "^ +[0-9]+ |error|FAIL"; }
part_s() {
  for mt in ${SPLIT_POINTS:-mixtral-8x7b:32,64,96,128,256,320 llama4-scout:256}; do
    for sk in 0 1 0 1; do
      echo "== ${mt%%:*} split_k=$sk"; W4A8MOE_SM90_SPLIT_K=$sk bench "${mt%%:*}" "${mt##*:}"
    done
  done 2>&1 | tee "$OUT/split.log"
}
part_k() {
  for m in ${FIND_MODELS:-qwen3-30b-a3b mixtral-8x7b llama4-scout deepseek-v3}; do
    for fi in 0 1 0 1; do
      echo "== $m find_ids=$fi"; W4A8MOE_SM90_FIND_IDS=$fi bench $m 1,2
    done
  done 2>&1 | tee "$OUT/find-ids.log"
}
part_b() {
  for mt in mixtral-8x7b:1,64 qwen3-235b-a22b:64 qwen3-30b-a3b:1,16; do
    for i in 1 2; do echo "== ${mt%%:*} run $i"; bench "${mt%%:*}" "${mt##*:}"; done
  done 2>&1 | tee "$OUT/bench.log"
}
for (( i = 0; i < ${#PARTS}; i++ )); do part_${PARTS:i:1}; done # in the order asked
echo "round 36 done in $(( $(date +%s) - t_start )) s"
