# tests/cli/checkpoint.sh — CLI tests of the checkpoint commands (inspect, run, verify
# --checkpoint) on the golden checkpoints of tests/data. Sourced by tests/cli/run.sh: uses its
# $cli, $tmp, $here, run, ok, fail and usage_error.
data="$here/../data"
gq="$data/golden-qwen3-tiny" gd="$data/golden-deepseek-tiny"

run inspect_ds inspect "$gd"
if [ "$rc" -eq 0 ] && grep -q '^architecture  deepseek_v3 (DeepseekV3ForCausalLM)$' "$tmp/inspect_ds.out" &&
    grep -q '^format        pack-quantized (compressed-tensors), scheme int4-group x fp8-token-dynamic, g = 128$' "$tmp/inspect_ds.out" &&
    grep -q '^  layer 1 .*shared: int4 pack-quantized; zero-copy$' "$tmp/inspect_ds.out" &&
    grep -q '^0 problems$' "$tmp/inspect_ds.out"; then
    ok "inspect golden-deepseek-tiny: architecture, format, layers, 0 problems"
else
    fail "inspect golden-deepseek-tiny (exit $rc)" "$(cat "$tmp/inspect_ds.out")"
fi

# run: the golden input through layer 1 with the checkpoint's router gives the golden output
# (the data bytes: the last T*H*2 = 2048 bytes of both files)
for g in "$gq" "$gd"; do
    run run_golden run "$g" --layer 1 --input "$g/input.safetensors" --output "$tmp/out.safetensors" --device cpu
    if [ "$rc" -eq 0 ] && cmp -s <(tail -c 2048 "$tmp/out.safetensors") <(tail -c 2048 "$g/expected.safetensors") &&
        grep -q '^device: cpu (.*)$' "$tmp/run_golden.out"; then
        ok "run $(basename "$g") --layer 1: output equals the golden output"
    else
        fail "run $(basename "$g") --layer 1 (exit $rc)" "$(cat "$tmp/run_golden.out" "$tmp/run_golden.err")"
    fi
done
run run_routed run "$gd" --layer 1 --input "$gd/input.safetensors" --output "$tmp/routed.safetensors" --routed-only --device cpu
if [ "$rc" -eq 0 ] && grep -q 'shared expert left out (--routed-only)' "$tmp/run_routed.out" &&
    ! cmp -s <(tail -c 2048 "$tmp/routed.safetensors") <(tail -c 2048 "$gd/expected.safetensors"); then
    ok "run --routed-only: says so, and the output differs"
else
    fail "run --routed-only (exit $rc)" "$(cat "$tmp/run_routed.out" "$tmp/run_routed.err")"
fi

