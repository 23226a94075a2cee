/*
 * dispatch.c — helpers every stage shares: the contiguous dispatch layout inside a workspace,
 * the gated activation of contract step 4, and the host check of caller-given routing.
 */
#include "dispatch.h"

#include <math.h>

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Sizes of the arrays in the order they are carved; R = max_tokens * k. */
static void dispatch_sizes(const w4a8moe_layer_desc *d, int32_t num_local, size_t sz[7])
{
    size_t R = (size_t)d->max_tokens * (size_t)d->top_k, H = (size_t)d->hidden;
    sz[0] = align64(R * H);                        /* a_q e4m3 */
    sz[1] = align64(R * sizeof(float));            /* a_scale */
    sz[2] = align64(((size_t)num_local + 1) * 4);  /* expert_offsets */
    sz[3] = align64(R * 4);                        /* row_token */
    sz[4] = align64(R * 4);                        /* pair_row */
    sz[5] = align64(R * sizeof(float));            /* pair_weight */
    sz[6] = align64(R * H * sizeof(float));        /* y_rows */
}

size_t w4a8moe_dispatch_bytes(const w4a8moe_layer_desc *d, int32_t num_local)
{
    size_t sz[7], total = 0;
    dispatch_sizes(d, num_local, sz);
    for (int i = 0; i < 7; i++) total += sz[i];
    return total;
}

void w4a8moe_dispatch_carve(const w4a8moe_layer_desc *d, int32_t num_local, void *base,
                            w4a8moe_dispatch *out)
{
    size_t sz[7];
    dispatch_sizes(d, num_local, sz);
    char *p = base;
    out->a_q = (uint8_t *)p;            p += sz[0];
    out->a_scale = (float *)p;          p += sz[1];
    out->expert_offsets = (int32_t *)p; p += sz[2];
    out->row_token = (int32_t *)p;      p += sz[3];
    out->pair_row = (int32_t *)p;       p += sz[4];
    out->pair_weight = (float *)p;      p += sz[5];
    out->y_rows = (float *)p;
    out->T = 0;
}

float w4a8moe_activate(w4a8moe_activation act, float gate, float up)
{
    if (act == W4A8MOE_ACTIVATION_GELU_TANH) {
        const float c = 0.7978845608028654f; /* sqrt(2/pi) */
        return 0.5f * gate * (1.0f + tanhf(c * (gate + 0.044715f * gate * gate * gate))) * up;
    }
    return gate / (1.0f + expf(-gate)) * up;
}

w4a8moe_status w4a8moe_check_topk(const w4a8moe_layer_desc *d, int64_t T, const int32_t *ids,
                                  const float *weights, w4a8moe_err *err)
{
    int k = d->top_k, E = d->num_experts;
    for (int64_t t = 0; t < T; t++) {
        const int32_t *id = ids + t * k;
        for (int j = 0; j < k; j++) {
            RETURN_IF(err, id[j] < -1 || id[j] >= E, W4A8MOE_STATUS_INVALID_ARGUMENT,
                      "token %lld: topk_ids[%d] = %d is outside [-1, E = %d)", (long long)t, j,
                      id[j], E);
            for (int i = 0; i < j; i++)
                RETURN_IF(err, id[j] >= 0 && id[i] == id[j], W4A8MOE_STATUS_INVALID_ARGUMENT,
                          "token %lld: expert %d appears twice in topk_ids (slots %d and %d)",
                          (long long)t, id[j], i, j);
            if (weights)
                RETURN_IF(err, id[j] >= 0 && isnan(weights[t * k + j]),
                          W4A8MOE_STATUS_INVALID_ARGUMENT, "token %lld: topk_weights[%d] is NaN",
                          (long long)t, j);
        }
    }
    return W4A8MOE_STATUS_OK;
}
