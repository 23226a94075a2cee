"""test_torch_op_cuda.py — torch.ops.w4a8moe.layer_forward on a GPU (skipped elsewhere): eager
op == the plain binding with no host synchronisation (int64 ids converted on the device, router
logits routed by the device router, checked by torch's sync debug mode); router logits against
the host router's ids; torch.compile(fullgraph=True), also with mode="reduce-overhead" (inductor's
CUDA graphs), == eager; the op captured in a torch.cuda.graph replays to the eager bits, on the
capture inputs and on new ones; two threads on one CUDA layer.
"""
import unittest

import _common

np = _common.need_numpy()
torch = _common.maybe_torch()
if torch is None or not torch.cuda.is_available():
    raise unittest.SkipTest("torch with a CUDA device is not available")
_common.need_library()
import w4a8moe  # noqa: E402
import w4a8moe.torch_ops as O  # noqa: E402
from w4a8moe import reference as R  # noqa: E402

import test_layer as TL  # noqa: E402  (python/tests)
from test_torch_op import forward_in_threads, make_case, same_bits  # noqa: E402

SHAPE = dict(hidden=512, inter=256, experts=16, top_k=4, group_size=128)
K = SHAPE["top_k"]
ROUTING = dict(routing="softmax_topk", renormalize=True)


def block(layer):
    """What a model does around the layer: ids from torch.topk (int64) and a residual add, and
    the same layer on its own router."""
    def f(x, logits, wts):
        ids = torch.topk(logits, K, dim=-1).indices
        return x + O.forward(layer, x, ids, wts), O.forward(layer, x, router_logits=logits)
    return f


class TestTorchOpCuda(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        try:
            w4a8moe.explain(device="cuda", **SHAPE)
        except w4a8moe.Error as e:
            raise unittest.SkipTest(f"this library build cannot use the GPU: {e}")

    def case(self, seed_off, T):
        return make_case(seed_off, T, "cuda", SHAPE, max_tokens=64, **ROUTING)

    def assert_same(self, got, want, what):
        torch.cuda.synchronize()
        for i, (a, b) in enumerate(zip(got, want)):
            self.assertTrue(same_bits(a, b), f"{what}: output {i} differs")

    def test_eager_without_sync(self):
        layer, x, ids, wts, logits = self.case(400, 24)
        want = (layer.forward(x, ids, wts), layer.forward(x, router_logits=logits))
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")  # any synchronising torch call raises
        try:
            got = (O.forward(layer, x, ids.long(), wts),  # int64 -> int32 on the device
                   O.forward(layer, x, router_logits=logits))  # the device router
        finally:
            torch.cuda.set_sync_debug_mode(0)
        self.assertEqual(got[0].device, x.device)
        self.assert_same(got, want, "op vs binding")

    def test_router_logits_on_gpu(self):
        """The device router's output against the host router's ids on the same logits."""
        layer, x, _, _, logits = self.case(410, 24)
        ids, wts = w4a8moe.route(logits, **SHAPE, **ROUTING)  # host router, back on the GPU
        self.assertEqual(ids.device, logits.device)
        a = O.forward(layer, x, router_logits=logits).float().cpu().numpy()
        b = O.forward(layer, x, ids, wts).float().cpu().numpy()
        err = R.rel_l2_rows(a, b)
        self.assertLessEqual(float(err.max()), TL.TOL, "device router vs host router")

    def test_compile_fullgraph(self):
        layer, x, _, wts, logits = self.case(420, 16)
        f = block(layer)
        torch._dynamo.reset()
        cf = torch.compile(f, fullgraph=True)
        for T in (16, 5, 11):  # T = 5 recompiles with T symbolic
            args = (x[:T], logits[:T], wts[:T])
            self.assert_same(cf(*args), f(*args), f"compiled, T = {T}")

    def test_compile_reduce_overhead(self):
        """Inductor's CUDA graphs (recorded on the second call, replayed after) == eager."""
        from torch._dynamo.utils import counters
        layer, x, _, wts, logits = self.case(430, 16)
        f = block(layer)
        torch._dynamo.reset()
        counters.clear()
        cf = torch.compile(f, fullgraph=True, mode="reduce-overhead")
        want = f(x, logits, wts)
        for i in range(4):
            torch.compiler.cudagraph_mark_step_begin()
            got = [t.clone() for t in cf(x, logits, wts)]  # a replay reuses its outputs
            self.assert_same(got, want, f"reduce-overhead call {i}")
        self.assertEqual(counters["inductor"]["cudagraph_skips"], 0,
                         "inductor did not use a CUDA graph for the op")

    def test_graph_capture(self):
        """torch.cuda.graph around the op (topk ids and router logits, all temporaries made
        inside): replays give eager's bits, on the captured inputs and on new ones."""
        layer, x, _, wts, logits = self.case(440, 16)
        f = block(layer)
        static = [t.clone() for t in (x, logits, wts)]
        want = f(*static)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):  # warm-up on a side stream, as torch recommends
            f(*static)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            outs = f(*static)
        for o in outs:
            o.zero_()
        g.replay()
        self.assert_same(outs, want, "replay")
        new = (x.flip(0), logits.flip(0) * 0.5, wts.flip(0))
        for dst, src in zip(static, new):
            dst.copy_(src)
        g.replay()
        self.assert_same(outs, f(*new), "replay on new inputs")

    def test_two_threads(self):
        """Two threads on one CUDA layer (torch's default stream): each gets the bits it gets
        alone."""
        layer, x, ids, wts, _ = self.case(450, 32)
        rows = [(x[i:i + 16], ids[i:i + 16], wts[i:i + 16]) for i in (0, 16)]
        alone = [O.forward(layer, *r) for r in rows]
        results, errors = forward_in_threads(layer, rows)
        torch.cuda.synchronize()
        self.assertEqual(errors, [])
        for (j, n), out in results.items():
            self.assertTrue(same_bits(out, alone[j]), f"thread {j} call {n}")


if __name__ == "__main__":
    unittest.main()
