#!/usr/bin/env python3
"""dev/kernels/tune_sm90_tiles.py — the tile table of src/cuda/configs/sm90_tiles.h, measured.

Runs the lab (build-lab/sm90_lab, dev/kernels/sm90_w4a8_gemm.cu) over rows per expert M for the
two GEMMs of a layer as cuda_sm90 runs them:
  GEMM1 (gated, the promoting kernel):  versions "f16 bn64" and "f16 bn128"
  GEMM2 (plain, the scaled kernel):     versions "f16s bn64", "f16s bn128", "f16s bn256"
on a DeepSeek-V3-like expert (H 7168, I 2048, g 128) with E experts such that E * M stays near
16k rows (at least 2, at most 64 experts), and prints, per M, each version's µs and the fastest
BN, then the table entries: for each BN the largest M at which it was still the fastest.

Usage (on the GPU machine, after building the lab):
  python3 dev/kernels/tune_sm90_tiles.py [--lab build-lab/sm90_lab] [--rows 16,32,...]
                                         [--H 7168] [--I 2048] [--iters 7] [--out FILE]
Each lab run prints the versions' worst rel-L2 against its f64 reference; a version that fails
the check is left out of the choice (and said so).
"""
import argparse
import os
import re
import subprocess
import sys

LINE = re.compile(r"^(?P<name>\S+(?: \S+)?)\s+(?P<us>[0-9.]+)\s+(?P<tf>[0-9.]+)\s+(?P<err>\S+)\s+(?P<verdict>ok|ok \(gpu tol\)|FAIL)")
GEMMS = {
    "gemm1": {"gated": 1, "versions": {"9": ("f16 bn64", 64), "2": ("f16 bn128", 128)}},
    "gemm2": {"gated": 0, "versions": {"8": ("f16s bn64", 64), "3": ("f16s bn128", 128),
                                       "4": ("f16s bn256", 256)}},
}


def run_lab(lab, M, E, N, K, g, gated, digits, iters):
    env = dict(os.environ, LAB_ONLY=digits, LAB_ITERS=str(iters))
    args = [lab, str(M), str(E), str(N), str(K), str(g), str(gated), str(M)]
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120).stdout
    found = {}
    for line in out.splitlines():
        m = LINE.match(line.strip())
        if m:
            found[m.group("name")] = (float(m.group("us")), m.group("verdict") != "FAIL")
    return found


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lab", default="build-lab/sm90_lab")
    p.add_argument("--rows", default="16,32,64,96,128,192,256,384,512,1024,2048")
    p.add_argument("--H", type=int, default=7168)
    p.add_argument("--I", type=int, default=2048)
    p.add_argument("--g", type=int, default=128)
    p.add_argument("--iters", type=int, default=7)
    p.add_argument("--out", default=None, help="also write the report to this file")
    a = p.parse_args()
    if not os.access(a.lab, os.X_OK):
        sys.exit(f"{a.lab}: not built (nvcc -O3 -std=c++17 -Iinclude -gencode=arch=compute_90a,"
                 "code=sm_90a dev/kernels/sm90_w4a8_gemm.cu -o build-lab/sm90_lab)")
    rows = [int(x) for x in a.rows.split(",")]
    report = []
    for gname, spec in GEMMS.items():
        N, K = (2 * a.I, a.H) if spec["gated"] else (a.H, a.I)
        digits = "".join(spec["versions"])
        best_by_m = {}
        report.append(f"{gname}: N {N} x K {K}, g {a.g}, {'gated' if spec['gated'] else 'plain'}")
        for M in rows:
            E = max(2, min(64, 16384 // M))
            found = run_lab(a.lab, M, E, N, K, a.g, spec["gated"], digits, a.iters)
            cells, best = [], None
            for _, (name, bn) in spec["versions"].items():
                if name not in found:
                    cells.append(f"{name}: n/a")
                    continue
                us, ok = found[name]
                cells.append(f"{name}: {us:.1f} us" + ("" if ok else " (FAILED the check)"))
                if ok and (best is None or us < best[0]):
                    best = (us, bn)
            best_by_m[M] = best[1] if best else None
            report.append(f"  M {M:5d} (E {E:2d}): " + ", ".join(cells) + f" -> BN {best_by_m[M]}")
        # the table: for each BN, the largest M at which it won
        entries = {}
        for M, bn in best_by_m.items():
            if bn is not None:
                entries[bn] = max(entries.get(bn, 0), M)
        report.append("  table: " + ", ".join(f"{{{m}, {bn}}}" for bn, m in sorted(entries.items())))
    text = "\n".join(report)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
