/*
 * router.c — host routing: softmax top-k, DeepSeek-V3 grouped sigmoid top-k, Llama-4 top-1.
 * Plain scalar code: routing is O(T*E) next to the O(T*k*H*I) experts. The scalar rules (order,
 * NaN, scores, weights) are src/common/route_rule.h, shared with the CUDA router; this file
 * only scans. Ties are broken by the scan order (lower index first).
 */
#include "router.h"

#include "../common/route_rule.h"

#include <math.h>
#include <stdlib.h>

/* Index of the best unchosen entry of v[0..n) among those with allowed[i] (NULL: all). */
static int pick_best(const float *v, int n, const unsigned char *taken, const unsigned char *allowed)
{
    int best = -1;
    for (int i = 0; i < n; i++) {
        if (taken[i] || (allowed && !allowed[i])) continue;
        if (best < 0 || w4a8moe_route_above(v[i], v[best])) best = i;
    }
    return best;
}

w4a8moe_status w4a8moe_router_validate(const w4a8moe_layer_desc *d, w4a8moe_err *err)
{
    const w4a8moe_routing_desc *r = &d->routing;
    RETURN_IF(err, (int)r->kind < 0 || r->kind >= W4A8MOE_ROUTING_COUNT_,
              W4A8MOE_STATUS_INVALID_ARGUMENT, "routing.kind = %d is not a w4a8moe_routing value",
              (int)r->kind);
    if (r->kind == W4A8MOE_ROUTING_SIGMOID_TOP1)
        RETURN_IF(err, d->top_k != 1, W4A8MOE_STATUS_INVALID_ARGUMENT,
                  "sigmoid_top1 routing needs k = 1, got k = %d", d->top_k);
    if (r->kind == W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK) {
        RETURN_IF(err, r->n_group <= 0 || d->num_experts % r->n_group != 0,
                  W4A8MOE_STATUS_INVALID_ARGUMENT,
                  "routing.n_group = %d must be > 0 and divide E = %d", r->n_group,
                  d->num_experts);
        RETURN_IF(err, r->topk_group <= 0 || r->topk_group > r->n_group,
                  W4A8MOE_STATUS_INVALID_ARGUMENT, "routing.topk_group = %d must be in [1, n_group = %d]",
                  r->topk_group, r->n_group);
        int per_group = d->num_experts / r->n_group;
        RETURN_IF(err, (int64_t)r->topk_group * per_group < d->top_k, W4A8MOE_STATUS_INVALID_ARGUMENT,
                  "routing keeps topk_group * E / n_group = %d experts, fewer than k = %d",
                  r->topk_group * per_group, d->top_k);
        RETURN_IF(err, per_group < 2, W4A8MOE_STATUS_INVALID_ARGUMENT,
                  "grouped routing scores a group by its two best experts; E / n_group = %d",
                  per_group);
    }
    RETURN_IF(err, !(r->routed_scaling_factor > 0.0f) || isinf(r->routed_scaling_factor),
              W4A8MOE_STATUS_INVALID_ARGUMENT,
              "routing.routed_scaling_factor = %g must be finite and > 0 (1 means none)",
              (double)r->routed_scaling_factor);
    return W4A8MOE_STATUS_OK;
}

static void route_softmax(const w4a8moe_layer_desc *d, const float *l, float *p, unsigned char *taken,
                          int32_t *ids, float *w)
{
    int E = d->num_experts, k = d->top_k;
    float mx = l[0];
    for (int e = 1; e < E; e++)
        if (w4a8moe_route_above(l[e], mx)) mx = l[e];
    double sum = 0;
    for (int e = 0; e < E; e++) {
        p[e] = w4a8moe_route_softmax_num(l[e], mx); /* NaN ranks lowest: probability 0 */
        sum += p[e];
    }
    for (int e = 0; e < E; e++) p[e] = w4a8moe_route_softmax_prob(p[e], sum);
    float total = 0;
    for (int j = 0; j < k; j++) {
        int e = pick_best(p, E, taken, NULL);
        taken[e] = 1;
        ids[j] = e;
        w[j] = p[e];
        total += p[e];
    }
    for (int j = 0; j < k; j++)
        w[j] = w4a8moe_route_weight(W4A8MOE_ROUTING_SOFTMAX_TOPK, w[j], total, d->routing.renormalize,
                                    d->routing.routed_scaling_factor);
}

