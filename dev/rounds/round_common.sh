# round_common.sh — what the device-call scripts of rounds 15 on start with, sourced after they
# set PARTS (the letters of the parts to run) and DEADLINE (seconds the whole call may take):
#   OUT      the folder for logs ($OUT on the device machine; lab-out elsewhere), created
#   has P    true when part P was asked for
#   lim S    S, or what is left of DEADLINE when that is less (at least 1): a step's timeout
#   unpack N...  extracts build-lab/N.tar.xz (build_device_bins.sh packs bins.tar.xz)
#   gpu_tests B NAME...  the GPU test binaries and sanitizers (below)
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
# At most 8 files come back from $OUT: at exit, more than 7 are packed into one logs.tgz.
pack_out() {
  [ "$(ls "$OUT" | wc -l)" -le 7 ] && return
  tar -C "$OUT" -czf /tmp/round-logs.tgz . && rm -rf "${OUT:?}"/* && mv /tmp/round-logs.tgz "$OUT/logs.tgz"
}
trap pack_out EXIT
t_start=$(date +%s)
has() { case "$PARTS" in *"$1"*) return 0 ;; esac; return 1; }
lim() { local left=$(( DEADLINE - ($(date +%s) - t_start) )); [ "$left" -lt "$1" ] && echo $(( left > 15 ? left : 1 )) || echo "$1"; }
unpack() {
  python3 -c "import sys, tarfile; [tarfile.open('build-lab/%s.tar.xz' % n).extractall() for n in sys.argv[1:]]" "$@"
}
# gpu_tests B NAME...: B/tests-gpu/test_gpu_distinct (full), then each test_gpu_NAME (quick), then
# memcheck and racecheck on test_gpu_distinct (quick); logs in $OUT, their summaries printed.
gpu_tests() {
  local b=$1 t tool; shift
  timeout "$(lim 150)" "$b/tests-gpu/test_gpu_distinct" > "$OUT/test_gpu_distinct.log" 2>&1; echo "distinct rc=$?"
  grep -h "FAIL\|passed, " "$OUT/test_gpu_distinct.log" | tail -4
  for t in "$@"; do
    W4A8MOE_TEST_QUICK=1 timeout "$(lim 90)" "$b/tests-gpu/test_gpu_$t" > "$OUT/test_gpu_$t.log" 2>&1; echo "$t rc=$?"
    grep -h "FAIL\|passed, " "$OUT/test_gpu_$t.log" | tail -4
  done
  for tool in memcheck racecheck; do
    W4A8MOE_TEST_QUICK=1 SAN_TIMEOUT=$(lim 120) tests/gpu/run.sh "$b" san $tool test_gpu_distinct \
      > "$OUT/$tool.log" 2>&1; echo "$tool rc=$?"; grep -h "ERROR SUMMARY\|RACECHECK SUMMARY" "$OUT/$tool.log"
  done
}
