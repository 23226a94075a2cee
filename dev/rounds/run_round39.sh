#!/usr/bin/env bash
# Round 39 (written 2026-12-07): the speed of light of each way of streaming a decode layer's
# weights (dev/kernels/stream_lab.cu: 16-byte loads at 1, 2, 4 blocks an SM; short blocks shaped as the
# small-batch kernel's, with and without an L2 prefetch of each block's bytes; the bulk-copy ring
# at 1 and 2 blocks an SM, 1, 4, 8 producer lanes, 4-32 KB stages), against the one-launch
# decode's ~2.2 TB/s "stream alone" (round 38), then a racecheck long enough to finish.
#   s  stream_lab at 198 MB (Mixtral T = 1), 117 (its GEMM1), 59 (its GEMM2), 21 (qwen3-30b-a3b)
#   q  test_gpu_distinct, quick (W4A8MOE_SM90_L2_AHEAD=2 and 8, W4A8MOE_SM90_STAGE=1 and 3,
#      W4A8MOE_SM90_QUANT_FIRST=1 and L2_LAYER=1 against the default's bits, W4A8MOE_SM90_DECODE_KS
#      = 8 and 0 against the tolerance), then test_gpu_routing, quick (its
#      one-token bad ids with QUANT_FIRST=1 among them)
#   l  w4a8moe bench --tokens 1,16 with W4A8MOE_SM90_L2_AHEAD = 0, 4, 8, twice in turn, on six
#      models, one process each (--env-sets), and explain's line. Prediction (H100): if the small-batch GEMMs are short of bytes in flight
#      (64 KB an SM, ~2.8 us of latency at 23 GB/s an SM), 4-8 groups ahead take Mixtral T = 1
#      from 90 to ~75 us and T = 16 by 10-15 %; if the stream lab's "tile ... pf" rows are no faster
#      than its plain ones, nothing
#      In the same processes W4A8MOE_SM90_DECODE_KS unset against 0 (eighths where they fill the
#      SMs' slots better: Mixtral's and qwen3-235b's GEMM1, DeepSeek-V3's GEMM2 at T = 1).
#      Prediction: those GEMMs' slots 73-85 % -> 97 % busy, so ~10-20 % faster where they are
#      latency-bound: Mixtral ~90 -> ~83 us, qwen3-235b ~54 -> ~48, DeepSeek-V3 ~93 -> ~89
#   t  w4a8moe bench --tokens 1 on six models, one process each (--env-sets), twice in turn:
#      nothing, W4A8MOE_SM90_STAGE=3, =1, W4A8MOE_SM90_QUANT_FIRST=1, QUANT_FIRST=1 with STAGE=2
#      (qwen3-30b-a3b also W4A8MOE_SM90_L2_LAYER=1 alone, with QUANT_FIRST, with both); and
#      explain's lines. STAGE: a one-token forward's row staged in shared memory (GEMM1 1, GEMM2 2,
#      both 3). Prediction (H100): GEMM1's group 185 -> ~150 warp instructions (its mma block's
#      PTX 155 -> 114), so where its instruction chain is the limit (the stream lab's "tile" rows
#      near the copy rate) GEMM1 10-20 % faster: Mixtral T = 1 90 -> ~83 us, deepseek-v3 93 -> ~86,
#      qwen3-30b-a3b 27.3 -> ~26; GEMM2's part (3 against 1) 0-5 %; nothing if bytes in flight are the limit.
#      QUANT_FIRST: the token quantised by a kernel of its own before the prepare's sort, GEMM1's
#      whole product before its PDL wait. Prediction: GEMM1 starts ~2.5 us earlier (the sort's
#      part of the prepare's ~5 us), T = 1 2-3 us less on every model (qwen3-30b-a3b ~27 -> ~24.5).
#      L2_LAYER (qwen3-30b-a3b only: its experts' 20 MB fit half of L2): that first kernel also asks
#      L2 for the token's experts' weights from 132 blocks; prediction: up to the ~4 us a warm L2
#      saved in round 15d, i.e. qwen3-30b-a3b T = 1 ~27 -> ~23.5 alone, ~21-22 with QUANT_FIRST
#   c  chain_lab qwen3-30b-a3b and mixtral-8x7b T = 1: default, STAGE=3, QUANT_FIRST=1 with STAGE=3,
#      and with L2_LAYER=1 too
#      (each node's step in the graph: where the microseconds moved)
#   m  memcheck of test_gpu_distinct, quick
#   p  bench/peers.py at T = 1, 16, 64, 256 (issue 8's table: ours, the floor, torch's grouped GEMMs)
#   r  racecheck of test_gpu_distinct, quick, its decode shapes first (W4A8MOE_TEST_MAX_T=8: the
#      small-batch path with its prologues and L2 requests, the one-launch runs at 1, 2, 4 groups
#      a stage), then all of it with what time is left
# Run: bash dev/rounds/build_device_bins.sh, then run(command="bash dev/rounds/run_round39.sh sqtm 570",
#      carry=["build-lab/bins.tar.xz","build-lab/stream_lab","build-lab/chain_lab"]), and at once (the
#      machine is kept only 30 s idle) "bash dev/rounds/run_round39.sh lcpr 570": each step stops in
#      time for the call's deadline (lim), so a part cut short says so in its log.
set -u
PARTS=${1:-sqlpmr}
DEADLINE=${2:-570}
. "$(dirname "$0")/round_common.sh"
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
part_s() { timeout "$(lim 90)" build-lab/stream_lab 198 117 59 21 2>&1 | tee "$OUT/stream.log"; }
B=build-cuda
part_q() {
  [ -x $B/w4a8moe ] || unpack bins || return 1
  W4A8MOE_TEST_QUICK=1 timeout "$(lim 180)" $B/tests-gpu/test_gpu_distinct > "$OUT/distinct-quick.log" 2>&1
  echo "distinct quick rc=$?"; grep -h "L2_AHEAD\|STAGE\|QUANT_FIRST\|FAIL\|passed, " "$OUT/distinct-quick.log" | grep -v "^ok" | tail -8
  W4A8MOE_TEST_QUICK=1 timeout "$(lim 60)" $B/tests-gpu/test_gpu_routing > "$OUT/routing-quick.log" 2>&1
  echo "routing quick rc=$?"; grep -h "FAIL\|passed, " "$OUT/routing-quick.log" | tail -6
}
part_l() {
  [ -x $B/w4a8moe ] || unpack bins || return 1
  W4A8MOE_SM90_L2_AHEAD=4 timeout "$(lim 30)" $B/w4a8moe explain --device cuda --model mixtral-8x7b 2>&1 | grep -m3 "L2"
  W4A8MOE_SM90_DECODE_KS=0 timeout "$(lim 30)" $B/w4a8moe explain --device cuda --model mixtral-8x7b 2>&1 |
    grep -m3 "GEMM1's 8 ways"
  # one process a model, the sets alternating (bench --env-sets: weights and check made once);
  # W4A8MOE_SM90_DECODE_KS=0 where it changes a split at T = 1 (Mixtral, qwen3-235b, DeepSeek-V3)
  local a4=W4A8MOE_SM90_L2_AHEAD=4 a8=W4A8MOE_SM90_L2_AHEAD=8 ks=W4A8MOE_SM90_DECODE_KS=0
  for m in qwen3-30b-a3b mixtral-8x7b llama4-scout deepseek-v3 qwen3-235b-a22b llama4-maverick; do
    sets="-;$a4;$a8;-;$a4;$a8"
    case $m in mixtral-8x7b|qwen3-235b-a22b|deepseek-v3) sets="$sets;$ks;-;$ks" ;; esac
    W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 120)" $B/w4a8moe bench --device cuda --model $m --tokens 1,16 \
      --env-sets "$sets" 2>&1 | grep -E "^== |^ +[0-9]+ |error|FAIL|^w4a8moe"
  done 2>&1 | tee "$OUT/l2-bench.log"
}
part_t() {
  [ -x $B/w4a8moe ] || unpack bins || return 1
  W4A8MOE_SM90_STAGE=3 timeout "$(lim 30)" $B/w4a8moe explain --device cuda --model mixtral-8x7b 2>&1 |
    grep -m3 "STAGE"
  W4A8MOE_SM90_QUANT_FIRST=1 timeout "$(lim 30)" $B/w4a8moe explain --device cuda --model qwen3-30b-a3b 2>&1 |
    grep -m3 "QUANT_FIRST"
  W4A8MOE_SM90_L2_LAYER=1 timeout "$(lim 30)" $B/w4a8moe explain --device cuda --model qwen3-30b-a3b 2>&1 |
    grep -m3 "L2_LAYER"
  # one process a model, the sets alternating; L2_LAYER only where the experts' bytes fit half of
  # L2 (qwen3-30b-a3b)
  local s3=W4A8MOE_SM90_STAGE=3 s1=W4A8MOE_SM90_STAGE=1 s2=W4A8MOE_SM90_STAGE=2 q=W4A8MOE_SM90_QUANT_FIRST=1
  local l=W4A8MOE_SM90_L2_LAYER=1
  for m in qwen3-30b-a3b mixtral-8x7b llama4-scout deepseek-v3 qwen3-235b-a22b llama4-maverick; do
    sets="-;$s3;$s1;$q;$q $s2;-;$s3;$s1;$q;$q $s2"
    [ $m = qwen3-30b-a3b ] && sets="$sets;$l;$q $l;$q $s2 $l;-;$l;$q $s2 $l"
    W4A8MOE_BACKEND=cuda_sm90 timeout "$(lim 120)" $B/w4a8moe bench --device cuda --model $m --tokens 1 \
      --env-sets "$sets" 2>&1 | grep -E "^== |^ +[0-9]+ |error|FAIL|^w4a8moe"
  done 2>&1 | tee "$OUT/stage-bench.log"
}
part_c() {
  [ -x $B/w4a8moe ] || unpack bins || return 1
  for m in qwen3-30b-a3b mixtral-8x7b; do
    for a in 0:0:0 3:0:0 3:1:0 3:1:1; do
      IFS=: read -r sg qf ll <<< "$a"
      echo "== $m stage=$sg quant_first=$qf l2_layer=$ll"
      W4A8MOE_BACKEND=cuda_sm90 W4A8MOE_SM90_STAGE=$sg W4A8MOE_SM90_QUANT_FIRST=$qf W4A8MOE_SM90_L2_LAYER=$ll \
        timeout "$(lim 40)" build-lab/chain_lab $m 1 2>&1 | tail -n +2
    done
  done 2>&1 | tee "$OUT/chain.log"
}
part_m() {
  [ -x $B/w4a8moe ] || unpack bins || return 1
  W4A8MOE_TEST_QUICK=1 SAN_TIMEOUT=$(lim 120) tests/gpu/run.sh $B san memcheck test_gpu_distinct \
    > "$OUT/san-memcheck.log" 2>&1; echo "memcheck rc=$?"; grep -h "ERROR SUMMARY\|FAIL" "$OUT/san-memcheck.log" | tail -3
}
part_p() {
  local budget; budget=$(lim 200)
  [ -x $B/w4a8moe ] || unpack bins || return 1
  W4A8MOE_LIB=$PWD/build-cuda/libw4a8moe.so timeout $(( budget + 30 )) python3 bench/peers.py --tokens 1,16,64,256 \
    --backend cuda_sm90 --budget "$budget" --out "$OUT/peers" > "$OUT/peers.log" 2>&1
  echo "peers rc=$?"; grep -E "^\| [a-z]" "$OUT/peers.log" | head -40
}
part_r() {
  [ -x $B/w4a8moe ] || unpack bins || return 1
  W4A8MOE_TEST_MAX_T=8 W4A8MOE_TEST_QUICK=1 SAN_TIMEOUT=$(lim 200) tests/gpu/run.sh $B san racecheck \
    test_gpu_distinct > "$OUT/san-racecheck-decode.log" 2>&1; echo "racecheck (T <= 8) rc=$?"
  grep -h "RACECHECK SUMMARY\|ERROR SUMMARY\|FAIL\|exit\|passed, " "$OUT/san-racecheck-decode.log" | tail -5
  W4A8MOE_TEST_QUICK=1 SAN_TIMEOUT=$(lim 330) tests/gpu/run.sh $B san racecheck test_gpu_distinct \
    > "$OUT/san-racecheck.log" 2>&1; echo "racecheck rc=$?"
  grep -h "RACECHECK SUMMARY\|ERROR SUMMARY\|FAIL\|exit\|passed, " "$OUT/san-racecheck.log" | tail -5
}
summary() {
  echo "==== summary"
  for f in l2-bench stage-bench; do
    [ -f "$OUT/$f.log" ] && python3 dev/rounds/summarise_bench.py "$OUT/$f.log"
  done
  grep -h "passed, \|ERROR SUMMARY\|RACECHECK SUMMARY" "$OUT"/distinct-quick.log "$OUT"/routing-quick.log \
    "$OUT"/san-*.log 2>/dev/null
}
for (( i = 0; i < ${#PARTS}; i++ )); do part_${PARTS:i:1}; done
summary
echo "round 39 done in $(( $(date +%s) - t_start )) s"
