#!/usr/bin/env python3
"""ptx_compare.py — whether a change leaves kernels' code as it was, without a GPU.

Compiles the given CUDA sources to PTX (sm_90a, the library's flags) at a base commit and in the
working tree, and compares every kernel (.entry) by name, ignoring what does not change the
code: branch-label numbering and the size of the first parameter block. Prints, per file, how
many kernels are the same, differ, were removed or added, and names those that differ.

  python3 dev/kernels/ptx_compare.py [--base REV] src/cuda/cuda_sm90_small_batch.cu ...

Used to show that a change to one path (an opt-in switch, a removed variant) leaves the default
kernels' PTX untouched, so a round's earlier measurements still describe them.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

NVCC_FLAGS = ["-std=c++17", "-O3", "-Iinclude", "-Isrc", "-DW4A8MOE_WITH_CUDA=1", "-arch=sm_90a", "-ptx"]


def kernels(ptx_text):
    out = {}
    for m in re.finditer(r"\.entry (\S+)\(", ptx_text):
        end = ptx_text.index("\n}\n", m.start())
        body = ptx_text[m.start():end]
        body = re.sub(r"\$L__BB\d+_", "$L__BB_", body)
        body = re.sub(r"_param_0\[\d+\]", "_param_0[]", body)
        out[m.group(1)] = body
    return out


def ptx(src_root, path, out_dir):
    dst = os.path.join(out_dir, os.path.basename(path) + ".ptx")
    subprocess.run(["nvcc", *NVCC_FLAGS, path, "-o", dst], cwd=src_root, check=True)
    with open(dst) as f:
        return f.read()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="HEAD", help="the commit to compare against (default HEAD)")
    ap.add_argument("sources", nargs="+", help="CUDA sources, relative to the repository root")
    a = ap.parse_args()
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                          check=True).stdout.strip()
    changed = 0
    with tempfile.TemporaryDirectory() as tmp:
        base_tree = os.path.join(tmp, "base")
        subprocess.run(["git", "worktree", "add", "--detach", "-q", base_tree, a.base], cwd=root, check=True)
        try:
            for src in a.sources:
                os.makedirs(os.path.join(tmp, "b"), exist_ok=True)
                os.makedirs(os.path.join(tmp, "w"), exist_ok=True)
                before = kernels(ptx(base_tree, src, os.path.join(tmp, "b")))
                after = kernels(ptx(root, src, os.path.join(tmp, "w")))
                same = [k for k in before if k in after and before[k] == after[k]]
                differ = [k for k in before if k in after and before[k] != after[k]]
                removed = [k for k in before if k not in after]
                added = [k for k in after if k not in before]
                print(f"{src}: {len(same)} same, {len(differ)} differ, {len(removed)} removed, {len(added)} added")
                for k in differ:
                    print(f"  differs: {k}")
                changed += len(differ)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", base_tree], cwd=root, check=False)
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
