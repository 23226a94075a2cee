"""test_torch_op.py — torch.ops.w4a8moe.layer_forward (w4a8moe/torch_ops.py) on the CPU: the op
eagerly gives the plain binding's bits; under torch.compile(fullgraph=True) it gives the eager
bits (ids from torch.topk inside the graph, the layer's router on logits, a T that changes);
the fake implementation's shapes and checks, opcheck; int64 ids; the per-layer lock between two
threads; dead handles. test_torch_op_cuda.py runs the same op on the GPU.
"""
import logging
import os
import subprocess
import sys
import threading
import time
import unittest

import _common

np = _common.need_numpy()
torch = _common.need_torch()
_common.need_library()
import w4a8moe  # noqa: E402
import w4a8moe.torch_ops as O  # noqa: E402

import test_layer as TL  # noqa: E402  (shared makers, python/tests)

SHAPE = TL.TINY  # H 256, I 128, E 8, k 2, g 64
OP = torch.ops.w4a8moe.layer_forward


def bf16(bits, dev="cpu"):
    """numpy bf16 bits (uint16) -> a torch.bfloat16 tensor."""
    return torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16).to(dev)


def same_bits(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(
        a.view(torch.int16), b.view(torch.int16))


def make_case(seed_off, T, dev="cpu", shape=SHAPE, max_tokens=64, **layer_kw):
    """A layer on `dev` and torch inputs for it: x bf16 [T, H], int32 ids, f32 weights, and
    f32 logits [T, E]."""
    rng = TL.rng_for(seed_off)
    H, I, E, k, g = (shape[n] for n in ("hidden", "inter", "experts", "top_k", "group_size"))
    w = TL.make_weights(rng, H, I, E, g)
    layer = w4a8moe.Layer(weights=w, device=dev, max_tokens=max_tokens, **shape, **layer_kw)
    x, _ = TL.make_x(rng, T, H, "bf16")
    ids, wts = TL.make_routing(rng, T, E, k)
    logits = rng.standard_normal((T, E)).astype(np.float32)
    t = lambda a: torch.from_numpy(a).to(dev)  # noqa: E731
    return layer, bf16(x, dev), t(ids), t(wts), t(logits)



def forward_in_threads(layer, rows, calls=20):
    """One thread per entry of rows, each running the op `calls` times on its (x, ids, weights)
    on one layer at once: ({(thread, call): output}, [exceptions raised in the threads])."""
    results, errors = {}, []

    def worker(j):
        try:
            for n in range(calls):
                results[(j, n)] = O.forward(layer, *rows[j])
        except Exception as e:  # reported by the caller
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(j,)) for j in range(len(rows))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    return results, errors

