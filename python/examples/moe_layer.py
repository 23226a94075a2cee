#!/usr/bin/env python3
"""moe_layer.py — one W4A8 MoE layer from Python, end to end:

  1. random float expert weights, quantised to int4 with the checkpoint quantiser's rule
     (w4a8moe.quantize_int4: scale = absmax / 7.5 in bf16, round half to even);
  2. a w4a8moe.Layer on the CPU (numpy arrays) or the GPU (torch tensors, torch's stream);
  3. the model's router on random logits, one forward;
  4. the result against the numpy reference of the numerics contract (the same int4 weights,
     so only rounding noise is left) and against the float weights it was quantised from (the
     quantisation error itself).

  python3 python/examples/moe_layer.py [--model tiny] [--tokens 8] [--device cpu|cuda]

Needs numpy (and torch for --device cuda) and the built library (`make`; or set W4A8MOE_LIB).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import w4a8moe  # noqa: E402
from w4a8moe import reference  # noqa: E402


def float_forward(x, w13, w2, ids, wts, router_weight_on_input=False):
    """The layer in plain f32 with unquantised weights: what the int4 layer approximates."""
    I = w2.shape[2]
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        xt = x[t] * (wts[t, 0] if router_weight_on_input else 1.0)
        for j, e in enumerate(ids[t]):
            if e < 0:
                continue
            h = w13[e] @ xt
            y = h[:I] / (1 + np.exp(-h[:I])) * h[I:]
            out[t] += (1.0 if router_weight_on_input else wts[t, j]) * (w2[e] @ y)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", choices=sorted(w4a8moe.MODELS))
    p.add_argument("--tokens", type=int, default=8)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    cfg = w4a8moe.model_config(args.model)
    H, I, E, k, g = (cfg[n] for n in ("hidden", "inter", "experts", "top_k", "group_size"))
    rng = np.random.default_rng(args.seed)

    # 1. float weights, stacked as the checkpoint stores them: w13 = gate rows then up rows
    w13 = (rng.standard_normal((E, 2 * I, H)) / np.sqrt(H)).astype(np.float32)
    w2 = (rng.standard_normal((E, H, I)) / np.sqrt(I)).astype(np.float32)
    p13, s13 = w4a8moe.quantize_int4(w13, g)   # int32 [E, 2I, H/8], bf16 bits [E, 2I, H/g]
    p2, s2 = w4a8moe.quantize_int4(w2, g)      # int32 [E, H, I/8],  bf16 bits [E, H, I/g]
    weights = dict(w13_packed=p13, w13_scale=s13, w2_packed=p2, w2_scale=s2)

    # 2. inputs: bf16 activations (numpy holds bf16 as uint16 bits) and the model's routing
    x = w4a8moe.f32_to_bf16(rng.standard_normal((args.tokens, H)).astype(np.float32))
    logits = rng.standard_normal((args.tokens, E)).astype(np.float32)
    ids, wts = w4a8moe.route(logits, model=args.model)

    print(w4a8moe.explain(args.model, device=args.device, max_tokens=args.tokens).rstrip())
    if args.device == "cpu":
        layer = w4a8moe.Layer(model=args.model, weights=weights, max_tokens=args.tokens)
        out = layer.forward(x, topk_ids=ids, topk_weights=wts)
    else:
        import torch
        layer = w4a8moe.Layer(model=args.model, weights=weights, max_tokens=args.tokens,
                              device="cuda")
        xt = torch.from_numpy(x.view(np.int16)).view(torch.bfloat16).cuda()
        # router logits on the device: the layer's own router runs there
        out_t = layer.forward(xt, router_logits=torch.from_numpy(logits).cuda())
        out = out_t.cpu().view(torch.int16).numpy().view(np.uint16)
    print(f"\n{layer}")

    # 3. the same layer in numpy (contract steps 1-7), and the float layer
    xf = w4a8moe.bf16_to_f32(x)
    rwi = cfg.get("router_weight_on_input", False)
    want = reference.forward(xf, weights, ids, wts, g, router_weight_on_input=rwi)
    got = w4a8moe.bf16_to_f32(out)
    ref_err = reference.rel_l2_rows(got, w4a8moe.round_bf16(want))
    flt_err = reference.rel_l2_rows(got, float_forward(xf, w13, w2, ids, wts, rwi))
    print(f"out[0, :6]           = {np.array2string(got[0, :6], precision=4)}")
    print(f"vs numpy reference   : worst row rel-L2 {ref_err.max():.2e} (contract: <= 2e-3)")
    print(f"vs float weights     : worst row rel-L2 {flt_err.max():.2e} (the int4 + fp8 quantisation error)")
    return 0 if ref_err.max() <= 2e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
