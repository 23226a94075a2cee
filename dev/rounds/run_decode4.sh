#!/usr/bin/env bash
# Decode round 4 (one short device call): the decode lab with the f16 version
# (dev/kernels/f16_decode_gemm.cuh: int4 and e4m3 widened to f16, mma k16) beside sm89 and bulk,
# and ncu's instruction mix of its gated decode tile (against round 3's 45 ALU instructions a
# tile-step for sm89_gemm_kernel). Logs under $OUT.
set -u
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for c in "2 1 4096 14336" "2 1 28672 4096" "8 1 7168 2048" "8 1 4096 7168" "8 1 1536 2048" \
         "8 16 4096 14336" "2 1 4096 14336 32"; do
  timeout 40 build-lab/decode_lab $c
done > "$OUT/lab.log" 2>&1
grep -v "^naive\|^version\|^ring" "$OUT/lab.log"
LAB_ONLY=13 LAB_ITERS=1 timeout 60 ncu --clock-control none --section SpeedOfLight --section SchedulerStats \
  --metrics smsp__inst_executed.sum,smsp__inst_executed_pipe_alu.sum,smsp__inst_executed_pipe_fma.sum,smsp__inst_executed_pipe_fmaheavy.sum,smsp__inst_executed_pipe_tensor.sum,smsp__inst_executed_pipe_lsu.sum \
  -k regex:sm89_decode_f16_kernel build-lab/decode_lab 2 1 28672 4096 > "$OUT/ncu-f16.txt" 2>&1
echo "ncu rc=$?"
grep -E "inst_executed|Duration|DRAM Throughput|Issue Slots|Issued Ipc|highest-utilized" "$OUT/ncu-f16.txt" | head -12
# the independent goldens on CUDA (issue 9): test_gpu_shared compares every golden with a shared
# expert against its expected.safetensors; verify --checkpoint compares CUDA with cpu_ref
python3 -c "import tarfile; tarfile.open('build-lab/bins.tar.xz').extractall()" || exit 1
timeout 120 build-cuda/tests-gpu/test_gpu_shared > "$OUT/shared.log" 2>&1; echo "test_gpu_shared rc=$?"
grep -i "golden\|indep\|passed\|FAIL" "$OUT/shared.log" | tail -12
for c in indep-llama4-tiny indep-sglang-w4afp8-tiny golden-deepseek-tiny golden-qwen3-tiny gpu-row-mixtral-h1024; do
  timeout 30 build-cuda/w4a8moe verify --checkpoint tests/data/$c --layer 1 --device cuda 2>&1 | tail -2
done
# per-kernel breakdown of one qwen3-30b-a3b forward at T = 1 (issue 8 asks for it before/after);
# -c caps the profiled launches (round 2's uncapped run timed out)
timeout 120 ncu -c 24 --print-summary per-kernel --section SpeedOfLight \
  -k regex:"dispatch|route|gemm|decode|combine|requant|schedule" \
  build-cuda/w4a8moe bench --device cuda --model qwen3-30b-a3b --tokens 1 --iters 2 --warmup 0 \
  > "$OUT/ncu-qwen-t1.txt" 2>&1; echo "ncu qwen rc=$?"
grep -E "^  [a-z_0-9]+.*\(|Duration" "$OUT/ncu-qwen-t1.txt" | head -40
