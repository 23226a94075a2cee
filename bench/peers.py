#!/usr/bin/env python3
"""bench/peers.py — our whole W4A8 MoE layer against PyTorch's grouped GEMMs, side by side on one
GPU, on the same routing, every contender with a cold L2; one table with the floor and ratios.

Contenders, per built-in model (`w4a8moe models`) and token count T:
  ours  the whole layer through the Python binding (device="cuda"): quantise, dispatch, GEMM1,
        activation, requantise, GEMM2, combine; int4 weights with bf16 group scales.
  fp8   torch._scaled_grouped_mm, W8A8: e4m3 weights with per-row f32 scales, e4m3 activations
        with per-token scales. GEMM1 [rows, H] x [E, H, 2I] and GEMM2 [rows, I] x [E, I, H] ONLY
        (no quantisation, routing, permutation, activation or combine: those are free for it).
  bf16  torch._grouped_mm on bf16, the same two GEMMs only.
Routing: the model's router (w4a8moe.route) on random logits from a fixed seed; every contender
sees the same expert ids; the peers get the rows already grouped by expert (offs, int32).

Floor (docs/PERFORMANCE.md): max(bytes / BW, flops / F8), bytes = experts hit * 3HI * (0.5 + 2/g) +
T*H*2*2 (bf16 in and out), flops = 2 * T * k * 3HI; BW = a 1 GiB device copy (read + write)
and F8 = torch._scaled_mm on e4m3 8192^3 (cuBLASLt), both measured in the same run. The peers'
time/floor is against the same W4A8 floor (what the layer could take at best).

Cold L2 (docs/PERFORMANCE.md): each contender rotates over copies of its weights so that the bytes
touched between two uses of one copy exceed twice the L2 (50 MB on the H100); copies are capped by
free memory, and a cell says so when the cap bites. Timing: CUDA events around each call, the
median of N calls; a GPU sleep is queued first so the host's launch overhead stays hidden.

Robustness: every model runs in its own child process (a CUDA error there cannot take the other
models down); each finished cell is streamed back at once; a cell that cannot run says why
("n/a: ...") instead of failing the run; a time budget (default 400 s, --quick 150 s) skips
what is left rather than overrun the device call.

Usage:
  python3 bench/peers.py [--models a,b] [--tokens 1,16,...] [--iters N] [--quick]
                         [--out docs/peers] [--budget S] [--contenders ours,fp8,bf16]
                         [--backend NAME] [--dry-run]
  --dry-run needs neither torch nor numpy: it prints the plan (memory, copies, iterations,
  estimated floors with an H100's figures (docs/PERFORMANCE.md)) and the table skeleton.
Outputs: a markdown table on stdout and, with --out P, P.md and P.json.
"""
import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python"))

from w4a8moe.models import MODELS  # noqa: E402  (pure Python: no numpy, torch or library)

DEFAULT_TOKENS = [1, 16, 64, 256, 1024, 4096, 16384]
DEFAULT_MODELS = [m for m in MODELS if m != "tiny"]
CONTENDERS = ["ours", "fp8", "bf16"]
L2_BYTES = 50e6                      # H100 L2 (docs/PERFORMANCE.md)
ASSUMED_BW, ASSUMED_F8 = 2.94e12, 1316e12   # an H100 (docs/PERFORMANCE.md): only for --dry-run
MEM_MARGIN = 3 << 30                 # bytes kept free for the allocator, cuBLAS workspaces, ...
SLEEP_CYCLES_PER_ITER = 200_000      # at least ~100 us of GPU sleep queued per timed call
CLOCK_GHZ = 1.98                     # H100 SXM boost clock, to turn host microseconds into cycles
SEED = 1234

# ---- the plan (pure Python) ---------------------------------------------------------------------


def expected_hit(E, k, T):
    """Expected distinct experts hit by T tokens routed to k of E uniformly."""
    return E * (1.0 - (1.0 - k / E) ** T)


def bytes_per_expert(m, kind):
    """Weight bytes of one expert (gate + up + down) in a contender's format."""
    H, I, g = m["hidden"], m["inter"], m["group_size"]
    if kind == "ours":
        return 3 * H * I * (0.5 + 2.0 / g)         # int4 + bf16 group scales
    if kind == "fp8":
        return 3 * H * I + 4 * (2 * I + H)         # e4m3 + f32 per-row scales
    return 3 * H * I * 2                            # bf16


