"""test_torch_cpu.py — the binding with torch tensors on the CPU (no GPU needed): a layer fed
torch tensors (bf16 x, int64 ids as torch.topk gives them) against the numpy reference, and the
torch quantiser giving the same bits as the numpy one. The torch suite: `make test-gpu` runs it,
and `make test-python` where torch is installed.
"""
import unittest

import _common

np = _common.need_numpy()
torch = _common.need_torch()
_common.need_library()
import w4a8moe  # noqa: E402
from w4a8moe import reference as R  # noqa: E402

import test_layer as TL  # noqa: E402  (shared makers)
from test_layer import TINY, make_routing, make_weights, make_x, rng_for  # noqa: E402,F401


class TestTorchCPU(TL.LayerCase):
    def test_torch_tensors(self):
        rng = rng_for(100)
        w = make_weights(rng, 256, 128, 8, 64)
        tw = {k: torch.from_numpy(v) for k, v in w.items()}
        tw["w13_scale"] = tw["w13_scale"].view(torch.bfloat16)
        tw["w2_scale"] = tw["w2_scale"].view(torch.bfloat16)
        layer = w4a8moe.Layer(weights=tw, io_dtype=torch.bfloat16, max_tokens=8, **TINY)
        x, xf = make_x(rng, 7, 256, "bf16")
        ids, wts = make_routing(rng, 7, 8, 2)
        out = layer.forward(torch.from_numpy(x.view(np.int16)).view(torch.bfloat16),
                            torch.from_numpy(ids).long(), torch.from_numpy(wts))
        self.assertEqual(out.dtype, torch.bfloat16)
        got = out.view(torch.int16).numpy().view(np.uint16)
        self.check_rows(got, "bf16", R.forward(xf, w, ids, wts, 64), "torch cpu")


class TestTorchQuantiser(unittest.TestCase):
    def test_torch_quantiser_matches(self):
        rng = np.random.default_rng(_common.seed() + 3)
        w = rng.standard_normal((2, 8, 256)).astype(np.float32) * 0.05
        p_np, s_np = w4a8moe.quantize_int4(w, 128)
        p_t, s_t = w4a8moe.quantize_int4_torch(torch.from_numpy(w), 128)
        self.assertEqual(p_t.dtype, torch.int32)
        self.assertEqual(s_t.dtype, torch.bfloat16)
        self.assertTrue(np.array_equal(p_t.numpy(), p_np))
        self.assertTrue(np.array_equal(s_t.view(torch.int16).numpy().view(np.uint16), s_np))


if __name__ == "__main__":
    unittest.main()
