#!/usr/bin/env bash
# tests/gpu/device_run.sh PHASE — what one call on the GPU machine runs, over a build made on the
# CPU machine (carried: build-cuda; this script builds nothing). Logs go to $OUT (or ./device-out).
#   smoke  the GPU tests (no sanitizers), verify on CUDA, the checkpoint commands on CUDA
#          (run, verify --checkpoint, bench --checkpoint, the CLI tests), a short bench
#   full   the GPU tests, verify and the checkpoint commands on CUDA, the bench of every
#          built-in model at T = 1..16384,
#          then compute-sanitizer memcheck and racecheck over the GPU tests (make test-gpu's runs)
#   san    the sanitizer runs alone
#   final  full, then peers
#   peers  bench/peers.py (PyTorch side by side) through the Python binding
# Every phase prints the device, the date and what it ran; the last lines are a summary.
set -u
phase=${1:-smoke}
B=${BUILD:-build-cuda}
OUT=${OUT:-device-out}
mkdir -p "$OUT"
# the shared library links libjansson.so.4, absent on the GPU machine: the build puts a copy
# beside libw4a8moe.so, which finds it through its $ORIGIN run path (see the Makefile)
export W4A8MOE_LIB="$PWD/$B/libw4a8moe.so"
summary=()
step() { # name, command...: runs it, tees to $OUT/name.log, records its status and time
    local name=$1; shift
    local t0=$(date +%s)
    echo "=== $name: $*"
    ( set -o pipefail; timeout "${STEP_TIMEOUT:-300}" "$@" 2>&1 | tee "$OUT/$name.log" )
    local rc=$? t1=$(date +%s)
    summary+=("$(printf '%-28s rc=%-3s %4ss' "$name" "$rc" $((t1 - t0)))")
}
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv; } \
    | tee "$OUT/device.txt"
# the checkpoint commands on the GPU (golden tiny checkpoints of tests/data)
cli_on_cuda() {
    local gq=tests/data/golden-qwen3-tiny
    step run-cuda "$B/w4a8moe" run "$gq" --layer 1 --input "$gq/input.safetensors" \
        --output "$OUT/run-qwen3-tiny.safetensors" --device cuda
    step verify-ckpt-cuda "$B/w4a8moe" verify --checkpoint "$gq" --layer 1 --device cuda
    step bench-ckpt-cuda "$B/w4a8moe" bench --checkpoint "$gq" --layer 1 --device cuda --tokens 1,16,64
    step cli-tests tests/cli/run.sh "$B/w4a8moe"
}
models="mixtral-8x7b qwen3-30b-a3b qwen3-235b-a22b deepseek-v3 llama4-scout llama4-maverick"
case "$phase" in
smoke)
    step consistency "$B/tests-gpu/test_gpu_consistency"
    step large "$B/tests-gpu/test_gpu_large"
    step routing "$B/tests-gpu/test_gpu_routing"
    step verify "$B/w4a8moe" verify --device cuda
    cli_on_cuda
    for m in qwen3-30b-a3b deepseek-v3; do
        step "bench-$m" "$B/w4a8moe" bench --device cuda --model "$m" --tokens 1,16,64,256,1024,4096,16384
    done
    ;;
full)
    step tests tests/gpu/run.sh "$B" tests
    step verify "$B/w4a8moe" verify --device cuda
    cli_on_cuda
    for m in $models; do
        step "bench-$m" "$B/w4a8moe" bench --device cuda --model "$m" --tokens 1,16,64,256,1024,4096,16384
    done
    STEP_TIMEOUT=${SAN_BUDGET:-300} step sanitizers tests/gpu/run.sh "$B" san
    ;;
san)
    STEP_TIMEOUT=${SAN_BUDGET:-540} step sanitizers tests/gpu/run.sh "$B" san
    ;;
final)
    step tests tests/gpu/run.sh "$B" tests
    step verify "$B/w4a8moe" verify --device cuda
    for m in $models; do
        step "bench-$m" "$B/w4a8moe" bench --device cuda --model "$m" --tokens 1,16,64,256,1024,4096,16384
    done
    STEP_TIMEOUT=${SAN_BUDGET:-200} step sanitizers tests/gpu/run.sh "$B" san
    step peers env PYTHONUNBUFFERED=1 python3 bench/peers.py --out "$OUT/peers" ${PEERS_ARGS:-}
    ;;
peers)
    step peers env PYTHONUNBUFFERED=1 python3 bench/peers.py --out "$OUT/peers" ${PEERS_ARGS:-}
    ;;
*) echo "unknown phase $phase"; exit 2 ;;
esac
echo "=== summary ($phase)"
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