def floor_of(m, T, hit, bw, f8):
    """(floor in us, 'mem' or 'compute', bytes, flops) of the whole layer (docs/PERFORMANCE.md)."""
    H, I, k = m["hidden"], m["inter"], m["top_k"]
    nbytes = hit * bytes_per_expert(m, "ours") + T * H * 2 * 2
    flops = 2.0 * T * k * 3 * H * I
    t_mem, t_cmp = nbytes / bw, flops / f8
    return max(t_mem, t_cmp) * 1e6, ("mem" if t_mem >= t_cmp else "compute"), nbytes, flops


def copies_needed(touched, l2=L2_BYTES):
    """Copies to rotate over so that >= 2*L2 bytes pass between two uses of one copy."""
    if touched >= 2 * l2:
        return 1
    return int(math.ceil(2 * l2 / max(touched, 1.0))) + 1


def iters_for(T, base):
    """Fewer calls at large T, where one call is long and the median settles fast."""
    return max(3, min(base, int(base * 2048 / T)))


def activation_bytes(m, kind, T):
    """Device bytes of one T's inputs and outputs for a contender."""
    H, I, k = m["hidden"], m["inter"], m["top_k"]
    rows = T * k
    if kind == "ours":
        return T * H * 2 * 2 + rows * 8
    if kind == "fp8":  # A1, out1, A2, out2, scales
        return rows * (H + 2 * I * 2 + I + H * 2 + 8)
    return rows * (H * 2 + 2 * I * 2 + I * 2 + H * 2)


def plan_model(name, tokens, base_iters):
    m = MODELS[name]
    E, k = m["experts"], m["top_k"]
    rows = []
    for T in tokens:
        hit = expected_hit(E, k, T)
        fl, bound, _, _ = floor_of(m, T, hit, ASSUMED_BW, ASSUMED_F8)
        rows.append(dict(T=T, rows=T * k, hit=hit, floor_us=fl, bound=bound,
                         iters=iters_for(T, base_iters)))
    mem = {}
    for kind in CONTENDERS:
        touched = expected_hit(E, k, min(tokens)) * bytes_per_expert(m, kind)
        per_copy = E * bytes_per_expert(m, kind)
        mem[kind] = dict(copies=copies_needed(touched), copy_gb=per_copy / 1e9,
                         act_gb=activation_bytes(m, kind, max(tokens)) / 1e9,
                         touched_mb=touched / 1e6)
    return m, rows, mem


def print_plan(args):
    print(f"plan (dry run; floors use an H100's figures BW {ASSUMED_BW / 1e12:.2f} TB/s, "
          f"F8 {ASSUMED_F8 / 1e12:.0f} TFLOP/s; L2 rotation >= {2 * L2_BYTES / 1e6:.0f} MB)")
    total_calls = 0
    for name in args.models:
        m, rows, mem = plan_model(name, args.tokens, args.iters)
        print(f"\n{name}: H={m['hidden']} I={m['inter']} E={m['experts']} k={m['top_k']} "
              f"g={m['group_size']} routing={m['routing']}")
        for kind, p in mem.items():
            print(f"  {kind:5s} weights {p['copy_gb']:7.2f} GB/copy, touched at "
                  f"T={min(args.tokens)} {p['touched_mb']:8.1f} MB -> {p['copies']} copies "
                  f"({p['copies'] * p['copy_gb']:.1f} GB) + activations {p['act_gb']:.2f} GB at "
                  f"T={max(args.tokens)}")
        for r in rows:
            print(f"  T={r['T']:6d} rows={r['rows']:7d} hit~{r['hit']:6.1f} floor~"
                  f"{r['floor_us']:9.1f} us ({r['bound']}) iters={r['iters']}")
            total_calls += r["iters"] * len(args.contenders)
    print(f"\n{total_calls} timed calls in all")
    print("\n" + render_markdown({"cells": [], "meta": {}}, args, skeleton=True))


# ---- output -------------------------------------------------------------------------------------

COLUMNS = ["model", "T", "hit", "floor µs", "bound", "ours µs", "ours ×floor", "ours GB/s",
           "ours TFLOP/s", "fp8 µs", "fp8 ×floor", "bf16 µs", "bf16 ×floor", "fp8/ours",
           "bf16/ours"]


def _fmt(v, nd=1):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if v >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{nd}f}"