class TestTorchOpCPU(unittest.TestCase):
    def test_eager_matches_binding(self):
        layer, x, ids, wts, logits = make_case(300, 12, renormalize=True)
        want = layer.forward(x, ids, wts)
        self.assertTrue(same_bits(OP(layer.op_handle, x, ids, wts), want))
        self.assertTrue(same_bits(O.forward(layer, x, ids, wts), want))
        want_l = layer.forward(x, router_logits=logits)
        self.assertTrue(same_bits(O.forward(layer, x, router_logits=logits), want_l))
        # T = 0: an empty [0, H]
        empty = O.forward(layer, x[:0], ids[:0], wts[:0])
        self.assertEqual(tuple(empty.shape), (0, SHAPE["hidden"]))

    def test_int64_ids(self):
        """int64 ids, as torch.topk returns them, give the int32 ids' bits."""
        layer, x, ids, wts, logits = make_case(310, 9)
        want = O.forward(layer, x, ids, wts)
        self.assertTrue(same_bits(O.forward(layer, x, ids.long(), wts), want))
        top = torch.topk(logits, SHAPE["top_k"], dim=-1)
        self.assertEqual(top.indices.dtype, torch.int64)
        got = O.forward(layer, x, top.indices, top.values.softmax(-1))
        self.assertTrue(same_bits(got, layer.forward(x, top.indices.int(),
                                                     top.values.softmax(-1))))

    def test_compile_fullgraph(self):
        """Compiled (inductor, fullgraph) == eager, bit for bit: topk ids inside the graph and a
        residual add around the op; two layers on their routers; T changing between calls."""
        layer, x, ids, wts, logits = make_case(320, 16)
        k = SHAPE["top_k"]

        def block(x, logits, wts):
            ids = torch.topk(logits, k, dim=-1).indices  # int64, converted inside the op
            return x + O.forward(layer, x, ids, wts)

        other, *_ = make_case(321, 1)

        def routed(x, logits):  # two layers in one graph, each named by its own handle
            y = torch.ops.w4a8moe.layer_forward(layer.op_handle, x, router_logits=logits)
            return O.forward(other, y, router_logits=logits)

        torch._dynamo.reset()
        cblock = torch.compile(block, fullgraph=True)
        crouted = torch.compile(routed, fullgraph=True)
        for T in (16, 5, 11):  # the second T recompiles with T symbolic, the third reuses it
            args = (x[:T], logits[:T], wts[:T])
            self.assertTrue(same_bits(cblock(*args), block(*args)), f"block, T = {T}")
            self.assertTrue(same_bits(crouted(x[:T], logits[:T]), routed(x[:T], logits[:T])),
                            f"router logits, T = {T}")

    def test_fake_shapes(self):
        from torch._subclasses.fake_tensor import FakeTensorMode
        layer, x, ids, wts, logits = make_case(330, 7)
        ids64 = ids.long()
        with FakeTensorMode() as mode:
            fx, fids, fwts = (mode.from_tensor(t) for t in (x, ids64, wts))
            out = O.forward(layer, fx, fids, fwts)
            self.assertEqual((tuple(out.shape), out.dtype), ((7, SHAPE["hidden"]), torch.bfloat16))
            self.assertTrue(out.is_contiguous())
            # fake tensor mode logs an exception from a fake impl with its traceback: quiet
            quiet = logging.getLogger("torch._subclasses.fake_tensor")
            was, quiet.disabled = quiet.disabled, True
            try:
                with self.assertRaisesRegex(TypeError, "io_dtype"):
                    O.forward(layer, fx.float(), fids, fwts)
                with self.assertRaisesRegex(ValueError, "H = 256"):
                    O.forward(layer, fx[:, :128], fids, fwts)
            finally:
                quiet.disabled = was
        meta = O.forward(layer, x.to("meta"), ids.to("meta"), wts.to("meta"))
        self.assertEqual((meta.device.type, tuple(meta.shape)), ("meta", (7, SHAPE["hidden"])))
        # torch's own checks of a custom op: schema, fake vs real, AOT dispatch (dynamic shapes)
        for args in ((layer.op_handle, x, ids.long(), wts),
                     (layer.op_handle, x, None, None, logits)):
            torch.library.opcheck(OP.default, args)

    def test_lock_per_layer(self):
        """A forward waits while another thread holds the layer; many threads on one layer give
        the bits each gets alone."""
        layer, x, ids, wts, _ = make_case(340, 32)
        want = O.forward(layer, x, ids, wts)
        got = []
        with layer._lock:  # as if another thread's forward were running
            th = threading.Thread(target=lambda: got.append(O.forward(layer, x, ids, wts)))
            th.start()
            time.sleep(0.3)
            self.assertTrue(th.is_alive() and not got, "the op ran while the layer was held")
        th.join(30)
        self.assertTrue(got and same_bits(got[0], want))

        rows = [(x[i:i + 8], ids[i:i + 8], wts[i:i + 8]) for i in range(0, 32, 8)]
        alone = [O.forward(layer, *r) for r in rows]
        results, errors = forward_in_threads(layer, rows)
        self.assertEqual(errors, [])
        for (j, n), out in results.items():
            self.assertTrue(same_bits(out, alone[j]), f"thread {j} call {n}")

    def test_dead_handles(self):
        layer, x, ids, wts, _ = make_case(350, 4)
        h = layer.op_handle
        self.assertIs(O.layer_from_op_handle(h), layer)
        layer.close()
        with self.assertRaisesRegex(ValueError, f"op_handle {h}"):
            OP(h, x, ids, wts)
        other, *_ = make_case(351, 4)
        self.assertNotEqual(other.op_handle, h)  # handles are never reused
        h2 = other.op_handle
        del other
        with self.assertRaisesRegex(ValueError, "garbage-collected"):
            OP(h2, x, ids, wts)


class TestOptionalImport(unittest.TestCase):
    def run_py(self, code):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=120, cwd=_common.REPO,
                           env=dict(os.environ, PYTHONPATH=_common.PY_DIR))
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_import_order(self):
        # w4a8moe alone never imports torch; asked for, torch_ops registers the op
        self.assertEqual(self.run_py(
            "import sys, w4a8moe; print('torch' in sys.modules); import w4a8moe.torch_ops;"
            "import torch; print(hasattr(torch.ops.w4a8moe, 'layer_forward'))").split(),
            ["False", "True"])
        # torch first: import w4a8moe registers it at once
        self.assertEqual(self.run_py(
            "import torch, w4a8moe; print(hasattr(torch.ops.w4a8moe, 'layer_forward'))").split(),
            ["True"])


if __name__ == "__main__":
    unittest.main()
