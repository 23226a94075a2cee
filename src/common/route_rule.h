/*
 * route_rule.h — the scalar rules of routing (docs/numerics.md "Routing"): how experts rank,
 * how a logit becomes a score, and how the chosen scores become weights. One copy, compiled by
 * the host router (src/core/router.c) and the device router (src/cuda/kernels/local_route.cuh),
 * so the two rank, break ties and weigh alike (every function is W4A8MOE_HD: host and device).
 * The routers own only the loops (a scan on the host, warp reductions on the device).
 *
 *   order     larger value first; NaN after every number (so a NaN logit ranks lowest, as if it
 *             were -inf, and routing still yields k distinct valid experts); equal values: the
 *             lower expert index first.
 *   softmax   p_e = num_e / sum, num_e = exp(l_e - max) with max the largest logit in that order;
 *             num_e = 0 for a NaN logit and exactly 1 for a logit equal to max (also when max is
 *             ±inf: +inf logits share the mass equally, a row of -inf is uniform); sum in f64 of
 *             the f32 num_e; a row of NaN logits has sum 0 and NaN weights (its output is NaN).
 *   sigmoid   1 / (1 + exp(-l)) in f32; grouped routing ranks s + bias, weighs with s.
 *   groups    a group's score is the f32 sum of its two best biased scores (-inf for a missing
 *             one), ranked in the same order.
 *   weights   renormalise (w / total, total the f32 sum in pick order) only when total > 0;
 *             grouped routing then multiplies by routed_scaling_factor (a second rounding);
 *             sigmoid_top1 never renormalises (k = 1: its weight is sigmoid(logit)).
 *
 * exp is w4a8moe_route_exp below, not the platform's expf: glibc's and CUDA's differ in the last
 * bit now and then, and with the router weight on the input (Llama-4) one ulp of a weight can
 * flip an e4m3 code of x·w and, at small H and I, move a whole output row by percents (the
 * likely cause of one row at 4.8e-2 on both GPU backends in docs/numerics.md "Routing").
 * With one exp of IEEE operations, each rounded once, the host and the device router give the
 * same scores, ids and weights bit for bit.
 */
#ifndef W4A8MOE_ROUTE_RULE_H
#define W4A8MOE_ROUTE_RULE_H

#include "quant.h" /* W4A8MOE_HD */
#include "w4a8moe.h"

#include <math.h>

/* One f32 multiply and add, each rounded once: the device's explicit roundings keep nvcc from
 * fusing them (it contracts a * b + c by default); the host compiles in ISO C/C++ mode, where
 * GCC and Clang do not contract. */
#ifdef __CUDA_ARCH__
#define W4A8MOE_RMUL(a, b) __fmul_rn((a), (b))
#define W4A8MOE_RADD(a, b) __fadd_rn((a), (b))
#else
#define W4A8MOE_RMUL(a, b) ((a) * (b))
#define W4A8MOE_RADD(a, b) ((a) + (b))
#endif

/* 2^n as an f32, for -126 <= n <= 127 (the exponent field alone). */
W4A8MOE_HD float w4a8moe_route_pow2(int n) { return w4a8moe_bits_f32((uint32_t)(n + 127) << 23); }

/* exp(x) in f32, the same bits on host and device (see the header): x = n ln2 + r with
 * |r| <= ln2/2 (Cody-Waite, ln2 in two parts so n·ln2_hi is exact), exp(r) by a degree-7
 * Taylor polynomial in Horner form (truncation < 1e-8 relative), times 2^n in two exact-or-
 * once-rounded steps. Within 2 ulp of exp; NaN gives NaN, exp(-inf) = 0, exp(+inf) = inf. */
