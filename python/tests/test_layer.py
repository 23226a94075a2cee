"""test_layer.py — the binding against the library on the CPU: Layer creation and forward
checked against the numpy reference of docs/numerics.md (python/w4a8moe/reference.py; each output
row within 2e-3 relative L2) over io dtypes, scale dtypes, channel scales, activations, the
static scheme, router weight on input, "no expert" ids and router logits; errors raised as
w4a8moe.Error carrying the library's message; explain; route against numpy routers; the
built-in model table against the library's.
(Torch tensors: with_torch/test_torch_cpu.py.)
"""
import ctypes
import unittest

import _common

np = _common.need_numpy()
_common.need_library()
import w4a8moe  # noqa: E402
from w4a8moe import _lib as L  # noqa: E402
from w4a8moe import quant as Q  # noqa: E402
from w4a8moe import reference as R  # noqa: E402

TOL = 2e-3
TINY = dict(hidden=256, inter=128, experts=8, top_k=2, group_size=64)


def rng_for(offset):
    return np.random.default_rng(_common.seed() + offset)


def to_scale(s, scale_dtype):
    if scale_dtype == "bf16":
        return Q.f32_to_bf16(s)
    return s.astype({"f16": np.float16, "f32": np.float32}[scale_dtype])


def make_weights(rng, H, I, E, g, scale_dtype="bf16", channel=False):
    """Random checkpoint-form weights: int4 uniform over [-8, 7], scales in [0.004, 0.02)."""
    w = {
        "w13_packed": Q.pack_int4(rng.integers(-8, 8, (E, 2 * I, H))),
        "w13_scale": to_scale(rng.uniform(0.004, 0.02, (E, 2 * I, H // g)), scale_dtype),
        "w2_packed": Q.pack_int4(rng.integers(-8, 8, (E, H, I))),
        "w2_scale": to_scale(rng.uniform(0.004, 0.02, (E, H, I // g)), scale_dtype),
    }
    if channel:
        w["w13_channel_scale"] = rng.uniform(0.5, 1.5, (E, 2 * I)).astype(np.float32)
        w["w2_channel_scale"] = rng.uniform(0.5, 1.5, (E, H)).astype(np.float32)
    return w


def make_routing(rng, T, E, k):
    ids = np.stack([rng.permutation(E)[:k] for _ in range(T)]).astype(np.int32)
    wts = rng.uniform(0.05, 1.0, (T, k)).astype(np.float32)
    return ids, wts


def make_x(rng, T, H, io_dtype, amp=1.0):
    xf = rng.uniform(-amp, amp, (T, H)).astype(np.float32)
    x = Q.f32_to_io(xf, io_dtype)
    return x, Q.io_to_f32(x, io_dtype)


class LayerCase(unittest.TestCase):
    def check_rows(self, out, io_dtype, want_f32, what):
        got = Q.io_to_f32(out, io_dtype)
        want = Q.io_to_f32(Q.f32_to_io(want_f32, io_dtype), io_dtype)
        self.assertFalse(np.isnan(got).any(), f"{what}: NaN in output")
        err = R.rel_l2_rows(got, want)
        self.assertLessEqual(float(err.max()), TOL, f"{what}: worst row rel-L2 {err.max():.3g}")
        self.assertGreater(float(np.abs(want).max()), 0, f"{what}: reference is all zero")
        return float(err.max())


class TestForward(LayerCase):
    def run_case(self, seed_off, io_dtype="bf16", scale_dtype="bf16", channel=False,
                 activation="silu", T=16, shape=TINY, **kw):
        """The oracle's backend and cpu_ref, each against the numpy reference."""
        rng = rng_for(seed_off)
        H, I, E, k, g = (shape[n] for n in ("hidden", "inter", "experts", "top_k", "group_size"))
        w = make_weights(rng, H, I, E, g, scale_dtype, channel)
        x, xf = make_x(rng, T, H, io_dtype)
        ids, wts = make_routing(rng, T, E, k)
        ref_kw = {n: kw[n] for n in ("act_scheme", "act_scale_in", "act_scale_mid",
                                      "router_weight_on_input") if n in kw}
        want = R.forward(xf, w, ids, wts, g, activation=activation, **ref_kw)
        first = None
        for backend in (None, "cpu_ref"):
            layer = w4a8moe.Layer(weights=w, io_dtype=io_dtype, activation=activation,
                                  max_tokens=64, backend=backend, **shape, **kw)
            self.assertTrue(layer.backend)
            if backend:
                self.assertEqual(layer.backend, backend)
            self.assertEqual(layer.prepfin, "local")
            out = layer.forward(x, topk_ids=ids, topk_weights=wts)
            self.assertEqual(out.shape, (T, H))
            self.check_rows(out, io_dtype, want, f"seed+{seed_off} {layer.backend}")
            first = first or (layer, (x, ids, wts, out))
        return first

    def test_bf16(self):
        layer, (x, ids, wts, out) = self.run_case(10)
        # deterministic: a second forward is bit-identical; out= is filled in place
        poisoned = np.full_like(out, 0x7FC0)  # bf16 NaN everywhere
        again = layer.forward(x, topk_ids=ids, topk_weights=wts, out=poisoned)
        self.assertIs(again, poisoned)
        self.assertTrue(np.array_equal(again, out))
        # int64 ids and float64 weights are converted
        conv = layer(x, topk_ids=ids.astype(np.int64), topk_weights=wts.astype(np.float64))
        self.assertTrue(np.array_equal(conv, out))
        # a non-contiguous x is made contiguous
        wide = np.zeros((x.shape[0], 2 * x.shape[1]), dtype=x.dtype)
        wide[:, ::2] = x
        self.assertTrue(np.array_equal(layer(wide[:, ::2], ids, wts), out))
        # check(): a CPU layer refuses bad ids in forward, so nothing is ever deferred
        self.assertIsNone(layer.check())
        bad = ids.copy()
        bad[3, 0] = 10 ** 6
        with self.assertRaises(w4a8moe.Error) as cm:
            layer(x, topk_ids=bad, topk_weights=wts)
        self.assertIn("token 3", cm.exception.message)
        self.assertIsNone(layer.check())

    def test_f32_channel_gelu(self):
        self.run_case(20, io_dtype="f32", scale_dtype="f32", channel=True,
                      activation="gelu_tanh", shape=dict(TINY, group_size=32))

    def test_f16_static(self):
        self.run_case(30, io_dtype="f16", scale_dtype="f16", act_scheme="static",
                      act_scale_in=1.0 / 448, act_scale_mid=0.05 / 448, T=9)

    def test_quantised_float_weights(self):
        # the example's path: float weights through the min-max quantiser, g = 128, T = 1
        rng = rng_for(40)
        H, I, E, k, g = 256, 256, 4, 2, 128
        w13 = rng.standard_normal((E, 2 * I, H)).astype(np.float32) * 0.05
        w2 = rng.standard_normal((E, H, I)).astype(np.float32) * 0.05
        p13, s13 = w4a8moe.quantize_int4(w13, g)
        p2, s2 = w4a8moe.quantize_int4(w2, g)
        w = dict(w13_packed=p13, w13_scale=s13, w2_packed=p2, w2_scale=s2)
        layer = w4a8moe.Layer(H, I, E, k, g, weights=w, max_tokens=4)
        x, xf = make_x(rng, 1, H, "bf16")
        ids, wts = make_routing(rng, 1, E, k)
        want = R.forward(xf, w, ids, wts, g)
        self.check_rows(layer.forward(x, ids, wts), "bf16", want, "quantised")

    def test_router_weight_on_input_and_logits(self):
        rng = rng_for(50)
        shape = dict(TINY, top_k=1)
        H, E = shape["hidden"], shape["experts"]
        w = make_weights(rng, H, shape["inter"], E, shape["group_size"])
        layer = w4a8moe.Layer(weights=w, routing="sigmoid_top1", router_weight_on_input=True,
                              max_tokens=32, **shape)
        x, xf = make_x(rng, 12, H, "bf16")
        logits = rng.standard_normal((12, E)).astype(np.float32)
        out = layer.forward(x, router_logits=logits)
        ids, wts = w4a8moe.route(logits, top_k=1, routing="sigmoid_top1")
        self.assertTrue(np.array_equal(ids[:, 0], logits.argmax(1)))
        self.assertTrue(np.allclose(wts[:, 0], 1 / (1 + np.exp(-logits.max(1))), rtol=1e-6))
        # the same routing given as ids/weights gives the same bits
        self.assertTrue(np.array_equal(layer.forward(x, ids, wts), out))
        want = R.forward(xf, w, ids, wts, shape["group_size"], router_weight_on_input=True)
        self.check_rows(out, "bf16", want, "weight on input")

    def test_no_expert_ids(self):
        rng = rng_for(60)
        w = make_weights(rng, 256, 128, 8, 64)
        layer = w4a8moe.Layer(weights=w, max_tokens=8, **TINY)
        x, xf = make_x(rng, 5, 256, "bf16")
        ids, wts = make_routing(rng, 5, 8, 2)
        ids[1, 0] = -1
        ids[3, :] = -1
        out = layer.forward(x, ids, wts)
        self.assertTrue((Q.bf16_to_f32(out[3]) == 0).all(), "a token without experts is zero")
        want = R.forward(xf, w, ids, wts, 64)
        keep = [0, 1, 2, 4]
        self.check_rows(out[keep], "bf16", want[keep], "-1 ids")

    def test_borrow_and_zero_tokens(self):
        rng = rng_for(70)
        w = make_weights(rng, 256, 128, 8, 64)
        copy = w4a8moe.Layer(weights=w, max_tokens=8, **TINY)
        borrow = w4a8moe.Layer(weights=w, max_tokens=8, borrow_weights=True, **TINY)
        x, _ = make_x(rng, 6, 256, "bf16")
        ids, wts = make_routing(rng, 6, 8, 2)
        self.assertTrue(np.array_equal(copy(x, ids, wts), borrow(x, ids, wts)))
        empty = copy(x[:0], ids[:0], wts[:0])
        self.assertEqual(empty.shape, (0, 256))
        borrow.close()
        with self.assertRaises(ValueError):
            borrow.forward(x, ids, wts)
        borrow.close()  # twice is fine


class TestErrors(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.w = make_weights(rng_for(80), 256, 128, 8, 64)
        cls.layer = w4a8moe.Layer(weights=cls.w, max_tokens=4, **TINY)
        cls.x, _ = make_x(rng_for(81), 4, 256, "bf16")
        cls.ids, cls.wts = make_routing(rng_for(82), 4, 8, 2)

    def test_create_errors_carry_the_c_message(self):
        with self.assertRaises(w4a8moe.Error) as cm:
            w4a8moe.Layer(weights=self.w, **dict(TINY, group_size=48))
        e = cm.exception
        self.assertEqual(e.status, L.STATUS_INVALID_ARGUMENT)
        self.assertEqual(e.status_name, "INVALID_ARGUMENT")
        self.assertIn("group size g = 48", e.message)
        self.assertIn("hint:", e.message)
        with self.assertRaises(w4a8moe.Error) as cm:
            w4a8moe.Layer(weights=self.w, backend="no_such_backend", **TINY)
        self.assertIn("no_such_backend", cm.exception.message)
        self.assertNotEqual(cm.exception.status, 0)

    def test_forward_errors_carry_the_layer_message(self):
        x5 = np.concatenate([self.x, self.x[:1]])
        ids5 = np.concatenate([self.ids, self.ids[:1]])
        wts5 = np.concatenate([self.wts, self.wts[:1]])
        with self.assertRaises(w4a8moe.Error) as cm:
            self.layer.forward(x5, ids5, wts5)
        self.assertIn("max_tokens = 4", cm.exception.message)
        self.assertIn("hint:", cm.exception.message)
        bad = self.ids.copy()
        bad[2, 1] = 99
        with self.assertRaises(w4a8moe.Error) as cm:
            self.layer.forward(self.x, bad, self.wts)
        self.assertEqual(cm.exception.status, L.STATUS_INVALID_ARGUMENT)
        self.assertIn("topk_ids", cm.exception.message)
        self.assertIn("99", cm.exception.message)
        rep = self.ids.copy()
        rep[0, 1] = rep[0, 0]
        with self.assertRaises(w4a8moe.Error):
            self.layer.forward(self.x, rep, self.wts)
        # the layer still works after errors
        self.layer.forward(self.x, self.ids, self.wts)

    def test_python_side_checks(self):
        with self.assertRaises(TypeError):  # f32 x into a bf16 layer
            self.layer.forward(self.x.astype(np.float32), self.ids, self.wts)
        with self.assertRaises(ValueError):
            self.layer.forward(self.x[:, :128], self.ids, self.wts)
        with self.assertRaises(ValueError):
            self.layer.forward(self.x, self.ids[:, :1], self.wts[:, :1])
        with self.assertRaises(ValueError):
            self.layer.forward(self.x, topk_ids=self.ids)
        with self.assertRaises(ValueError):
            self.layer.forward(self.x, self.ids, self.wts, out=np.empty((4, 256), np.float32))
        w = dict(self.w)
        del w["w2_scale"]
        with self.assertRaisesRegex(ValueError, "w2_scale"):
            w4a8moe.Layer(weights=w, **TINY)
        w = dict(self.w, w13_packed=self.w["w13_packed"][:, :10])
        with self.assertRaisesRegex(ValueError, "w13_packed"):
            w4a8moe.Layer(weights=w, **TINY)
        w = dict(self.w, w2_scale=self.w["w2_scale"].astype(np.float32))
        with self.assertRaisesRegex(TypeError, "share"):
            w4a8moe.Layer(weights=w, **TINY)
        with self.assertRaises(ValueError):
            w4a8moe.Layer(weights=self.w, routing="nope", **TINY)

    def test_cuda_without_cuda(self):
        try:
            text = w4a8moe.explain(device="cuda", **TINY)
        except w4a8moe.Error as e:
            self.assertIn(e.status_name, ("UNSUPPORTED", "DEVICE_ERROR"))
            self.assertTrue(e.message)
        else:  # a CUDA build on a machine with a GPU
            self.assertIn("cuda", text)


class TestThreadsAndImport(unittest.TestCase):
    def test_lock_per_layer(self):
        """A forward waits while another thread holds the layer (its workspace); threads on one
        layer get the bits each gets alone."""
        import threading
        import time
        rng = rng_for(90)
        layer = w4a8moe.Layer(weights=make_weights(rng, 256, 128, 8, 64), max_tokens=16, **TINY)
        x, _ = make_x(rng, 16, 256, "bf16")
        ids, wts = make_routing(rng, 16, 8, 2)
        want = layer(x, ids, wts)
        got = []
        with layer._lock:  # as if another thread's forward were running
            th = threading.Thread(target=lambda: got.append(layer(x, ids, wts)))
            th.start()
            time.sleep(0.3)
            self.assertTrue(th.is_alive() and not got, "forward ran while the layer was held")
        th.join(30)
        self.assertTrue(got and np.array_equal(got[0], want))
        halves = [(x[i:i + 8], ids[i:i + 8], wts[i:i + 8]) for i in (0, 8)]
        outs, errors = [], []

        def worker(j):
            try:
                outs.extend((j, layer(*halves[j])) for _ in range(20))
            except Exception as e:  # reported by the main thread
                errors.append(e)
        threads = [threading.Thread(target=worker, args=(j,)) for j in (0, 1)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        self.assertEqual(errors, [])
        for j, out in outs:
            self.assertTrue(np.array_equal(out, want[8 * j:8 * j + 8]), f"thread {j}")

    def test_without_torch(self):
        """import w4a8moe works with torch unimportable; w4a8moe.torch_ops says it needs it."""
        import os
        import subprocess
        import sys
        code = ("import sys; sys.modules['torch'] = None\n"  # as if torch were not installed
                "import w4a8moe; print(w4a8moe.version())\n"
                "try:\n    w4a8moe.torch_ops\nexcept ModuleNotFoundError as e:\n"
                "    print('needs torch' in str(e))\n")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60, env=dict(os.environ, PYTHONPATH=_common.PY_DIR))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), [w4a8moe.version(), "True"])


class TestExplainRoute(unittest.TestCase):
    def test_explain(self):
        text = w4a8moe.explain(**TINY)
        self.assertIn("cpu_ref", text)
        self.assertIn("selected", text)
        text = w4a8moe.explain("qwen3-30b-a3b", backend="cpu_ref")
        self.assertRegex(text, r"cpu_ref\s+selected")

    def test_softmax_route(self):
        rng = rng_for(90)
        logits = rng.standard_normal((20, 16)).astype(np.float32)
        for renorm in (False, True):
            ids, wts = w4a8moe.route(logits, top_k=3, renormalize=renorm)
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            want_ids = np.argsort(-p, axis=1, kind="stable")[:, :3]
            self.assertTrue(np.array_equal(ids, want_ids))
            want = np.take_along_axis(p, want_ids, 1)
            if renorm:
                want /= want.sum(1, keepdims=True)
            self.assertTrue(np.allclose(wts, want, rtol=1e-5), f"renormalize={renorm}")

    def test_grouped_route(self):
        rng = rng_for(91)
        E, G, TG, k = 32, 8, 3, 4
        logits = rng.standard_normal((10, E)).astype(np.float32)
        bias = rng.uniform(-0.2, 0.2, E).astype(np.float32)
        ids, wts = w4a8moe.route(logits, top_k=k, routing="sigmoid_grouped_topk",
                                 renormalize=True, n_group=G, topk_group=TG,
                                 routed_scaling_factor=2.5, score_bias=bias)
        s = 1 / (1 + np.exp(-logits.astype(np.float64)))
        sb = s + bias
        for t in range(10):
            groups = sb[t].reshape(G, E // G)
            gscore = np.sort(groups, axis=1)[:, -2:].sum(1)
            keep = np.argsort(-gscore, kind="stable")[:TG]
            masked = np.full(E, -np.inf)
            for g in keep:
                masked[g * E // G:(g + 1) * E // G] = sb[t, g * E // G:(g + 1) * E // G]
            want = np.argsort(-masked, kind="stable")[:k]
            self.assertEqual(list(ids[t]), list(want), f"token {t}")
            w = s[t, want] / s[t, want].sum() * 2.5
            self.assertTrue(np.allclose(wts[t], w, rtol=1e-5))

    def test_route_errors(self):
        with self.assertRaises(w4a8moe.Error) as cm:
            w4a8moe.route(np.zeros((2, 12), np.float32), top_k=2, routing="sigmoid_grouped_topk",
                          n_group=5, topk_group=1)
        self.assertIn("n_group", cm.exception.message)


class TestModels(unittest.TestCase):
    def test_table_matches_library(self):
        lib = L.load()
        names = []
        while lib.w4a8moe_model_name(len(names)) is not None:
            names.append(lib.w4a8moe_model_name(len(names)).decode())
        self.assertEqual(names, list(w4a8moe.MODELS), "the library's models vs models.py")
        for name, cfg in w4a8moe.MODELS.items():
            d = L.LayerDesc()
            st = lib.w4a8moe_model_layer_desc_sized(name.encode(), 16, ctypes.byref(d),
                                                    ctypes.sizeof(d))
            self.assertEqual(st, L.STATUS_OK, name)
            mine, _ = w4a8moe.layer._make_desc(max_tokens=16, **cfg)
            for f, _t in L.LayerDesc._fields_:
                if f != "routing":
                    self.assertEqual(getattr(d, f), getattr(mine, f), f"{name}.{f}")
            for f, _t in L.RoutingDesc._fields_[:-1]:
                self.assertEqual(getattr(d.routing, f), getattr(mine.routing, f), f"{name}.{f}")
        d = L.LayerDesc()
        self.assertEqual(lib.w4a8moe_model_layer_desc_sized(b"no-such-model", 16, ctypes.byref(d),
                                                            ctypes.sizeof(d)), 6)
        self.assertIn("qwen3-30b-a3b", lib.w4a8moe_last_error().decode())


if __name__ == "__main__":
    unittest.main()
