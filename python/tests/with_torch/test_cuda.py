"""test_cuda.py — the binding on a GPU, where torch with CUDA and a CUDA build of the library
exist (skipped elsewhere): a CUDA layer against the numpy reference and against cpu_ref on the
same inputs (each output row within 2e-3 relative L2), on torch's current stream and on an
explicit stream, with ids/weights and with router logits, CUDA weights copied back for
creation, the torch quantiser on the GPU, and the device checks.
"""
import unittest

import _common

np = _common.need_numpy()
torch = _common.maybe_torch()
if torch is None or not torch.cuda.is_available():
    raise unittest.SkipTest("torch with a CUDA device is not available")
_common.need_library()
import w4a8moe  # noqa: E402
from w4a8moe import quant as Q  # noqa: E402
from w4a8moe import reference as R  # noqa: E402

import test_layer as TL  # noqa: E402  (shared makers, python/tests)

SHAPE = dict(hidden=512, inter=256, experts=16, top_k=4, group_size=128)


def to_bf16_tensor(bits, dev):
    return torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16).to(dev)


def bf16_bits(t):
    return t.cpu().view(torch.int16).numpy().view(np.uint16)


class TestCudaLayer(TL.LayerCase):
    @classmethod
    def setUpClass(cls):
        try:
            w4a8moe.explain(device="cuda", **SHAPE)
        except w4a8moe.Error as e:
            raise unittest.SkipTest(f"this library build cannot use the GPU: {e}")

    def make(self, seed_off, T=40):
        rng = TL.rng_for(seed_off)
        H, I, E, k, g = (SHAPE[n] for n in ("hidden", "inter", "experts", "top_k", "group_size"))
        w = TL.make_weights(rng, H, I, E, g)
        x, xf = TL.make_x(rng, T, H, "bf16")
        ids, wts = TL.make_routing(rng, T, E, k)
        return w, x, xf, ids, wts

    def test_against_reference_and_cpu_ref(self):
        w, x, xf, ids, wts = self.make(200)
        dev = torch.device("cuda")
        layer = w4a8moe.Layer(weights=w, device="cuda", max_tokens=64, **SHAPE)
        self.assertTrue(layer.backend.startswith("cuda"), layer.backend)
        xt = to_bf16_tensor(x, dev)
        idt, wtt = torch.from_numpy(ids).to(dev), torch.from_numpy(wts).to(dev)
        out = torch.full((x.shape[0], SHAPE["hidden"]), float("nan"), dtype=torch.bfloat16,
                         device=dev)
        got = layer.forward(xt, idt, wtt, out=out)
        self.assertIs(got, out)
        torch.cuda.synchronize()
        want = R.forward(xf, w, ids, wts, SHAPE["group_size"])
        self.check_rows(bf16_bits(out), "bf16", want, f"cuda {layer.backend} vs reference")
        cpu = w4a8moe.Layer(weights=w, backend="cpu_ref", max_tokens=64, **SHAPE)
        ref = Q.bf16_to_f32(cpu(x, ids, wts))
        err = R.rel_l2_rows(Q.bf16_to_f32(bf16_bits(out)), ref)
        self.assertLessEqual(float(err.max()), TL.TOL, "cuda vs cpu_ref")
        # deterministic run to run
        again = layer.forward(xt, idt.long(), wtt)
        torch.cuda.synchronize()
        self.assertTrue(torch.equal(again.view(torch.int16), out.view(torch.int16)))

    def test_streams_and_logits(self):
        w, x, _, _, _ = self.make(210, T=24)
        dev = torch.device("cuda")
        kw = dict(SHAPE, routing="softmax_topk", renormalize=True)
        layer = w4a8moe.Layer(weights=w, device="cuda", max_tokens=32, **kw)
        logits = np.random.default_rng(_common.seed() + 211).standard_normal(
            (24, SHAPE["experts"])).astype(np.float32)
        xt = to_bf16_tensor(x, dev)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            out_logits = layer.forward(xt, router_logits=torch.from_numpy(logits).to(dev))
        ids, wts = w4a8moe.route(logits, **kw)
        out_ids = layer.forward(xt, torch.from_numpy(ids).to(dev), torch.from_numpy(wts).to(dev),
                                stream=s)
        s.synchronize()
        torch.cuda.synchronize()
        a, b = bf16_bits(out_logits), bf16_bits(out_ids)
        err = R.rel_l2_rows(Q.bf16_to_f32(a), Q.bf16_to_f32(b))
        self.assertLessEqual(float(err.max()), TL.TOL, "router logits vs the host router's ids")

    def test_cuda_weights_and_device_checks(self):
        w, x, xf, ids, wts = self.make(220, T=8)
        dev = torch.device("cuda")
        tw = {k: torch.from_numpy(v).to(dev) for k, v in w.items()}
        tw["w13_scale"] = tw["w13_scale"].view(torch.bfloat16)
        tw["w2_scale"] = tw["w2_scale"].view(torch.bfloat16)
        layer = w4a8moe.Layer(weights=tw, device=dev, max_tokens=8, **SHAPE)
        with self.assertRaisesRegex(ValueError, "cuda"):
            layer.forward(to_bf16_tensor(x, "cpu"), torch.from_numpy(ids), torch.from_numpy(wts))
        with self.assertRaises(ValueError):
            layer.forward(x, ids, wts)  # numpy arrays into a CUDA layer
        out = layer.forward(to_bf16_tensor(x, dev), torch.from_numpy(ids).to(dev),
                            torch.from_numpy(wts).to(dev))
        want = R.forward(xf, w, ids, wts, SHAPE["group_size"])
        self.check_rows(bf16_bits(out), "bf16", want, "weights given on the GPU")

    def test_golden_checkpoint_on_gpu(self):
        import os
        import test_checkpoint as TC
        d = os.path.join(TC.DATA, "golden-qwen3-tiny")
        if not (w4a8moe._lib.has("w4a8moe_checkpoint_open") and os.path.isdir(d)):
            self.skipTest("no checkpoint API or no golden checkpoint")
        x = TC.read_safetensors(os.path.join(d, "input.safetensors"))["hidden_states"]
        want = Q.bf16_to_f32(TC.read_safetensors(os.path.join(d, "expected.safetensors"))["output"])
        with w4a8moe.Checkpoint(d) as ck:
            layer = ck.layer(1, max_tokens=8, device="cuda")
            logits = ck.router_logits(1, x)
        dev = torch.device("cuda")
        out = layer.forward(to_bf16_tensor(x, dev), router_logits=torch.from_numpy(logits).to(dev))
        err = R.rel_l2_rows(Q.bf16_to_f32(bf16_bits(out)), want)
        self.assertLessEqual(float(err.max()), TL.TOL, f"golden qwen3 on {layer.backend}")

    def test_graph_capture(self):
        """A forward captured in a CUDA graph through the binding replays to the eager bits."""
        w, x, _, ids, wts = self.make(230, T=16)
        dev = torch.device("cuda")
        layer = w4a8moe.Layer(weights=w, device="cuda", max_tokens=16, **SHAPE)
        xt = to_bf16_tensor(x, dev)
        idt, wtt = torch.from_numpy(ids).to(dev), torch.from_numpy(wts).to(dev)
        eager = layer.forward(xt, idt, wtt)
        out = torch.empty_like(eager)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):  # warm-up on the capture stream, as torch recommends
            layer.forward(xt, idt, wtt, out=out)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            layer.forward(xt, idt, wtt, out=out)
        out.zero_()
        g.replay()
        torch.cuda.synchronize()
        self.assertTrue(torch.equal(out.view(torch.int16), eager.view(torch.int16)))

    def test_torch_quantiser_on_gpu(self):
        w = torch.randn(4, 64, 256, device="cuda") * 0.05
        p, s = w4a8moe.quantize_int4_torch(w, 128)
        p_np, s_np = w4a8moe.quantize_int4(w.cpu().numpy(), 128)
        self.assertTrue(np.array_equal(p.cpu().numpy(), p_np))
        self.assertTrue(np.array_equal(bf16_bits(s), s_np))


if __name__ == "__main__":
    unittest.main()