def _cell_row(c):
    res = c.get("results", {})

    def us(kind):
        r = res.get(kind)
        return r.get("us") if r else None

    def na(kind):
        r = res.get(kind)
        if r is None:
            return "—"
        return "n/a" if r.get("us") is None else _fmt(r["us"])

    fl = c.get("floor_us")
    ours = us("ours")
    row = [c["model"], str(c["T"]), str(c.get("hit", "—")), _fmt(fl), c.get("bound", "—"),
           na("ours"), _fmt(ours / fl, 2) if ours and fl else "—",
           _fmt(c["bytes"] / ours / 1e3, 0) if ours and c.get("bytes") else "—",
           _fmt(c["flops"] / ours / 1e6, 1) if ours and c.get("flops") else "—"]
    for kind in ("fp8", "bf16"):
        t = us(kind)
        row += [na(kind), _fmt(t / fl, 2) if t and fl else "—"]
    for kind in ("fp8", "bf16"):
        t = us(kind)
        row.append(_fmt(t / ours, 2) + "×" if t and ours else "—")
    return row


def render_markdown(result, args, skeleton=False):
    meta = result.get("meta", {})
    lines = ["# w4a8moe vs PyTorch grouped GEMMs (bench/peers.py)", ""]
    if skeleton:
        lines += ["(skeleton: a real run fills the card, date, commit, BW, F8 and the cells)", ""]
    else:
        lines += [
            f"card: {meta.get('device', '?')} · torch {meta.get('torch', '?')} · "
            f"{meta.get('date', '?')} · commit {meta.get('commit', '?')} · ours: "
            f"{meta.get('lib', '?')}",
            f"BW {meta.get('bw', 0) / 1e12:.2f} TB/s (1 GiB device copy, read + write) · "
            f"F8 {meta.get('f8', 0) / 1e12:.0f} TFLOP/s (torch._scaled_mm e4m3 8192³) · "
            f"cold L2: rotation over weight copies, ≥ {2 * L2_BYTES / 1e6:.0f} MB between reuses",
            ""]
    lines += [
        "ours = the whole layer (quantise, dispatch, GEMM1, SiLU·up, requantise, GEMM2, combine) "
        "through the Python binding; fp8 = `torch._scaled_grouped_mm` (W8A8, per-row/per-token "
        "scales) and bf16 = `torch._grouped_mm`: **the two expert GEMMs only**. Same routing for "
        "all (the model's router on random logits). µs = median of N calls with CUDA events; "
        "×floor = time / floor; fp8/ours, bf16/ours = our speedup.", ""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
    cells = result.get("cells", [])
    if skeleton:
        for name in args.models:
            for T in args.tokens:
                dots = ["…"] * (len(COLUMNS) - 2)
                lines.append("| " + " | ".join([name, str(T)] + dots) + " |")
    for c in cells:
        lines.append("| " + " | ".join(_cell_row(c)) + " |")
    notes = []
    for c in cells:
        for kind, r in c.get("results", {}).items():
            if r.get("note"):
                notes.append(f"- {c['model']} T={c['T']} {kind}: {r['note']}")
    for n in result.get("notes", []):
        notes.append(f"- {n}")
    if notes:
        lines += ["", "Notes:"] + notes
    return "\n".join(lines)


def write_outputs(result, args):
    text = render_markdown(result, args)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
        with open(args.out + ".md", "w") as f:
            f.write(text + "\n")
        with open(args.out + ".json", "w") as f:
            json.dump(result, f, indent=1)
    return text


# ---- the parent: no CUDA here, one child per model ---------------------------------------------


def git_commit():
    try:
        r = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        if r.returncode == 0:
            return r.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def run_child(spec, timeout, sink):
    """Runs this script as a child with spec; calls sink(kind, obj) for each @@ line, echoes the
    rest. Returns (exit code, or 'timeout' when the watchdog killed it, and its last lines)."""
    import threading
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    fired = []
    watchdog = threading.Timer(max(1.0, timeout), lambda: (fired.append(1), proc.kill()))
    watchdog.start()
    tail = []
    try:
        for line in proc.stdout:
            if line.startswith("@@"):
                kind, _, payload = line[2:].partition(" ")
                try:
                    sink(kind, json.loads(payload))
                except ValueError:
                    tail = (tail + [line.rstrip()])[-8:]
            else:
                sys.stdout.write("  | " + line)
                sys.stdout.flush()
                tail = (tail + [line.rstrip()])[-8:]
        rc = proc.wait()
    finally:
        watchdog.cancel()
    return ("timeout" if fired else rc), tail


def run_parent(args):
    t_start = time.time()
    deadline = t_start + args.budget
    result = {"meta": {"date": datetime.date.today().isoformat(),
                       "commit": args.commit or git_commit(),
                       "tokens": args.tokens, "models": args.models, "iters": args.iters,
                       "contenders": args.contenders},
              "cells": [], "notes": []}
    calib = {}

    def sink_calib(kind, obj):
        if kind == "calib":
            calib.update(obj)

    rc, tail = run_child({"role": "calibrate"}, min(120, args.budget), sink_calib)
    if "bw" not in calib:
        print(f"calibration failed (exit {rc}):\n" + "\n".join(tail), file=sys.stderr)
        result["notes"].append(f"calibration failed (exit {rc}): {' / '.join(tail[-3:])}")
        write_outputs(result, args)
        return 1
    result["meta"].update(calib)
    if calib.get("f8_note"):
        result["notes"].append(calib["f8_note"])
    print(f"device {calib['device']}, torch {calib['torch']}: BW {calib['bw'] / 1e12:.2f} TB/s, "
          f"F8 {calib['f8'] / 1e12:.0f} TFLOP/s, free {calib['free'] / 2**30:.1f} GiB", flush=True)

    for name in args.models:
        cells = {}

        def sink(kind, obj, cells=cells):
            if kind == "cell":
                key = obj["T"]
                if key not in cells:
                    cells[key] = {k: v for k, v in obj.items() if k not in ("contender", "res")}
                    cells[key]["results"] = {}
                cells[key]["results"][obj["contender"]] = obj["res"]
                r = obj["res"]
                shown = f"{r['us']:.1f} us" if r.get("us") is not None else r.get("note", "n/a")
                print(f"{name:16s} T={obj['T']:6d} {obj['contender']:5s} {shown}", flush=True)
            elif kind == "note":
                result["notes"].append(f"{name}: {obj}")
            elif kind == "lib":
                result["meta"]["lib"] = obj

        left = deadline - time.time()
        if left < 10:
            result["notes"].append(f"{name}: skipped, the time budget ({args.budget:.0f} s) "
                                   "is spent")
            continue
        spec = {"role": "model", "model": name, "tokens": args.tokens, "iters": args.iters,
                "contenders": args.contenders, "bw": calib["bw"], "f8": calib["f8"],
                "deadline": deadline - 5, "backend": args.backend, "seed": args.seed}
        rc, tail = run_child(spec, left, sink)
        if rc != 0:
            result["notes"].append(f"{name}: child exit {rc}; last lines: {' / '.join(tail[-3:])}")
        for T in args.tokens:
            if T in cells:
                c = cells[T]
                for kind in args.contenders:
                    c["results"].setdefault(kind, {"us": None, "note": "n/a: did not run "
                                                   f"(child exit {rc})"})
                result["cells"].append(c)
        write_outputs(result, args)  # after every model: a killed run keeps what it measured
    result["meta"]["wall_s"] = round(time.time() - t_start, 1)
    print("\n" + write_outputs(result, args))
    return 0


# ---- the children: everything that touches torch and CUDA ---------------------------------------


def emit(kind, obj):
    print(f"@@{kind} {json.dumps(obj)}", flush=True)


class Timer:
    """Median time of calls rotating over copies, CUDA events around each call."""

    def __init__(self, torch):
        self.torch = torch
        self.sleep = getattr(torch.cuda, "_sleep", None)

    def __call__(self, fns, iters, warmup=3):
        torch = self.torch
        fns[0]()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(1, warmup):
            fns[i % len(fns)]()
        warm_us = (time.perf_counter() - t0) * 1e6 / max(1, warmup - 1)
        torch.cuda.synchronize()
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(iters)]
        # sleep long enough to cover queueing every call at 3x the host time seen in warm-up
        per_call = max(SLEEP_CYCLES_PER_ITER, int(3 * warm_us * CLOCK_GHZ * 1e3))
        cycles = min(per_call * iters, 400_000_000)
        if self.sleep:  # keeps the GPU busy while the host queues the calls
            self.sleep(cycles)
        t0 = time.perf_counter()
        for i in range(iters):
            s, e = ev[i]
            s.record()
            fns[(warmup + i) % len(fns)]()
            e.record()
        self.host_us = (time.perf_counter() - t0) * 1e6 / iters
        torch.cuda.synchronize()
        us = [s.elapsed_time(e) * 1e3 for s, e in ev]
        med = statistics.median(us)
        # the queue ran dry when queuing took longer than the sleep and each call's GPU time:
        # then the events also timed the host's launch gaps
        slept_us = cycles / (CLOCK_GHZ * 1e3) if self.sleep else 0.0
        self.launch_bound = self.host_us * iters > slept_us + med * iters
        return med, min(us), max(us)

    def stamp(self, res):
        """Adds the host's queueing time per call, and a note when it may have shown."""
        res["host_us"] = round(self.host_us, 1)
        if self.launch_bound:
            note = (f"host queueing ({self.host_us:.0f} us/call) outran the GPU: time may include "
                    "launch gaps")
            res["note"] = "; ".join(x for x in (res.get("note"), note) if x)
        return res