# run with given topk_ids/topk_weights: build an input from the golden hidden states
{
    hdr='{"hidden_states":{"dtype":"BF16","shape":[4,256],"data_offsets":[0,2048]},"topk_ids":{"dtype":"I32","shape":[4,2],"data_offsets":[2048,2080]},"topk_weights":{"dtype":"F32","shape":[4,2],"data_offsets":[2080,2112]}}'
    while [ $(( ${#hdr} % 8 )) -ne 0 ]; do hdr="$hdr "; done
    printf "\\x$(printf %02x $(( ${#hdr} % 256 )))\\x$(printf %02x $(( ${#hdr} / 256 )))\\x00\\x00\\x00\\x00\\x00\\x00"
    printf '%s' "$hdr"
    tail -c 2048 "$gq/input.safetensors"
    for i in 0 1 2 3 4 5 6 7; do printf "\\x0$i\\x00\\x00\\x00"; done
    for i in 0 1 2 3 4 5 6 7; do printf '\x00\x00\x00\x3f'; done
} >"$tmp/ids.safetensors"
run run_ids run "$gq" --layer 1 --input "$tmp/ids.safetensors" --output "$tmp/ids_out.safetensors" --backend cpu_ref --device cpu
if [ "$rc" -eq 0 ] && grep -q 'routing given (topk_ids), backend cpu_ref' "$tmp/run_ids.out"; then
    ok "run with topk_ids/topk_weights bypasses the router"
else
    fail "run with topk_ids (exit $rc)" "$(cat "$tmp/run_ids.out" "$tmp/run_ids.err")"
fi

run verify_ck verify --checkpoint "$gd" --layer 1 --tokens 5 --seed 7 --device cpu
if [ "$rc" -eq 0 ] && grep -q '^verify: 0 failed$' "$tmp/verify_ck.out" && grep -q '^device: cpu (' "$tmp/verify_ck.out" &&
    grep -Eq '^cpu +layer 1 +ok ' "$tmp/verify_ck.out"; then
    ok "verify --checkpoint golden-deepseek-tiny --layer 1 --device cpu"
else
    fail "verify --checkpoint (exit $rc)" "$(cat "$tmp/verify_ck.out" "$tmp/verify_ck.err")"
fi

# --device auto (the default): the host here, or cuda:0 (the deepseek layer has a shared
# expert: where the CUDA backends refuse it, auto says so and falls back to the host)
for g in "$gq" "$gd"; do
    run run_auto run "$g" --layer 1 --input "$g/input.safetensors" --output "$tmp/auto.safetensors"
    if [ "$rc" -eq 0 ] && grep -Eq '^device: .*, chosen by --device auto$' "$tmp/run_auto.out"; then
        ok "run $(basename "$g") with --device auto: $(grep -h '^device: ' "$tmp/run_auto.out" | tr '\n' ' ')"
    else
        fail "run $(basename "$g") with --device auto (exit $rc)" "$(cat "$tmp/run_auto.out" "$tmp/run_auto.err")"
    fi
    run verify_auto verify --checkpoint "$g" --layer 1 --tokens 4 --seed 3
    if [ "$rc" -eq 0 ] && grep -q '^verify: 0 failed$' "$tmp/verify_auto.out" &&
        grep -Eq '^[a-z0-9_]+ +layer 1 +ok ' "$tmp/verify_auto.out"; then
        ok "verify --checkpoint $(basename "$g") with --device auto: a backend ran and passed"
    else
        fail "verify --checkpoint $(basename "$g") with --device auto (exit $rc)" "$(cat "$tmp/verify_auto.out" "$tmp/verify_auto.err")"
    fi
done

# bench --checkpoint: the checkpoint's layer, checked against cpu_ref
run bench_ck bench --checkpoint "$gq" --layer 1 --tokens 1,3 --iters 2 --device cpu
if [ "$rc" -eq 0 ] && grep -q "^model: .*golden-qwen3-tiny layer 1 (H=256 " "$tmp/bench_ck.out" &&
    [ "$(grep -Ec '^ +(1|3)  [a-z0-9_]+ +[0-9]' "$tmp/bench_ck.out")" -eq 2 ] &&
    grep -Eq '^check vs cpu_ref: .*: ok$' "$tmp/bench_ck.out"; then
    ok "bench --checkpoint golden-qwen3-tiny --layer 1: two rows, check ok"
else
    fail "bench --checkpoint (exit $rc)" "$(cat "$tmp/bench_ck.out" "$tmp/bench_ck.err")"
fi
usage_error bench --checkpoint "$gq" --layer 999 --device cpu

# inspect explains a broken checkpoint: exit 1 and a problem line naming the cause
mkdir -p "$tmp/broken" && cp "$gq/config.json" "$tmp/broken/" && head -c 5000 "$gq/model.safetensors" >"$tmp/broken/model.safetensors"
run inspect_trunc inspect "$tmp/broken"
if [ "$rc" -eq 1 ] && grep -q '^problem: .*model.safetensors.*truncated' "$tmp/inspect_trunc.out"; then
    ok "inspect: a truncated model.safetensors is explained"
else
    fail "inspect of a truncated file (exit $rc)" "$(cat "$tmp/inspect_trunc.out")"
fi
cp "$gq/model.safetensors" "$tmp/broken/" && sed -e 's/"silu"/"relu"/' "$gq/config.json" >"$tmp/broken/config.json"
run inspect_act inspect "$tmp/broken"
if [ "$rc" -eq 1 ] && grep -q '^problem: unsupported: .*"hidden_act" = "relu"' "$tmp/inspect_act.out"; then
    ok "inspect: an unsupported hidden_act is explained"
else
    fail "inspect of hidden_act relu (exit $rc)" "$(cat "$tmp/inspect_act.out")"
fi
usage_error inspect
usage_error inspect a b
usage_error run "$gq" --input x --output y
usage_error run "$gq" --layer x --input a --output b
usage_error verify --checkpoint
