#!/usr/bin/env bash
# tests/cli/run.sh — the w4a8moe CLI tests: run the tool with arguments and compare what it
# prints (stdout and exit code) with tests/cli/*.expected for the deterministic outputs; check
# the structure of the others (bench numbers, verify seeds, compiled-in backends).
#
#   tests/cli/run.sh build/w4a8moe                       run (any build directory)
#   W4A8MOE_CLI_UPDATE=1 tests/cli/run.sh build/w4a8moe  rewrite the .expected files from the
#                                                        tool's output (then review the diff)
#
# Ends with "N passed, N failed"; exits non-zero when anything failed.
set -u
cli=${1:?usage: tests/cli/run.sh PATH/TO/w4a8moe}
[ -x "$cli" ] || { echo "tests/cli/run.sh: $cli is not an executable"; echo "0 passed, 1 failed"; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unset W4A8MOE_BACKEND W4A8MOE_LOG
passed=0 failed=0

ok()   { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; shift; for l in "$@"; do echo "     $l"; done; }

# run NAME ARGS...: runs the CLI, leaves stdout in $tmp/NAME.out, stderr in $tmp/NAME.err and
# the exit code in $rc
run() {
    local name=$1; shift
    "$cli" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
    rc=$?
}

# expect NAME FILTER ARGS...: stdout (through FILTER, a shell command) plus "exit N" must equal
# tests/cli/NAME.expected
expect() {
    local name=$1 filter=$2; shift 2
    run "$name" "$@"
    { eval "$filter" <"$tmp/$name.out"; echo "exit $rc"; } >"$tmp/$name.got"
    if [ "${W4A8MOE_CLI_UPDATE:-0}" = 1 ]; then cp "$tmp/$name.got" "$here/$name.expected"; fi
    if diff -u "$here/$name.expected" "$tmp/$name.got" >"$tmp/$name.diff" 2>&1; then
        ok "$name: w4a8moe $*"
    else
        fail "$name: w4a8moe $* (stdout + exit code differ from tests/cli/$name.expected)" \
            "$(head -n 30 "$tmp/$name.diff")" "stderr: $(head -n 5 "$tmp/$name.err")"
    fi
}

# usage_error ARGS...: exit code 2, nothing on stdout, exactly one line on stderr that starts
# with "w4a8moe"
usage_error() {
    run bad "$@"
    local lines
    lines=$(wc -l <"$tmp/bad.err")
    if [ "$rc" -eq 2 ] && [ ! -s "$tmp/bad.out" ] && [ "$lines" -eq 1 ] && grep -q '^w4a8moe' "$tmp/bad.err"; then
        ok "usage error: w4a8moe $* -> $(cat "$tmp/bad.err")"
    else
        fail "usage error: w4a8moe $* (want exit 2, empty stdout, one line on stderr)" \
            "exit $rc, $lines stderr lines: $(head -n 3 "$tmp/bad.err")" "stdout: $(head -n 3 "$tmp/bad.out")"
    fi
}

# ---- deterministic output ------------------------------------------------------------------
# the command list grows with each command (cli.h): checked by name below, not line by line
expect help "sed -e '/^commands:\$/,/^\$/{/^  [a-z]/d;}'" --help
for c in models explain bench verify; do
    if grep -Eq "^  $c +[a-z]" "$tmp/help.out"; then ok "--help lists $c"; else fail "--help does not list $c"; fi
done
for c in models explain bench verify; do expect "help_$c" cat "$c" --help; done
expect models cat models
expect models_json cat models --json
# the layer description is exact; the device line and the backend lines depend on the build
# and the machine, and are checked below
expect explain_deepseek "sed -e '/^device: /d' -e '/^backends, in priority order:/q'" \
    explain --model deepseek-v3
expect explain_flags "sed -e '/^device: /d' -e '/^backends, in priority order:/q'" \
    explain --hidden 320 --inter 160 --experts 8 --topk 2 --group 32 --act gelu_tanh \
    --dtype f16 --static-scales 0.01,0.02 --max-tokens 7

# The checks below that read the host's formats and verdicts pin --device cpu: the default,
# auto, picks cuda:0 on a machine with a GPU (checked at the end of this file).

# ---- explain: every compiled-in backend appears, cpu_ref accepts, one is selected ----------
run version --version
backends=$(sed -n 's/^experts backends: //p' "$tmp/version.out")
if [ "$rc" -eq 0 ] && [ -n "$backends" ] && grep -qw cpu_ref <<<"$backends"; then
    ok "--version lists the experts backends: $backends"
else
    fail "--version (exit $rc) does not list cpu_ref among the experts backends" "$(cat "$tmp/version.out")"
fi
run explain explain --model deepseek-v3 --device cpu
missing=""
for b in $backends; do grep -Eq "^  $b +(selected|accepted|rejected)" "$tmp/explain.out" || missing="$missing $b"; done
if [ "$rc" -eq 0 ] && [ -z "$missing" ]; then ok "explain lists every backend ($backends)"; else
    fail "explain --model deepseek-v3: exit $rc, backends missing:$missing" "$(cat "$tmp/explain.out")"; fi
if grep -Eq '^  cpu_ref +(selected|accepted \(not chosen: lower priority\))' "$tmp/explain.out"; then
    ok "explain: cpu_ref accepts deepseek-v3"; else fail "explain: cpu_ref's verdict" "$(grep cpu_ref "$tmp/explain.out")"; fi
n=$(grep -c '^  [a-z0-9_]* *selected' "$tmp/explain.out")
if [ "$n" -eq 1 ] && grep -q '^device: ' "$tmp/explain.out"; then ok "explain: exactly one backend selected, device named"; else
    fail "explain: $n backends selected (want 1), or no device line" "$(cat "$tmp/explain.out")"; fi
if grep -q '^  shared expert, if the layer has one' "$tmp/explain.out" &&
   grep -Eq '^    int4 x fp8 .*: cpu \(prepare/finalize: local\)' "$tmp/explain.out" &&
   grep -Eq '^    unquantised .*: cpu \(prepare/finalize: local\)' "$tmp/explain.out"; then
    ok "explain: the shared pipeline's backends"; else
    fail "explain --model deepseek-v3: no shared-expert lines naming cpu" "$(cat "$tmp/explain.out")"; fi
run forced explain --model tiny --backend cpu_ref --device cpu
if [ "$rc" -eq 0 ] && grep -Eq '^  cpu_ref +selected, forced' "$tmp/forced.out"; then ok "explain --backend cpu_ref: selected, forced"; else
    fail "explain --backend cpu_ref (exit $rc)" "$(cat "$tmp/forced.out")"; fi

# ---- bad flags and values: one line, exit 2, never a crash ---------------------------------
usage_error frobnicate
usage_error --frobnicate
usage_error bench --frob
usage_error bench --tokens 0
usage_error bench --tokens 1,,2
usage_error bench --tokens abc
usage_error bench --iters
usage_error bench --iters -1
usage_error bench --threads 100000
usage_error bench --seed -3
usage_error bench --model nosuchmodel
usage_error bench --backend nosuchbackend
usage_error bench --json=1
usage_error bench --device tpu
usage_error bench --device cuda:x
usage_error bench --layer 1
usage_error bench --model tiny --checkpoint "$here"
usage_error bench --env-sets "FOO=1"
usage_error bench --env-sets "W4A8MOE_SM90_STAGE"
usage_error bench --env-sets "W4A8MOE_SM90_STAGE=1;W4A8MOE_SM90_STAGE="
usage_error bench --env-sets "W4A8MOE_SM90_STAGE=1" --device cpu --model tiny --tokens 1
usage_error bench --env-sets "-;W4A8MOE_PDL=0"
usage_error bench --env-sets 'W4A8MOE_SM90_STAGE=1"'
for sets in "-;" "-;;W4A8MOE_SM90_STAGE=1" " ;-"; do # an empty set is refused by name, before the device check
    usage_error bench --env-sets "$sets"
    if grep -q "set [12] is empty" "$tmp/bad.err"; then ok "--env-sets '$sets': the empty set named"
    else fail "--env-sets '$sets': the error does not name the empty set" "$(cat "$tmp/bad.err")"; fi
done
usage_error run "$here" --layer 1 --input a --output b --device tpu
usage_error verify --checkpoint "$here" --device gpu
usage_error explain
usage_error explain --hidden 256
usage_error explain --model tiny --model tiny
usage_error explain --model tiny --group 48
usage_error explain --model tiny --act relu
usage_error explain --model tiny --dtype f64
usage_error explain --model tiny --static-scales 1
usage_error explain --model tiny --static-scales nan,1
usage_error explain --model tiny --ep-size 3
usage_error explain --model tiny --backend nosuchbackend
usage_error models extra
usage_error verify --quick=yes
usage_error verify --model
usage_error verify --backend nosuchbackend
run noargs
if [ "$rc" -eq 2 ] && [ ! -s "$tmp/noargs.out" ] && grep -q '^usage: w4a8moe' "$tmp/noargs.err"; then
    ok "no arguments: usage on stderr, exit 2"; else fail "no arguments: exit $rc" "$(head -n 3 "$tmp/noargs.err")"; fi

# ---- bench: structure and the check (not the timings) --------------------------------------
run bench bench --model tiny --tokens 1,4 --iters 3 --device cpu
num='[0-9]+(\.[0-9]+)?'
row_re="^ +(1|4)  [a-z0-9_]+ +$num +$num +$num +$num[GT] +$num +$num  (mem|fma) +3 +[0-9]\.[0-9]e[-+][0-9]+$"
rows=$(grep -Ec "$row_re" "$tmp/bench.out")
header=$(grep -c '^      T  backend      us/layer   tokens/s     GB/s   FLOP/s   floor us x floor  bound  iters   rel-L2$' "$tmp/bench.out")
if [ "$rc" -eq 0 ] && [ "$rows" -eq 2 ] && [ "$header" -eq 1 ] && grep -q '^model: tiny (H=256 I=128 E=8 k=2 g=64)' "$tmp/bench.out" &&
    grep -Eq '^machine: .*copy [0-9.]+ GB/s' "$tmp/bench.out" && grep -q '^weights: ' "$tmp/bench.out" &&
    grep -q '^device: cpu (.*)$' "$tmp/bench.out"; then
    ok "bench --model tiny --tokens 1,4 --iters 3: preamble, header and 2 rows"
else
    fail "bench table (exit $rc, $rows rows, $header header)" "$(cat "$tmp/bench.out")" "$(head -n 5 "$tmp/bench.err")"
fi
if grep -Eq '^check vs cpu_ref.*: max rel-L2 = [0-9.e+-]+ \(tolerance 2e-03\): ok$' "$tmp/bench.out"; then
    ok "bench: the check against cpu_ref passes"; else fail "bench: no passing check line" "$(tail -n 2 "$tmp/bench.out")"; fi
run bench_json bench --model tiny --tokens 1,3 --iters 2 --json --device cpu
lines=$(grep -c '^{.*"T": [13],.*"iters": 2,.*"floor_us": .*"check_ok": true}$' "$tmp/bench_json.out")
total=$(wc -l <"$tmp/bench_json.out")
if [ "$rc" -eq 0 ] && [ "$lines" -eq 2 ] && [ "$total" -eq 2 ]; then ok "bench --json: one object per T, checks pass"; else
    fail "bench --json (exit $rc, $lines good of $total lines)" "$(cat "$tmp/bench_json.out")"; fi
if command -v python3 >/dev/null; then
    if python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' "$tmp/bench_json.out" 2>"$tmp/json.err"; then
        ok "bench --json: every line parses as JSON"; else fail "bench --json: invalid JSON" "$(cat "$tmp/json.err")"; fi
fi

# ---- verify: every case passes, and a seed replays exactly ---------------------------------
run verify verify --model tiny --quick --seed 12345 --device cpu
cases=$(grep -c '^cpu_ref  ' "$tmp/verify.out")
if [ "$rc" -eq 0 ] && grep -Eq '^verify: [0-9]+ ok, 0 failed, [0-9]+ skipped \(seed 12345\)$' "$tmp/verify.out" &&
    grep -q '^cpu_ref    tiny T=1 .* ok (reference' "$tmp/verify.out" && [ "$cases" -ge 15 ] &&
    ! grep -q 'FAIL' "$tmp/verify.out"; then
    ok "verify --model tiny --quick: $(tail -n 1 "$tmp/verify.out")"
else
    fail "verify --model tiny --quick (exit $rc, $cases cpu_ref lines)" "$(cat "$tmp/verify.out")"
fi
run verify2 verify --model tiny --quick --seed 12345 --device cpu
if cmp -s "$tmp/verify.out" "$tmp/verify2.out"; then ok "verify --seed replays bit for bit"; else
    fail "verify --seed 12345 twice gives different output" "$(diff "$tmp/verify.out" "$tmp/verify2.out" | head -n 10)"; fi

# ---- checkpoints: inspect, run, verify --checkpoint (tests/cli/checkpoint.sh) --------------
. "$here/checkpoint.sh"

# ---- --device auto (the default): cuda:0 when the machine has one, else the host -----------
# Every command says which device it used; on a machine without a CUDA device auto is the host.
auto_re='^device: (cpu \(.*\)|cuda:0 \(.*\)), chosen by --device auto$'
have_gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU 0'; then have_gpu=1; fi
run auto_explain explain --model tiny
if [ "$rc" -eq 0 ] && grep -Eq "$auto_re" "$tmp/auto_explain.out"; then ok "explain: the device line says auto chose it"; else
    fail "explain --model tiny (exit $rc)" "$(grep '^device' "$tmp/auto_explain.out")"; fi
run auto_bench bench --model tiny --tokens 2 --iters 2
if [ "$rc" -eq 0 ] && grep -Eq "$auto_re|^device: cuda:0 \(.*\), chosen by --device auto, " "$tmp/auto_bench.out"; then
    ok "bench: the device line says auto chose it"; else fail "bench --model tiny (exit $rc)" "$(head -n 3 "$tmp/auto_bench.out")"; fi
if [ "$have_gpu" -eq 0 ]; then
    if grep -q '^device: cpu' "$tmp/auto_explain.out" "$tmp/auto_bench.out"; then ok "no GPU: auto is the host"; else
        fail "no GPU, but auto did not choose the host" "$(grep -h '^device' "$tmp"/auto_*.out)"; fi
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