static void route_grouped(const w4a8moe_layer_desc *d, const float *bias, const float *l, float *s,
                          float *sb, unsigned char *taken, unsigned char *allowed, int32_t *ids,
                          float *w)
{
    int E = d->num_experts, k = d->top_k, G = d->routing.n_group, per = E / G;
    for (int e = 0; e < E; e++) {
        s[e] = w4a8moe_route_sigmoid(l[e]);
        sb[e] = w4a8moe_route_biased(l[e], bias ? bias[e] : 0.0f);
    }
    /* group score = sum of the two largest biased scores of the group; reuse s+E as scratch */
    float *gscore = sb + E;
    for (int g = 0; g < G; g++) {
        float a = -INFINITY, b = -INFINITY;
        for (int e = g * per; e < (g + 1) * per; e++) w4a8moe_route_top2_push(sb[e], &a, &b);
        gscore[g] = a + b;
    }
    unsigned char *gtaken = allowed + E;
    for (int g = 0; g < G; g++) gtaken[g] = 0;
    for (int e = 0; e < E; e++) allowed[e] = 0;
    for (int i = 0; i < d->routing.topk_group; i++) {
        int g = pick_best(gscore, G, gtaken, NULL);
        gtaken[g] = 1;
        for (int e = g * per; e < (g + 1) * per; e++) allowed[e] = 1;
    }
    float total = 0;
    for (int j = 0; j < k; j++) {
        int e = pick_best(sb, E, taken, allowed);
        taken[e] = 1;
        ids[j] = e;
        w[j] = s[e];
        total += s[e];
    }
    for (int j = 0; j < k; j++)
        w[j] = w4a8moe_route_weight(W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK, w[j], total,
                                    d->routing.renormalize, d->routing.routed_scaling_factor);
}

static void route_top1(const w4a8moe_layer_desc *d, const float *l, unsigned char *taken, int32_t *ids,
                       float *w)
{
    int e = pick_best(l, d->num_experts, taken, NULL);
    ids[0] = e;
    w[0] = w4a8moe_route_weight(W4A8MOE_ROUTING_SIGMOID_TOP1, w4a8moe_route_sigmoid(l[e]), 0.0f,
                                d->routing.renormalize, d->routing.routed_scaling_factor);
}

w4a8moe_status w4a8moe_router_run(const w4a8moe_layer_desc *d, const float *score_bias, int64_t T,
                                  const float *logits, int32_t *ids, float *weights,
                                  w4a8moe_err *err)
{
    FORWARD(w4a8moe_router_validate(d, err));
    int E = d->num_experts, k = d->top_k;
    /* scratch: 2E + n_group floats and as many flags */
    size_t nf = 2 * (size_t)E + (size_t)d->routing.n_group + 1;
    float *f = malloc(nf * sizeof *f);
    unsigned char *flags = malloc(nf);
    if (!f || !flags) {
        free(f);
        free(flags);
        RETURN_ERR(err, W4A8MOE_STATUS_OUT_OF_MEMORY, "router scratch of %zu bytes", nf * 5);
    }
    for (int64_t t = 0; t < T; t++) {
        const float *l = logits + t * E;
        unsigned char *taken = flags;
        for (int e = 0; e < E; e++) taken[e] = 0;
        int32_t *id = ids + t * k;
        float *w = weights + t * k;
        switch (d->routing.kind) {
        case W4A8MOE_ROUTING_SOFTMAX_TOPK: route_softmax(d, l, f, taken, id, w); break;
        case W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK:
            /* flags: taken [E], allowed [E], group taken [n_group] */
            route_grouped(d, score_bias, l, f, f + E, taken, flags + E, id, w);
            break;
        default: route_top1(d, l, taken, id, w); break;
        }
    }
    free(f);
    free(flags);
    return W4A8MOE_STATUS_OK;
}
