# round_common.sh — what the device-call scripts of rounds 15-24 start with, sourced after they
# set PARTS (the letters of the parts to run) and DEADLINE (seconds the whole call may take):
#   OUT      the folder for logs ($OUT on the device machine; lab-out elsewhere), created
#   has P    true when part P was asked for
#   lim S    S, or what is left of DEADLINE when that is less (at least 1): a step's timeout
#   unpack N...  extracts build-lab/N.tar.xz (build_device_bins.sh packs bins.tar.xz)
OUT=${OUT:-lab-out}; mkdir -p "$OUT"
t_start=$(date +%s)
has() { case "$PARTS" in *"$1"*) return 0 ;; esac; return 1; }
lim() { local left=$(( DEADLINE - ($(date +%s) - t_start) )); [ "$left" -lt "$1" ] && echo $(( left > 15 ? left : 1 )) || echo "$1"; }
unpack() {
  python3 -c "import sys, tarfile; [tarfile.open('build-lab/%s.tar.xz' % n).extractall() for n in sys.argv[1:]]" "$@"
}
