"""test_peers.py — bench/peers.py without a GPU: the floor and the cold-L2 plan against hand
arithmetic, --dry-run end to end, and the parent's collecting and table making fed by a fake child
(what the GPU children stream back, including a child that dies half way). Needs neither numpy
nor torch; the GPU paths themselves run only on the device.
"""
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
import unittest
from contextlib import redirect_stdout

import _common

PEERS = os.path.join(_common.REPO, "bench", "peers.py")


def load_peers():
    spec = importlib.util.spec_from_file_location("peers", PEERS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


P = load_peers()


class TestPlan(unittest.TestCase):
    def test_floor(self):
        m = P.MODELS["qwen3-30b-a3b"]  # H 2048, I 768, k 8, g 128
        fl, bound, nbytes, flops = P.floor_of(m, 1, 8, 3e12, 1.3e15)
        want_bytes = 8 * 3 * 2048 * 768 * (0.5 + 2 / 128) + 1 * 2048 * 4
        self.assertAlmostEqual(nbytes, want_bytes)
        self.assertEqual(flops, 2 * 1 * 8 * 3 * 2048 * 768)
        self.assertEqual(bound, "mem")
        self.assertAlmostEqual(fl, want_bytes / 3e12 * 1e6)
        fl, bound, _, flops = P.floor_of(m, 16384, 128, 3e12, 1.3e15)
        self.assertEqual(bound, "compute")
        self.assertAlmostEqual(fl, flops / 1.3e15 * 1e6)

    def test_copies_and_iters(self):
        self.assertEqual(P.copies_needed(200e6), 1)      # one copy already streams 2x the L2
        self.assertEqual(P.copies_needed(20e6), 6)       # 100 MB / 20 MB + 1
        self.assertEqual(P.copies_needed(19.5e6), 7)
        self.assertEqual(P.iters_for(1, 30), 30)
        self.assertEqual(P.iters_for(4096, 30), 15)
        self.assertEqual(P.iters_for(16384, 30), 3)
        self.assertAlmostEqual(P.expected_hit(8, 2, 1), 2.0)
        self.assertAlmostEqual(P.expected_hit(128, 8, 10 ** 6), 128.0)

    def test_dry_run(self):
        r = subprocess.run([sys.executable, PEERS, "--dry-run", "--quick", "--models",
                            "deepseek-v3,llama4-scout"], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("deepseek-v3: H=7168 I=2048 E=256 k=8", r.stdout)
        self.assertIn("| llama4-scout | 16384 |", r.stdout)
        self.assertIn("GEMMs only", r.stdout)
        bad = subprocess.run([sys.executable, PEERS, "--dry-run", "--models", "nope"],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(bad.returncode, 2)
        self.assertIn("unknown model", bad.stderr)


class TestParent(unittest.TestCase):
    def fake_child(self, spec, timeout, sink):
        if spec["role"] == "calibrate":
            sink("calib", {"bw": 3e12, "f8": 1.4e15, "device": "FakeGPU", "torch": "0",
                           "free": 80e9, "total": 80e9})
            return 0, []
        m = P.MODELS[spec["model"]]
        for T in spec["tokens"]:
            if spec["model"] == "llama4-scout" and T > 1:
                return -11, ["Segmentation fault"]  # the child dies half way
            fl, bound, nb, fp = P.floor_of(m, T, min(T * m["top_k"], m["experts"]), 3e12, 1.4e15)
            head = {"model": spec["model"], "T": T, "rows": T * m["top_k"], "hit": 8,
                    "floor_us": fl, "bound": bound, "bytes": nb, "flops": fp}
            sink("cell", dict(head, contender="fp8", res={"us": 2 * fl, "call": "x"}))
            sink("cell", dict(head, contender="bf16", res={"us": None, "note": "n/a: test"}))
            sink("cell", dict(head, contender="ours", res={"us": 0.5 * fl}))
        sink("note", "ours: backend fake")
        return 0, []

    def test_collect_and_render(self):
        args = P.parse_args(["--models", "qwen3-30b-a3b,llama4-scout", "--tokens", "1,64",
                             "--commit", "abc123"])
        with tempfile.TemporaryDirectory() as tmp:
            args.out = os.path.join(tmp, "peers")
            saved, P.run_child = P.run_child, self.fake_child
            try:
                buf = io.StringIO()
                with redirect_stdout(buf):
                    rc = P.run_parent(args)
            finally:
                P.run_child = saved
            self.assertEqual(rc, 0)
            with open(args.out + ".json") as f:
                res = json.load(f)
            with open(args.out + ".md") as f:
                md = f.read()
        self.assertEqual(res["meta"]["commit"], "abc123")
        self.assertEqual(len(res["cells"]), 3)  # qwen 1, 64; scout 1 (then its child died)
        q1 = res["cells"][0]
        self.assertEqual(q1["results"]["ours"]["us"] * 4, q1["results"]["fp8"]["us"])
        self.assertIn("| qwen3-30b-a3b | 1 |", md)
        row = [ln for ln in md.splitlines() if ln.startswith("| qwen3-30b-a3b | 64 |")][0]
        cols = [c.strip() for c in row.strip("|").split("|")]
        self.assertEqual(cols[P.COLUMNS.index("ours ×floor")], "0.50")
        self.assertEqual(cols[P.COLUMNS.index("fp8 ×floor")], "2.00")
        self.assertEqual(cols[P.COLUMNS.index("bf16 µs")], "n/a")
        self.assertEqual(cols[P.COLUMNS.index("fp8/ours")], "4.00×")
        self.assertIn("llama4-scout: child exit -11", md)
        self.assertIn("FakeGPU", md)


if __name__ == "__main__":
    unittest.main()
