"""test_checkpoint.py — w4a8moe.Checkpoint on the golden tiny checkpoints in tests/data
(golden-*: made apart from the project, checked bit for bit against PyTorch; indep-*: Llama-4
and SGLang w4afp8 from tests/fixtures/make_indep_fixtures.py, numpy only): layer 1 with the
checkpoint's own router must give the expected output, each row within 2e-3 relative L2 (through
the shared expert too where there is one); info, check and errors. Skipped where the library
predates the checkpoint API or the data is missing.
"""
import json
import os
import unittest

import _common

np = _common.need_numpy()
_common.need_library()
import w4a8moe  # noqa: E402
from w4a8moe import _lib as L  # noqa: E402
from w4a8moe import quant as Q  # noqa: E402
from w4a8moe import reference as R  # noqa: E402

DATA = os.path.join(_common.REPO, "tests", "data")
DTYPES = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32, "I32": np.int32}


def read_safetensors(path):
    """{name: numpy array} (BF16 as uint16 bits); a plain reader, apart from the library's."""
    with open(path, "rb") as f:
        blob = f.read()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(blob[base + a:base + b], dtype=DTYPES[t["dtype"]]).reshape(
            t["shape"])
    return out


class TestDataProvenance(unittest.TestCase):
    """tests/data/SHA256SUMS pins every data file (tests/data/README.md says where each came
    from): a changed or missing file fails here, an unlisted one too."""

    def test_sha256sums(self):
        import hashlib
        with open(os.path.join(DATA, "SHA256SUMS")) as f:
            sums = dict(reversed(line.split(None, 1)) for line in f if line.strip())
        sums = {k.strip(): v for k, v in sums.items()}
        for rel, want in sorted(sums.items()):
            with self.subTest(file=rel), open(os.path.join(DATA, rel), "rb") as f:
                self.assertEqual(hashlib.sha256(f.read()).hexdigest(), want, rel)
        present = set()
        for root, _dirs, files in os.walk(DATA):
            for name in files:
                rel = os.path.relpath(os.path.join(root, name), DATA)
                if rel not in ("SHA256SUMS", "README.md"):
                    present.add(rel)
        self.assertEqual(sorted(present - set(sums)), [],
                         "files in tests/data without a line in SHA256SUMS (and README.md)")
        self.assertGreaterEqual(len(sums), 10)


class TestGolden(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not L.has("w4a8moe_checkpoint_open"):
            raise unittest.SkipTest("this library has no checkpoint API")

    def golden(self, name, io_dtype="bf16"):
        d = os.path.join(DATA, name)
        if not os.path.isdir(d):
            self.skipTest(f"{d} is missing")
        x = read_safetensors(os.path.join(d, "input.safetensors"))["hidden_states"]
        want = Q.bf16_to_f32(read_safetensors(os.path.join(d, "expected.safetensors"))["output"])
        with w4a8moe.Checkpoint(d) as ck:
            info = ck.info
            self.assertEqual(ck.check(), [])
            layer = ck.layer(1, max_tokens=max(8, x.shape[0]), io_dtype=io_dtype)
            logits = ck.router_logits(1, x)
        self.assertEqual(logits.shape, (x.shape[0], info["num_experts"]))
        xin = Q.f32_to_io(Q.bf16_to_f32(x), io_dtype)  # bf16 → f32 is exact
        out = layer.forward(xin, router_logits=logits)  # the layer outlives the handle
        got = Q.io_to_f32(out, io_dtype)
        err = R.rel_l2_rows(got, want)
        self.assertLessEqual(float(err.max()), 2e-3,
                             f"{name} {io_dtype}: worst row {err.max():.3g}")
        return info, layer

    def test_qwen3(self):
        info, layer = self.golden("golden-qwen3-tiny")
        self.assertEqual(info["architecture"], "qwen3_moe")
        self.assertEqual((info["hidden"], info["inter"], info["num_experts"], info["top_k"],
                          info["group_size"]), (256, 128, 8, 2, 64))
        self.assertEqual(info["routing"]["routing"], "softmax_topk")
        self.assertTrue(info["routing"]["renormalize"])
        self.assertIn(1, info["moe_layers"])
        self.assertEqual(layer.shared_backend, "")

    def test_qwen3_f32_io(self):
        self.golden("golden-qwen3-tiny", io_dtype="f32")

    def test_deepseek_shared_expert(self):
        info, layer = self.golden("golden-deepseek-tiny")
        self.assertEqual(info["routing"]["routing"], "sigmoid_grouped_topk")
        self.assertEqual(info["routing"]["n_group"], 4)
        self.assertTrue(info["has_shared_expert"])
        self.assertTrue(layer.shared_backend)

    def test_llama4(self):
        info, layer = self.golden("indep-llama4-tiny")
        self.assertEqual(info["architecture"], "llama4")
        self.assertEqual((info["hidden"], info["inter"], info["num_experts"], info["top_k"],
                          info["group_size"]), (256, 128, 8, 1, 64))
        self.assertEqual(info["routing"]["routing"], "sigmoid_top1")
        self.assertEqual(info["moe_layers"], [1])
        self.assertTrue(info["has_shared_expert"])
        self.assertTrue(layer.shared_backend)

    def test_llama4_f32_io(self):
        self.golden("indep-llama4-tiny", io_dtype="f32")

    def test_sglang_w4afp8(self):
        info, layer = self.golden("indep-sglang-w4afp8-tiny")
        self.assertEqual(info["architecture"], "deepseek_v3")
        self.assertEqual((info["num_experts"], info["top_k"], info["group_size"]), (8, 2, 128))
        self.assertEqual(info["routing"]["routing"], "sigmoid_grouped_topk")
        self.assertEqual(info["moe_layers"], [1])
        self.assertTrue(info["has_shared_expert"])
        self.assertTrue(layer.shared_backend)

    def test_errors(self):
        with self.assertRaises(w4a8moe.Error) as cm:
            w4a8moe.Checkpoint(os.path.join(DATA, "no-such-checkpoint"))
        self.assertIn(cm.exception.status_name, ("NOT_FOUND", "IO_ERROR"))
        self.assertIn("no-such-checkpoint", cm.exception.message)
        d = os.path.join(DATA, "golden-qwen3-tiny")
        if not os.path.isdir(d):
            self.skipTest(f"{d} is missing")
        ck = w4a8moe.Checkpoint(d)
        with self.assertRaises(w4a8moe.Error):
            ck.layer(7)  # no such layer
        ck.close()
        with self.assertRaises(ValueError):
            ck.info


if __name__ == "__main__":
    unittest.main()