def child_calibrate():
    import torch
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    timer = Timer(torch)
    out = {"device": props.name, "torch": torch.__version__, "sms": props.multi_processor_count}
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device=dev)
    b = torch.empty_like(a)
    a.fill_(1)
    t_copy, _, _ = timer([lambda: b.copy_(a)], 10)
    out["bw"] = 2 * n / (t_copy * 1e-6)  # read + write
    a = b = None  # frees them (the timed lambda holds the names)
    try:
        N = 8192
        x = (torch.randn(N, N, device=dev) * 0.5).to(torch.float8_e4m3fn)
        y = (torch.randn(N, N, device=dev) * 0.5).to(torch.float8_e4m3fn).t()  # column-major
        one = torch.ones((), device=dev, dtype=torch.float32)
        t_mm, _, _ = timer([lambda: torch._scaled_mm(x, y, scale_a=one, scale_b=one,
                                                     out_dtype=torch.bfloat16)], 10)
        out["f8"] = 2.0 * N ** 3 / (t_mm * 1e-6)
        x = y = None
    except Exception as e:  # noqa: BLE001
        out["f8"] = ASSUMED_F8
        out["f8_note"] = (f"F8 NOT measured ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                          f"the H100's {ASSUMED_F8 / 1e12:.0f} TFLOP/s used")
    torch.cuda.empty_cache()
    out["free"], out["total"] = torch.cuda.mem_get_info()
    emit("calib", out)


class Cell:
    """Per (model, T): the routing every contender shares, and the floor."""

    def __init__(self, m, T, ids_np, wts_np, bw, f8):
        import numpy as np
        self.T, self.ids, self.wts = T, ids_np, wts_np
        E = m["experts"]
        valid = ids_np[ids_np >= 0]
        self.counts = np.bincount(valid, minlength=E).astype(np.int64)
        self.hit = int((self.counts > 0).sum())
        self.rows = int(self.counts.sum())
        self.floor_us, self.bound, self.bytes, self.flops = floor_of(m, T, self.hit, bw, f8)

    def header(self, name):
        return {"model": name, "T": self.T, "rows": self.rows, "hit": self.hit,
                "floor_us": self.floor_us, "bound": self.bound, "bytes": self.bytes,
                "flops": self.flops}


def _rand_fp8(torch, shape, dev):
    """Random finite e4m3 values in about [-1.9, 1.9]: clearing bit 6 keeps the exponent below
    8, so no NaN code (0x7f/0xff) can appear; 1 byte per element, no float temporary."""
    u = torch.randint(0, 255, shape, dtype=torch.uint8, device=dev)
    u.bitwise_and_(0xBF)
    return u.view(torch.float8_e4m3fn)


def _offsets(torch, counts, dev, pad=1):
    c = [int(-(-int(v) // pad) * pad) for v in counts]
    offs = torch.tensor(c, dtype=torch.int64).cumsum(0).to(torch.int32).to(dev)
    return offs, sum(c)


def _fit_copies(torch, need, per_copy, act):
    free, _ = torch.cuda.mem_get_info()
    room = free - MEM_MARGIN - act
    return max(0, min(need, int(room // max(per_copy, 1)))), free


def _copies_note(n, need, touched):
    if n >= need:
        return ""
    return (f"L2 rotation short: {n} of {need} weight copies fit in memory "
            f"({touched / 1e6:.0f} MB touched per copy; time may be warm-cache optimistic)")


def _peer_calls(torch, kind):
    """Candidate ways to call the peer op, first that works wins (APIs moved between
    versions): each is (name, f(a, b, sa, sb, offs) -> out)."""
    F = torch.nn.functional
    out = []
    if kind == "fp8":
        if hasattr(torch, "_scaled_grouped_mm"):
            out.append(("torch._scaled_grouped_mm", lambda a, b, sa, sb, offs:
                        torch._scaled_grouped_mm(a, b, sa, sb, offs=offs,
                                                 out_dtype=torch.bfloat16)))
        st = getattr(F, "ScalingType", None)
        if hasattr(F, "scaled_grouped_mm") and st is not None:
            rw = st.RowWise
            out.append(("F.scaled_grouped_mm(RowWise)", lambda a, b, sa, sb, offs:
                        F.scaled_grouped_mm(a, b, sa, rw, sb, rw, offs=offs,
                                            output_dtype=torch.bfloat16)))
    else:
        if hasattr(torch, "_grouped_mm"):
            out.append(("torch._grouped_mm", lambda a, b, sa, sb, offs:
                        torch._grouped_mm(a, b, offs=offs, out_dtype=torch.bfloat16)))
            out.append(("torch._grouped_mm(no out_dtype)", lambda a, b, sa, sb, offs:
                        torch._grouped_mm(a, b, offs=offs)))
    return out


def run_peer(torch, kind, name, m, cells, args, timer):
    """fp8 or bf16 grouped GEMMs for every T of one model; emits one cell per T."""
    dev = torch.device("cuda")
    E, H, I = m["experts"], m["hidden"], m["inter"]
    calls = _peer_calls(torch, kind)
    op = "_scaled_grouped_mm" if kind == "fp8" else "_grouped_mm"
    if not calls:
        for c in cells:
            emit("cell", dict(c.header(name), contender=kind, res={
                "us": None, "note": f"n/a: this torch has no {op}"}))
        return
    touched = min(c.hit for c in cells) * bytes_per_expert(m, kind)
    need = copies_needed(touched)
    per_copy = E * bytes_per_expert(m, kind)
    act = max(activation_bytes(m, kind, c.T) for c in cells) * 1.3
    n, free = _fit_copies(torch, need, per_copy, act)
    if n == 0:
        note = (f"n/a: one copy of the {kind} weights ({per_copy / 1e9:.1f} GB) + activations "
                f"({act / 1e9:.1f} GB) does not fit in {free / 1e9:.1f} GB free")
        for c in cells:
            emit("cell", dict(c.header(name), contender=kind, res={"us": None, "note": note}))
        return
    copies, oom = [], ""
    for _ in range(n):  # [E, N, K] row-major, passed transposed (column-major [E, K, N])
        try:
            if kind == "fp8":
                w13, w2 = _rand_fp8(torch, (E, 2 * I, H), dev), _rand_fp8(torch, (E, H, I), dev)
                s13 = torch.rand(E, 2 * I, device=dev) * 0.01 + 0.001
                s2 = torch.rand(E, H, device=dev) * 0.01 + 0.001
            else:
                w13 = torch.randn(E, 2 * I, H, device=dev, dtype=torch.bfloat16)
                w2 = torch.randn(E, H, I, device=dev, dtype=torch.bfloat16)
                s13 = s2 = None
        except torch.cuda.OutOfMemoryError as e:
            oom = str(e).splitlines()[0][:160]
            break
        copies.append((w13.transpose(-2, -1), w2.transpose(-2, -1), s13, s2))
        del w13, w2
    if not copies:
        for c in cells:
            emit("cell", dict(c.header(name), contender=kind,
                              res={"us": None, "note": f"n/a: weights: out of memory: {oom}"}))
        return
    n = len(copies)
    torch.cuda.empty_cache()
    note_copies = _copies_note(n, need, touched)
    chosen = None
    for c in cells:
        if time.time() > args["deadline"]:
            emit("cell", dict(c.header(name), contender=kind,
                              res={"us": None, "note": "n/a: time budget spent"}))
            continue
        res = {"copies": n, "copies_needed": need}
        try:
            res.update(_time_peer(torch, kind, c, copies, calls, chosen, args, timer, m))
            chosen = res.get("call", chosen)
        except Exception as e:  # noqa: BLE001 (every failure becomes a cell note)
            res.update(us=None, note=f"n/a: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        if note_copies and res.get("us") is not None:
            res["note"] = "; ".join(x for x in (res.get("note"), note_copies) if x)
        emit("cell", dict(c.header(name), contender=kind, res=res))
        torch.cuda.empty_cache()
    del copies
    torch.cuda.empty_cache()


def _time_peer(torch, kind, c, copies, calls, chosen, args, timer, m):
    dev = torch.device("cuda")
    H, I = m["hidden"], m["inter"]
    errors = []
    # the exact rows first; rows padded to 16 per expert only if the op refuses ragged groups
    for pad in (1, 16):
        offs, rows = _offsets(torch, c.counts, dev, pad)
        if kind == "fp8":
            a1, a2 = _rand_fp8(torch, (rows, H), dev), _rand_fp8(torch, (rows, I), dev)
            sa1 = torch.rand(rows, device=dev) * 0.01 + 0.001
            sa2 = torch.rand(rows, device=dev) * 0.01 + 0.001
        else:
            a1 = torch.randn(rows, H, device=dev, dtype=torch.bfloat16)
            a2 = torch.randn(rows, I, device=dev, dtype=torch.bfloat16)
            sa1 = sa2 = None
        order = sorted(calls, key=lambda nc: nc[0] != chosen)
        for call_name, f in order:
            def run(cp, f=f):
                w13t, w2t, s13, s2 = cp
                f(a1, w13t, sa1, s13, offs)
                f(a2, w2t, sa2, s2, offs)
            try:
                run(copies[0])
                torch.cuda.synchronize()
            except Exception as e:  # noqa: BLE001
                errors.append(f"{call_name}: {str(e).splitlines()[0][:160]}")
                continue
            fns = [lambda cp=cp: run(cp) for cp in copies]
            iters = iters_for(c.T, args["iters"])
            med, lo, hi = timer(fns, iters)
            res = timer.stamp({"us": med, "min_us": lo, "max_us": hi, "iters": iters,
                               "call": call_name})
            if pad > 1:
                res["note"] = f"rows padded to 16 per expert ({rows} rows, not {c.rows})"
            return res
        a1 = a2 = None
    raise RuntimeError("; ".join(errors) or "no call variant")


def _our_weights(torch, m, seed):
    """Random int4 weights (uniform nibbles) and bf16 scales in [0.004, 0.02), made on the GPU
    (fast) and brought to the host, where the C API reads them."""
    dev = torch.device("cuda")
    E, H, I, g = m["experts"], m["hidden"], m["inter"], m["group_size"]
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)

    def packed(*shape):
        return torch.randint(-2 ** 31, 2 ** 31 - 1, shape, dtype=torch.int32, device=dev,
                             generator=gen).cpu()

    def scale(*shape):
        s = torch.rand(*shape, device=dev, generator=gen) * 0.016 + 0.004
        return s.to(torch.bfloat16).cpu()

    return {"w13_packed": packed(E, 2 * I, H // 8), "w13_scale": scale(E, 2 * I, H // g),
            "w2_packed": packed(E, H, I // 8), "w2_scale": scale(E, H, I // g)}


def run_ours(torch, name, m, cells, args, timer):
    import w4a8moe
    dev = torch.device("cuda")
    emit("lib", f"libw4a8moe {w4a8moe.version()} ({w4a8moe.lib_path()})")
    try:
        weights = _our_weights(torch, m, args["seed"])
    except Exception as e:  # noqa: BLE001
        note = f"n/a: making weights: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        for c in cells:
            emit("cell", dict(c.header(name), contender="ours", res={"us": None, "note": note}))
        return
    tmax = max(c.T for c in cells)
    touched = min(c.hit for c in cells) * bytes_per_expert(m, "ours")
    need = copies_needed(touched)
    layers, note = [], ""
    torch.cuda.empty_cache()
    free0, _ = torch.cuda.mem_get_info()
    try:
        kw = dict(model=name, weights=weights, max_tokens=tmax, device="cuda", io_dtype="bf16")
        if args.get("backend"):
            kw["backend"] = args["backend"]
        layers.append(w4a8moe.Layer(**kw))
        free1, _ = torch.cuda.mem_get_info()
        per_layer = max(free0 - free1, 1)
        act = max(activation_bytes(m, "ours", c.T) for c in cells) * 1.3
        n = max(1, min(need, 1 + int((free1 - MEM_MARGIN - act) // per_layer)))
        while len(layers) < n:
            layers.append(w4a8moe.Layer(**kw))
        emit("note", f"ours: backend {layers[0].backend}/{layers[0].prepfin}, "
                     f"{per_layer / 1e9:.2f} GB per layer (weights + workspace for T={tmax}), "
                     f"{len(layers)} of {need} copies")
    except Exception as e:  # noqa: BLE001
        if not layers:
            note = f"n/a: Layer(): {type(e).__name__}: {str(e).splitlines()[0][:300]}"
            for c in cells:
                emit("cell", dict(c.header(name), contender="ours", res={"us": None, "note": note}))
            return
        note = f"stopped at {len(layers)} copies: {str(e).splitlines()[0][:120]}"
    del weights
    note_copies = _copies_note(len(layers), need, touched)
    for c in cells:
        if time.time() > args["deadline"]:
            emit("cell", dict(c.header(name), contender="ours",
                              res={"us": None, "note": "n/a: time budget spent"}))
            continue
        res = {"copies": len(layers), "copies_needed": need}
        try:
            x = torch.randn(c.T, m["hidden"], device=dev, dtype=torch.bfloat16)
            ids = torch.from_numpy(c.ids).to(dev)
            wts = torch.from_numpy(c.wts).to(dev)
            out = torch.empty(c.T, m["hidden"], device=dev, dtype=torch.bfloat16)
            layers[0].forward(x, ids, wts, out=out)
            torch.cuda.synchronize()
            if not bool(torch.isfinite(out).all()):
                res["note"] = "output has NaN/Inf"
            fns = [lambda L=L: L.forward(x, ids, wts, out=out) for L in layers]
            iters = iters_for(c.T, args["iters"])
            med, lo, hi = timer(fns, iters)
            timer.stamp(res)
            res.update(us=med, min_us=lo, max_us=hi, iters=iters)
            extra = "; ".join(x for x in (res.get("note"), note, note_copies) if x)
            if extra:
                res["note"] = extra
        except Exception as e:  # noqa: BLE001
            res.update(us=None, note=f"n/a: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
        emit("cell", dict(c.header(name), contender="ours", res=res))
    for L in layers:
        L.close()
    torch.cuda.empty_cache()


def route(w4a8moe, np, logits, name, m):
    """The model's router (the library's); without a loadable library (a peers-only run), plain
    softmax top-k in numpy, said once in the notes."""
    try:
        return w4a8moe.route(logits, model=name)
    except OSError as e:
        if not getattr(route, "warned", False):
            emit("note", f"library not loadable, softmax top-k routing in numpy instead: "
                         f"{str(e).splitlines()[0][:120]}")
            route.warned = True
    k = m["top_k"]
    ids = np.argsort(-logits, axis=1, kind="stable")[:, :k].astype(np.int32)
    p = np.exp(logits - logits.max(1, keepdims=True))
    wts = np.take_along_axis(p / p.sum(1, keepdims=True), ids, 1).astype(np.float32)
    return ids, wts


def child_model(args):
    import numpy as np
    import torch
    import w4a8moe
    name = args["model"]
    m = MODELS[name]
    timer = Timer(torch)
    stream = torch.cuda.Stream()
    cells = []
    for T in args["tokens"]:
        rng = np.random.default_rng(args["seed"] + T)
        logits = rng.standard_normal((T, m["experts"]), dtype=np.float32)
        ids, wts = route(w4a8moe, np, logits, name, m)
        cells.append(Cell(m, T, ids, wts, args["bw"], args["f8"]))
    with torch.cuda.stream(stream):
        for kind in ("fp8", "bf16", "ours"):  # ours last: a fault in it cannot cost the peers
            if kind not in args["contenders"]:
                continue
            try:
                if kind == "ours":
                    run_ours(torch, name, m, cells, args, timer)
                else:
                    run_peer(torch, kind, name, m, cells, args, timer)
            except Exception as e:  # noqa: BLE001 (a bug here must not lose the other kinds)
                emit("note", f"{kind}: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    return 0


# ---- main -------------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help=f"comma list (default: all of {', '.join(DEFAULT_MODELS)})")
    p.add_argument("--tokens", default=None, help="comma list of T (default 1,16,64,256,1024,"
                   "4096,16384; --quick: 1,64,1024,16384)")
    p.add_argument("--iters", type=int, default=None,
                   help="timed calls per cell at small T (default 30, --quick 10; fewer at "
                   "large T)")
    p.add_argument("--quick", action="store_true", help="fewer T, fewer calls, 150 s budget")
    p.add_argument("--budget", type=float, default=None,
                   help="wall-clock seconds for the whole run (default 400, --quick 150)")
    p.add_argument("--contenders", default=",".join(CONTENDERS), help="subset of ours,fp8,bf16")
    p.add_argument("--backend", default=None, help="force our experts backend by name")
    p.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    p.add_argument("--commit", default=os.environ.get("W4A8MOE_COMMIT"),
                   help="commit to print (default: $W4A8MOE_COMMIT, else git rev-parse)")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--dry-run", action="store_true", help="print the plan and the table skeleton")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return a
    a.models = [s for s in a.models.split(",") if s]
    bad = [s for s in a.models if s not in MODELS]
    if bad:
        p.error(f"unknown model(s) {', '.join(bad)}; known: {', '.join(MODELS)}")
    if a.tokens is None:
        a.tokens = [1, 64, 1024, 16384] if a.quick else DEFAULT_TOKENS
    else:
        try:
            a.tokens = [int(s) for s in a.tokens.split(",") if s]
        except ValueError:
            p.error("--tokens takes a comma list of integers")
        if not a.tokens or min(a.tokens) < 1:
            p.error("--tokens must be positive")
    a.iters = a.iters or (10 if a.quick else 30)
    a.budget = a.budget or (150.0 if a.quick else 400.0)
    a.contenders = [s for s in a.contenders.split(",") if s]
    if any(s not in CONTENDERS for s in a.contenders):
        p.error(f"--contenders takes a subset of {','.join(CONTENDERS)}")
    return a


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child:
        spec = json.loads(args.child)
        if spec["role"] == "calibrate":
            child_calibrate()
            return 0
        return child_model(spec)
    if args.dry_run:
        print_plan(args)
        return 0
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
