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
 * exp is the platform's expf (glibc's on the host, CUDA's on the device): they may differ in the
 * last bit, so host and device weights agree to a few ulp and ids agree except between experts
 * whose scores round to within an ulp of each other.
 */
#ifndef W4A8MOE_ROUTE_RULE_H
#define W4A8MOE_ROUTE_RULE_H

#include "quant.h" /* W4A8MOE_HD */
#include "w4a8moe.h"

#include <math.h>

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
    return expf(l - mx);
}

/* Softmax probability from a numerator and the f64 sum of the row's numerators. */
W4A8MOE_HD float w4a8moe_route_softmax_prob(float num, double sum) { return (float)((double)num / sum); }

W4A8MOE_HD float w4a8moe_route_sigmoid(float l) { return 1.0f / (1.0f + expf(-l)); }

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
