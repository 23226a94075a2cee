#!/usr/bin/env bash
# Runs each test binary given, shows its output, and fails if any binary fails or does not end
# with a "N passed, N failed" line. Prints the total as its own last line.
set -u
total_pass=0 total_fail=0 broken=0
for t in "$@"; do
    echo "== $t"
    out=$("$t" 2>&1); rc=$?
    printf '%s\n' "$out" | grep -v '^ok ' | tail -n 40
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n 1)
    if [ -z "$line" ]; then echo "!! $t: no 'N passed, N failed' line (exit $rc)"; broken=$((broken + 1)); continue; fi
    p=${line%% passed*}; f=${line#*, }; f=${f%% failed*}
    total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then echo "!! $t exited $rc"; broken=$((broken + 1)); fi
done
total_fail=$((total_fail + broken))
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
