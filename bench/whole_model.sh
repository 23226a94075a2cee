#!/bin/sh
# bench/whole_model.sh — a whole model's MoE layers in one device's memory (issue 9, part 3).
#
#   bench/whole_model.sh DIR [--device cuda|cpu] [--layers N] [--tokens T] [--workspace-mb M]
#                            [--shape "--hidden H --inter I --experts E --topk k --group g"]
#                            [--build BUILD] [--compare]
#
# 1. Writes a synthetic Qwen3-MoE checkpoint into DIR unless DIR/config.json exists
#    (BUILD/w4a8moe-synth-ckpt; default shape qwen3-30b-a3b: H 2048, I 768, E 128, k 8, g 128;
#    48 MoE layers are ~15 GB on disk; the free space is checked first).
# 2. `w4a8moe inspect DIR --tokens T`: the library's estimate (weights + one shared workspace).
# 3. `w4a8moe run DIR --all-layers --tokens T --workspace-mb M`: every layer loaded at once on
#    the device in one workspace of M MiB (default 2048), T tokens (default 16384) through each
#    in sequence; per layer the chunk size, time and an output checksum; then the device memory
#    (cudaMemGetInfo) against weights + workspace + I/O buffers.
# 4. Checks: the run succeeded, M <= 2048, and on CUDA the run's "memory check: ... ok" (peak
#    device memory over the start <= weights x 1.05 + the workspace + the I/O buffers). With
#    --compare (always on the CPU) the run is repeated with a workspace for all T tokens at once
#    and the per-layer checksums must be equal: chunked forwards give the unchunked output (on
#    the CPU bit for bit, as tests/test_workspace.c checks; on CUDA the line says whether).
#
# Small CPU version (seconds): bench/whole_model.sh /tmp/wm --device cpu --layers 4 --tokens 512 \
#     --workspace-mb 8 --shape "--hidden 256 --inter 128 --experts 16 --topk 4 --group 64"
set -eu

usage() { echo "usage: $0 DIR [--device cuda|cpu] [--layers N] [--tokens T] [--workspace-mb M] [--shape FLAGS] [--build BUILD] [--compare]" >&2; exit 2; }
[ $# -ge 1 ] || usage
dir=$1; shift
device=cuda layers=48 tokens=16384 wsmb=2048 shape="" build=build compare=0
while [ $# -gt 0 ]; do
    case $1 in
        --device) device=$2; shift 2 ;;
        --layers) layers=$2; shift 2 ;;
        --tokens) tokens=$2; shift 2 ;;
        --workspace-mb) wsmb=$2; shift 2 ;;
        --shape) shape=$2; shift 2 ;;
        --build) build=$2; shift 2 ;;
        --compare) compare=1; shift ;;
        *) usage ;;
    esac
done
[ "$device" = cpu ] && compare=1
cli=$build/w4a8moe synth=$build/w4a8moe-synth-ckpt
[ -x "$cli" ] && [ -x "$synth" ] || { echo "whole_model: $cli and $synth are needed (make BUILD=$build)" >&2; exit 1; }
fail=0
echo "whole_model: $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), device $device"
[ "$device" = cuda ] && command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

if [ ! -f "$dir/config.json" ]; then
    # bytes on disk: per layer E x 3 x H x I x (0.5 + 2/g) + the router; default shape ~311 MB
    need_mb=$(awk -v s="$shape" -v n="$layers" 'BEGIN { H=2048; I=768; E=128; g=128;
        m = split(s, f, " "); for (i = 1; i < m; i++) { if (f[i]=="--hidden") H=f[i+1]; if (f[i]=="--inter") I=f[i+1];
        if (f[i]=="--experts") E=f[i+1]; if (f[i]=="--group") g=f[i+1] }
        printf "%d", n * (E * 3 * H * I * (0.5 + 2 / g) + E * H * 2) / 1048576 + 1 }')
    mkdir -p "$dir"
    free_mb=$(df -Pm "$dir" | awk 'NR == 2 { print $4 }')
    echo "whole_model: writing a synthetic checkpoint of $layers layers ($need_mb MiB) into $dir ($free_mb MiB free)"
    [ "$free_mb" -gt $((need_mb + 512)) ] || { echo "whole_model: not enough disk space in $dir" >&2; exit 1; }
    # shellcheck disable=SC2086
    "$synth" "$dir" --layers "$layers" $shape
    du -sh "$dir"
else
    echo "whole_model: using the checkpoint already in $dir"
fi

echo "== inspect"
"$cli" inspect "$dir" --tokens "$tokens" --device "$device" | grep -E '^(architecture|experts|layers|memory|[0-9]+ problem)'

log=$(mktemp)
trap 'rm -f "$log" "$log.2"' EXIT
echo "== run --all-layers --tokens $tokens --workspace-mb $wsmb"
if ! "$cli" run "$dir" --all-layers --tokens "$tokens" --device "$device" --workspace-mb "$wsmb" | tee "$log"; then
    echo "whole_model: FAILED: the run failed"; fail=1
fi
[ "$wsmb" -le 2048 ] || { echo "whole_model: FAILED: the workspace ($wsmb MiB) is above 2 GiB"; fail=1; }
if [ "$device" = cuda ]; then
    grep -q '^memory check: .*: ok$' "$log" || { echo "whole_model: FAILED: the device memory check"; fail=1; }
fi

if [ "$compare" = 1 ] && [ "$fail" = 0 ]; then
    echo "== run --all-layers --tokens $tokens with a workspace for all tokens at once (no chunks)"
    "$cli" run "$dir" --all-layers --tokens "$tokens" --device "$device" > "$log.2" || { echo "whole_model: FAILED: the unchunked run"; fail=1; }
    grep -E '^workspace:|^total:' "$log.2"
    a=$(awk '/^ +[0-9]+ / { print $1, $7 }' "$log") b=$(awk '/^ +[0-9]+ / { print $1, $7 }' "$log.2")
    if [ -n "$a" ] && [ "$a" = "$b" ]; then
        echo "compare: every layer's output checksum is the same chunked and unchunked"
    elif [ "$device" = cpu ]; then
        echo "whole_model: FAILED: chunked and unchunked outputs differ on the CPU"; fail=1
    else
        echo "compare: chunked and unchunked outputs differ on $device (layers: $(printf '%s\n' "$a" "$b" | sort | uniq -u | awk '{print $1}' | sort -un | tr '\n' ' '))"
    fi
fi
[ "$fail" = 0 ] && echo "whole_model: ok" || echo "whole_model: FAILED"
exit "$fail"
