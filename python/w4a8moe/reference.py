"""reference.py — docs/numerics.md in numpy, written apart from the C code, for
tests and examples: the whole forward of one layer on the host, from the stacked checkpoint-form
weights the Layer takes. Slow and plain on purpose (f32 where the contract says f32, sums in
f64 like cpu_ref); tiny layers only.
"""
from . import quant as Q


def _np():
    return Q._np()


def _weights_f32(weights, key):
    np = _np()
    s = weights[key]
    s = np.asarray(s.cpu() if hasattr(s, "cpu") else s)
    return Q.bf16_to_f32(s) if s.dtype == np.uint16 else s.astype(np.float32)


def _gemm(packed, scale, channel, g, a):
    """sum_b S[n,b] * sum_{k in b} q[n,k] * a[r,k] in f64, times C[n]: [R, N] for a [R, K]."""
    np = _np()
    q = Q.unpack_int4(packed).astype(np.float64)                  # [N, K]
    N, K = q.shape
    P = np.einsum("nbk,rbk->rnb", q.reshape(N, K // g, g),
                  a.astype(np.float64).reshape(a.shape[0], K // g, g))
    acc = (P * scale.astype(np.float64)[None]).sum(-1)            # [R, N]
    if channel is not None:
        acc = acc * channel.astype(np.float64)[None]
    return acc


def activate(activation, gate, up):
    """Step 4 in f32. exp and tanh are taken in f64 and rounded once to f32 (the correctly
    rounded value, as the C library's expf gives in practice): numpy's own f32 exp can differ
    from it in the last bit, which can flip a requantised e4m3 code and move a whole output row
    by ~1e-3 (seen: test_layer.py's bf16 case at W4A8MOE_TEST_SEED=1507497938, 2.2e-3 against
    its 2e-3)."""
    np = _np()
    gate, up = gate.astype(np.float32), up.astype(np.float32)
    if activation == "gelu_tanh":
        c = np.float32(0.7978845608028654)
        inner = c * (gate + np.float32(0.044715) * gate * gate * gate)
        t = np.tanh(inner.astype(np.float64)).astype(np.float32)
        return (np.float32(0.5) * gate * (np.float32(1) + t) * up).astype(np.float32)
    e = np.exp(-gate.astype(np.float64)).astype(np.float32)
    return (gate / (np.float32(1) + e) * up).astype(np.float32)


def forward(x, weights, topk_ids, topk_weights, group_size, *, activation="silu",
            router_weight_on_input=False, act_scheme="dynamic", act_scale_in=None,
            act_scale_mid=None):
    """x float32 [T, H] (the input's values), stacked weights as for Layer (numpy arrays),
    topk_ids [T, k], topk_weights [T, k] → float32 [T, H], the combine's f32 result before the
    final rounding to the output dtype (apply w4a8moe.f32_to_io for that)."""
    np = _np()
    x = np.asarray(x, dtype=np.float32)
    ids, wts = np.asarray(topk_ids), np.asarray(topk_weights, dtype=np.float32)
    T, H = x.shape
    k = ids.shape[1]
    w13, w2 = np.asarray(weights["w13_packed"]), np.asarray(weights["w2_packed"])
    E = w13.shape[0]
    I = w13.shape[1] // 2
    w13 = w13.reshape(E, 2 * I, H // 8)
    w2 = w2.reshape(E, H, I // 8)
    s13 = _weights_f32(weights, "w13_scale").reshape(E, 2 * I, H // group_size)
    s2 = _weights_f32(weights, "w2_scale").reshape(E, H, I // group_size)
    c13, c2 = weights.get("w13_channel_scale"), weights.get("w2_channel_scale")
    c13 = None if c13 is None else np.asarray(c13, dtype=np.float32).reshape(E, 2 * I)
    c2 = None if c2 is None else np.asarray(c2, dtype=np.float32).reshape(E, H)
    static = act_scheme in ("static", "fp8_tensor_static")

    # steps 1-2: one quantised copy of each token
    w_in = wts[:, :1] if router_weight_on_input else np.ones((T, 1), np.float32)
    xs = (x * w_in).astype(np.float32)
    if static:
        s_t = np.full(T, np.float32(act_scale_in), np.float32)
    else:
        s_t = Q.act_scale(np.abs(xs).max(axis=1))
    a = Q.round_e4m3(xs / s_t[:, None])

    out = np.zeros((T, H), np.float32)
    o_pairs = np.zeros((T, k, H), np.float32)
    for e in range(E):
        tt, jj = np.nonzero(ids == e)
        if tt.size == 0:
            continue
        # step 3: GEMM1, result rounded to f32 like cpu_ref's h[]
        h = (s_t[tt, None].astype(np.float64) *
             _gemm(w13[e], s13[e], None if c13 is None else c13[e], group_size, a[tt]))
        h = h.astype(np.float32)
        y = activate(activation, h[:, :I], h[:, I:])                 # step 4
        if static:                                                    # step 5
            r = np.full(tt.size, np.float32(act_scale_mid), np.float32)
        else:
            r = Q.act_scale(np.abs(y).max(axis=1))
        b = Q.round_e4m3(y / r[:, None])
        o = r[:, None].astype(np.float64) * _gemm(w2[e], s2[e], None if c2 is None else c2[e],
                                                  group_size, b)    # step 6
        o_pairs[tt, jj] = o.astype(np.float32)
    # step 7: f32 combine, j ascending
    pw = np.ones_like(wts) if router_weight_on_input else wts
    for j in range(k):
        valid = (ids[:, j] >= 0)[:, None]
        out = np.where(valid, (out + pw[:, j:j + 1] * o_pairs[:, j]).astype(np.float32), out)
    return out


def rel_l2_rows(got, want):
    """Per-row relative L2 error ||got - want|| / ||want|| (0 where both rows are zero)."""
    np = _np()
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    num = np.sqrt(((got - want) ** 2).sum(axis=1))
    den = np.sqrt((want ** 2).sum(axis=1))
    return np.where(den > 0, num / np.where(den > 0, den, 1), num)
