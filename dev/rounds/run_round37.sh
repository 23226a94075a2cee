#!/usr/bin/env bash
# Round 37 (written 2026-12-07, main from ae264ca + this round; its device call did not come that
# session): the T = 1 layer as one launch with all its weights in flight at once, the decode
# GEMMs' ring of four weight groups a warp, the GPU tests with FIND_IDS on by default, where the
# GEMMs' cycles go, and round 36's lost K-parts numbers.
#   f  dev/kernels/fused_decode_lab.cu (build-lab/fused_lab): versions 2 (every weight in flight at
#      once) and 3 (a ring of one-group stages) against version 1, checks then graph us, at the
#      T = 1 shapes of qwen3-30b-a3b, Mixtral, DeepSeek-V3 and Llama-4 Scout (fewer experts than
#      the models: the lab's host copies; FUSED_SHAPES="H,I,E,k ..."); then memcheck and racecheck
#      of the checks alone on a small shape. Prediction (H100): qwen3-30b v2 ~12 us cold (floor
#      7.0), v3 ~13, against v1's 52 and the library's staged 27; Mixtral v3 ~68 (floor 60,
#      library 91), DeepSeek-V3 ~68 (library 93), Llama-4 Scout ~26 (floor 21, library 46).
#   d  the small-batch kernel's ring of four weight groups a warp (W4A8MOE_SM90_MMA_DEPTH=4; measured
#      4-28 % slower in round 37 and removed after 06dc1c7: the switch now does nothing)
#      against two, T = 1, 8, 16 (DEPTH_MODELS=...), graph us, alternating. Prediction: the decode
#      GEMMs (1.3-2.2 TB/s) 10-25 % faster where latency-bound (llama4-scout, Mixtral at T = 1),
#      the layer 5-15 %; qwen3-30b unchanged (its warps hold 1-4 groups in all).
#   u  test_gpu_distinct (full: FIND_IDS now the default, MMA_DEPTH=4 bit for bit), routing,
#      memcheck, racecheck
#   s  GEMM2's K parts (W4A8MOE_SM90_SPLIT_K=0) against none, graph us (round 36 lost these lines)
#   p  ncu's scheduler, warp-state, instruction and pipe figures of the GEMM kernels at Mixtral
#      T = 64 (wgmma tiles) and T = 1 (mma tiles) (PROF_POINTS=model:T ...): where their cycles go
# `run_round37.sh [PARTS] [SECONDS]` runs the parts in PARTS' order; build with
# dev/rounds/build_device_bins.sh, carry build-lab/bins.tar.xz and build-lab/fused_lab.
set -u
PARTS=${1:-fdusp}
DEADLINE=${2:-540}
. "$(dirname "$0")/round_common.sh"
unpack bins || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
B=build-cuda
bench() { W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 40)" $B/w4a8moe bench --device cuda --model "$1" --tokens "$2" \
  2>&1 | grep -E "^ +[0-9]+ |error|FAIL"; }
part_f() {
  local hung=0 rc
  for sh in ${FUSED_SHAPES:-2048,768,128,8 4096,14336,8,2 7168,2048,32,8 5120,8192,16,1}; do
    echo "== fused_lab ${sh//,/ }"; timeout "$(lim 90)" build-lab/fused_lab ${sh//,/ } 2>&1; rc=$?; echo "rc=$rc"
    if [ $rc -eq 124 ]; then hung=1; echo "fused_lab timed out (a grid barrier that never opened?): the rest skipped"; break; fi
  done > >(tee "$OUT/fused.log") 2>&1
  [ $hung -eq 1 ] && return
  san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  for tool in memcheck racecheck; do
    LAB_CHECK_ONLY=1 timeout "$(lim 90)" "$san" --tool $tool --error-exitcode 86 build-lab/fused_lab 1024 512 32 4 \
      > "$OUT/fused-$tool.log" 2>&1; echo "fused_lab $tool rc=$?"
    grep -h "ERROR SUMMARY\|RACECHECK SUMMARY\|worst" "$OUT/fused-$tool.log"
  done
}
part_d() {
  for m in ${DEPTH_MODELS:-qwen3-30b-a3b mixtral-8x7b llama4-scout deepseek-v3 qwen3-235b-a22b}; do
    for d in 2 4 2 4; do
      echo "== $m mma_depth=$d"; W4A8MOE_SM90_MMA_DEPTH=$d bench $m 1,8,16
    done
  done 2>&1 | tee "$OUT/depth.log"
}
part_u() { gpu_tests $B routing; }
part_s() {
  for mt in ${SPLIT_POINTS:-mixtral-8x7b:32,64,128,256,320 llama4-scout:256}; do
    for sk in 0 1 0 1; do
      echo "== ${mt%%:*} split_k=$sk"; W4A8MOE_SM90_SPLIT_K=$sk bench "${mt%%:*}" "${mt##*:}"
    done
  done 2>&1 | tee "$OUT/split.log"
}
part_p() {
  ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  for mt in ${PROF_POINTS:-mixtral-8x7b:64 mixtral-8x7b:1}; do
    m=${mt%%:*} T=${mt#*:}
    W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 90)" $ncu --csv --page details --section LaunchStats \
      --section Occupancy --section SchedulerStats --section WarpStateStats --section InstructionStats \
      --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
      -k "regex:sm90_mma|sm90s_gemm|sm90_gemm_kernel" --launch-count 2 \
      $B/w4a8moe bench --device cuda --model $m --tokens $T --iters 1 --warmup 0 --layers 1 \
      > "$OUT/prof-$m-$T.csv" 2>&1
    echo "== profile $m T=$T rc=$?"
    grep -h "Issue Slots Busy\|Eligible\|Executed Ipc\|Theoretical Occupancy\|Warp Cycles Per Issued" \
      "$OUT/prof-$m-$T.csv" | cut -c1-160 | head -24
    W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 90)" $ncu --csv --page raw --metrics \
      "regex:^smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio$,regex:^sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active$,smsp__inst_executed.sum,sm__cycles_elapsed.avg" \
      -k "regex:sm90_mma|sm90s_gemm|sm90_gemm_kernel" --launch-count 2 \
      $B/w4a8moe bench --device cuda --model $m --tokens $T --iters 1 --warmup 0 --layers 1 \
      > "$OUT/stall-$m-$T.csv" 2>&1
    echo "== stalls $m T=$T rc=$? (in stall-$m-$T.csv)"
  done
}
summary() { # the key lines again, last, so that the call's output tail holds them all
  echo "==== summary"
  [ -f "$OUT/fused.log" ] && grep -h "^== fused_lab\|worst\|cold\|floor\|not run\|rc=" "$OUT/fused.log"
  [ -f "$OUT/depth.log" ] && awk '/^==/ {h=$0; next} {print h " | " $1, $3}' "$OUT/depth.log"
  [ -f "$OUT/split.log" ] && awk '/^==/ {h=$0; next} {print h " | " $1, $3}' "$OUT/split.log"
  grep -h "passed, \|ERROR SUMMARY\|RACECHECK SUMMARY" "$OUT"/test_gpu_*.log "$OUT"/memcheck.log \
    "$OUT"/racecheck.log "$OUT"/fused-*.log 2>/dev/null
}
for (( i = 0; i < ${#PARTS}; i++ )); do part_${PARTS:i:1}; done # in the order asked
summary
echo "round 37 done in $(( $(date +%s) - t_start )) s"
