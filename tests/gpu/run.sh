#!/usr/bin/env bash
# make test-gpu: runs the GPU test binaries of build dir $1, then again under compute-sanitizer
# memcheck and racecheck (W4A8MOE_TEST_QUICK=1 shrinks the large cases there). Fails if any run
# fails, any binary lacks its "N passed, N failed" line, or a sanitizer reports an error.
#   tests/gpu/run.sh BUILD [all|tests|san]      (default all)
#   tests/gpu/run.sh BUILD san TOOL [NAME...]   one sanitizer (memcheck or racecheck) over the
#                                               named binaries (test_gpu_shared ...; default all):
#                                               the whole sanitizer pass in pieces that each fit a
#                                               time-limited session on a lent GPU
# SAN_TIMEOUT (seconds, default 600) bounds each sanitizer run.
set -u
build=${1:-build}
what=${2:-all}
tools="memcheck racecheck"
if [ "$what" = san ] && [ $# -ge 3 ]; then
    case "$3" in
        memcheck|racecheck) tools=$3 ;;
        *) echo "tests/gpu/run.sh: unknown sanitizer tool '$3' (memcheck or racecheck)"; exit 2 ;;
    esac
fi
bins=$(ls "$build"/tests-gpu/test_gpu_* 2>/dev/null)
if [ "$what" = san ] && [ $# -ge 4 ]; then
    bins=""
    for name in "${@:4}"; do
        b="$build/tests-gpu/$name"
        [ -x "$b" ] || { echo "tests/gpu/run.sh: no GPU test binary $b"; exit 2; }
        bins="$bins $b"
    done
fi
[ -n "$bins" ] || { echo "no GPU test binaries in $build/tests-gpu"; exit 1; }
here=$(dirname "$0")
if [ "$what" != san ]; then
    "$here/../run_suite.sh" $bins || exit 1
fi
[ "$what" = tests ] && exit 0
san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [ ! -x "$san" ]; then echo "compute-sanitizer not found: the sanitizer runs cannot run"; exit 1; fi
status=0
for tool in $tools; do
    for b in $bins; do
        echo "== compute-sanitizer --tool $tool $b"
        t0=$(date +%s)
        out=$(W4A8MOE_TEST_QUICK=1 timeout "${SAN_TIMEOUT:-600}" "$san" --tool "$tool" \
              --error-exitcode 86 "$b" 2>&1); rc=$?
        printf '%s\n' "$out" | grep -v '^ok ' | tail -n 15
        echo "   ($tool: exit $rc, $(( $(date +%s) - t0 )) s)"
        if [ "$rc" -ne 0 ]; then echo "!! $tool $b: exit $rc"; status=1; fi
    done
done
if [ "$status" -eq 0 ]; then
    if [ $# -ge 3 ]; then echo "test-gpu: $tools clean on$(for b in $bins; do printf ' %s' "${b##*/}"; done) (a part of the pass)"
    else echo "test-gpu: all runs and sanitizer runs clean"; fi
fi
exit $status