W4A8MOE_HD float w4a8moe_route_exp(float x)
{
    if (x != x) return x;
    if (x > 88.8f) return INFINITY;
    if (x < -104.0f) return 0.0f;
    const float n = rintf(W4A8MOE_RMUL(x, 1.44269502f));
    const float r = W4A8MOE_RADD(W4A8MOE_RADD(x, -W4A8MOE_RMUL(n, 0.693145751953125f)),
                                 -W4A8MOE_RMUL(n, 1.42860677e-6f));
    float p = 1.98412701e-4f; /* 1/7! */
    p = W4A8MOE_RADD(W4A8MOE_RMUL(p, r), 1.38888892e-3f);
    p = W4A8MOE_RADD(W4A8MOE_RMUL(p, r), 8.33333377e-3f);
    p = W4A8MOE_RADD(W4A8MOE_RMUL(p, r), 4.16666679e-2f);
    p = W4A8MOE_RADD(W4A8MOE_RMUL(p, r), 1.66666672e-1f);
    p = W4A8MOE_RADD(W4A8MOE_RMUL(p, r), 0.5f);
    p = W4A8MOE_RADD(W4A8MOE_RMUL(p, r), 1.0f);
    p = W4A8MOE_RADD(W4A8MOE_RMUL(p, r), 1.0f);
    const int ni = (int)n; /* -150 .. 129 */
    const int n1 = ni / 2; /* two steps, so that 2^n1 and 2^(n - n1) are normal numbers */
    return W4A8MOE_RMUL(W4A8MOE_RMUL(p, w4a8moe_route_pow2(n1)), w4a8moe_route_pow2(ni - n1));
}

/* a ranks above b: larger value, NaN lowest. */
W4A8MOE_HD int w4a8moe_route_above(float a, float b)
{
    if (a != a) return 0;
    if (b != b) return 1;
    return a > b;
}

/* (a, expert ia) comes before (b, expert ib) in the selection order. */
W4A8MOE_HD int w4a8moe_route_before(float a, int ia, float b, int ib)
{
    if (w4a8moe_route_above(a, b)) return 1;
    if (w4a8moe_route_above(b, a)) return 0;
    return ia < ib;
}

/* Softmax numerator of logit l given the row's max mx (the best logit in the order above). */
W4A8MOE_HD float w4a8moe_route_softmax_num(float l, float mx)
{
    if (l != l) return 0.0f;
    if (l == mx) return 1.0f; /* exp(0) exactly; also keeps inf - inf out */
    return w4a8moe_route_exp(l - mx);
}

/* Softmax probability from a numerator and the f64 sum of the row's numerators. */
W4A8MOE_HD float w4a8moe_route_softmax_prob(float num, double sum) { return (float)((double)num / sum); }

W4A8MOE_HD float w4a8moe_route_sigmoid(float l) { return 1.0f / (1.0f + w4a8moe_route_exp(-l)); }

/* The score grouped routing ranks by: sigmoid(l) + bias (bias 0 when the layer has none). */
W4A8MOE_HD float w4a8moe_route_biased(float l, float bias) { return w4a8moe_route_sigmoid(l) + bias; }

/* Keeps the two best values seen so far (*a >= *b in the order); start both at -inf. */
W4A8MOE_HD void w4a8moe_route_top2_push(float v, float *a, float *b)
{
    if (w4a8moe_route_above(v, *a)) {
        *b = *a;
        *a = v;
    } else if (w4a8moe_route_above(v, *b)) {
        *b = v;
    }
}

/* Final weight of a pick with raw weight w (softmax: p; grouped: s; top1: sigmoid) and total,
 * the f32 sum of the token's raw weights in pick order. kind: a w4a8moe_routing value. */
W4A8MOE_HD float w4a8moe_route_weight(int kind, float w, float total, int renormalize, float scale)
{
    if (kind == W4A8MOE_ROUTING_SIGMOID_TOP1) return w;
    if (renormalize && total > 0.0f) w = w / total;
    if (kind == W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK) w = w * scale;
    return w;
}

#endif /* W4A8MOE_ROUTE_RULE_H */
