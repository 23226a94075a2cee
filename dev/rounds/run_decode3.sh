#!/usr/bin/env bash
# Decode round 3 (one device call): the whole-model run of issue 9 part 3 (bench/whole_model.sh:
# 48 qwen3-30b-a3b-shaped MoE layers on the GPU, T = 16384, one 2 GiB workspace), the
# distinct-expert and consistency tests on the final decode policy (bulk copies only at g = 32),
# and ncu's pipe and instruction statistics of sm89_gemm_kernel's gated decode tile (what bounds
# it at ~2 instructions a clock per SM). Binaries in build-lab/bins.tar.xz. Logs under $OUT.
set -u
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
B=build-cuda
python3 -c "import tarfile; tarfile.open('build-lab/bins.tar.xz').extractall()" || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
df -h /tmp | tail -1
timeout 300 bench/whole_model.sh /tmp/wm --build $B > "$OUT/whole_model.log" 2>&1; echo "whole_model rc=$?"
grep -v "^ *[0-9]* " "$OUT/whole_model.log" | tail -14; grep "^ *[0-9]* " "$OUT/whole_model.log" | sed -n '1,3p;46,48p'
rm -rf /tmp/wm
( timeout 150 tests/gpu/run.sh $B tests > "$OUT/tests.log" 2>&1; echo "gpu tests rc=$?" )
grep -h "FAIL\|passed" "$OUT/tests.log" | head -6
LAB_ONLY=7 LAB_ITERS=1 timeout 80 ncu --clock-control none --section ComputeWorkloadAnalysis --section InstructionStats \
  --section SchedulerStats --section WarpStateStats --section SpeedOfLight \
  --metrics smsp__inst_executed.sum,smsp__inst_executed_pipe_fp64.sum,smsp__inst_executed_pipe_alu.sum,smsp__inst_executed_pipe_fma.sum,smsp__inst_executed_pipe_lsu.sum,smsp__inst_executed_pipe_tensor.sum,smsp__inst_executed_pipe_xu.sum,smsp__inst_executed_pipe_uniform.sum \
  -k regex:sm89_gemm_kernel build-lab/decode_lab 2 1 28672 4096 > "$OUT/ncu-gated.txt" 2>&1
echo "ncu rc=$?"
grep -E "inst_executed|Duration|DRAM Throughput|Issued Ipc|Issue Slots|Pipe|pipe|Eligible|Stall" "$OUT/ncu-gated.txt" | head -40
