/*
 * cpu_prepfin_local.c — the `local` prepare/finalize on the host (single device, EP size 1).
 *
 * prepare: routing (caller's ids/weights, checked; or the router on logits) → counting sort of
 *          the (token, slot) pairs by local expert, stable in (t, j) order → each token
 *          quantised once (contract steps 1-2) and copied into its pairs' rows.
 * finalize: out[t] = sum_j w_j * y_rows[row(t, j)] in f32, j ascending, one rounding.
 * Plain scalar code: both are O(T*k*H), small next to the experts' O(T*k*H*I).
 */
#include "../core/backend.h"
#include "../core/dispatch.h"
#include "../core/router.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Workspace: the dispatch arrays, then routed ids/weights [T, k] for logits, then a cursor
 * per local expert. */
static size_t local_workspace_size(const w4a8moe_stage_ctx *ctx)
{
    const w4a8moe_layer_desc *d = ctx->desc;
    size_t R = (size_t)d->max_tokens * (size_t)d->top_k;
    return w4a8moe_dispatch_bytes(d, ctx->num_local) + 2 * align64(R * 4) +
           align64((size_t)ctx->num_local * 4);
}

static int local_supports_parallel(int32_t rank, int32_t size, char *why, size_t cap)
{
    (void)rank;
    if (size == 1) return 1;
    snprintf(why, cap, "local prepare/finalize serves one device; ep_size is %d", size);
    return 0;
}

/* Quantises token t (steps 1-2) into dst[H]; returns its scale. */
static float quantise_token(const w4a8moe_layer_desc *d, const void *x, int64_t t, float w_in,
                            uint8_t *dst)
{
    int64_t H = d->hidden;
    float scale;
    if (d->act_scheme == W4A8MOE_ACT_FP8_TENSOR_STATIC) {
        scale = d->act_scale_in;
    } else {
        float amax = 0.0f;
        for (int64_t h = 0; h < H; h++) {
            float v = fabsf(w4a8moe_io_get(x, d->io_dtype, t * H + h) * w_in);
            if (amax == amax && !(v <= amax)) amax = v; /* a NaN v sticks */
        }
        scale = w4a8moe_act_scale(amax);
    }
    for (int64_t h = 0; h < H; h++)
        dst[h] = w4a8moe_f32_to_e4m3(w4a8moe_io_get(x, d->io_dtype, t * H + h) * w_in / scale);
    return scale;
}

static w4a8moe_status local_prepare(const w4a8moe_stage_ctx *ctx, void *state, int64_t T,
                                    const void *x, const w4a8moe_routing_input *routing,
                                    void *workspace, w4a8moe_dispatch *dp, void *stream,
                                    w4a8moe_err *err)
{
    (void)state;
    (void)stream;
    const w4a8moe_layer_desc *d = ctx->desc;
    int k = d->top_k, nl = ctx->num_local, e0 = ctx->expert_begin;
    int64_t H = d->hidden, R = (int64_t)d->max_tokens * k;
    w4a8moe_dispatch_carve(d, nl, workspace, dp);
    dp->T = T;
    dp->x = x;
    char *extra = (char *)workspace + w4a8moe_dispatch_bytes(d, nl);
    int32_t *ids = (int32_t *)extra;
    float *wts = (float *)(extra + align64((size_t)R * 4));
    int32_t *cursor = (int32_t *)(extra + 2 * align64((size_t)R * 4));

    if (routing->topk_ids) {
        FORWARD(w4a8moe_check_topk(d, T, routing->topk_ids, routing->topk_weights, err));
        memcpy(ids, routing->topk_ids, (size_t)(T * k) * 4);
        memcpy(wts, routing->topk_weights, (size_t)(T * k) * 4);
    } else {
        FORWARD(w4a8moe_router_run(d, d->routing.score_bias, T, routing->router_logits, ids, wts, err));
    }

    /* counting sort of pairs by local expert; pair_row = -1 for no expert / not local */
    memset(cursor, 0, (size_t)nl * 4);
    for (int64_t p = 0; p < T * k; p++) {
        int e = ids[p] - e0;
        if (ids[p] >= 0 && e >= 0 && e < nl) cursor[e]++;
    }
    dp->expert_offsets[0] = 0;
    for (int e = 0; e < nl; e++) {
        dp->expert_offsets[e + 1] = dp->expert_offsets[e] + cursor[e];
        cursor[e] = dp->expert_offsets[e];
    }
    for (int64_t t = 0; t < T; t++) {
        int64_t first = -1;
        float w_in = d->router_weight_on_input ? wts[t * k] : 1.0f;
        for (int j = 0; j < k; j++) {
            int64_t p = t * k + j;
            int e = ids[p] - e0;
            dp->pair_weight[p] = d->router_weight_on_input ? 1.0f : wts[p];
            if (ids[p] < 0 || e < 0 || e >= nl) {
                dp->pair_row[p] = -1;
                continue;
            }
            int32_t row = cursor[e]++;
            dp->pair_row[p] = row;
            dp->row_token[row] = (int32_t)t;
            if (first < 0) {
                dp->a_scale[row] = quantise_token(d, x, t, w_in, dp->a_q + (int64_t)row * H);
                first = row;
            } else {
                dp->a_scale[row] = dp->a_scale[first];
                memcpy(dp->a_q + (int64_t)row * H, dp->a_q + first * H, (size_t)H);
            }
        }
    }
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status local_finalize(const w4a8moe_stage_ctx *ctx, void *state,
                                     const w4a8moe_dispatch *dp, const w4a8moe_dispatch *shared,
                                     void *out, void *stream, w4a8moe_err *err)
{
    (void)state;
    (void)stream;
    (void)err;
    const w4a8moe_layer_desc *d = ctx->desc;
    int k = d->top_k;
    int64_t H = d->hidden;
    for (int64_t t = 0; t < dp->T; t++) {
        for (int64_t h = 0; h < H; h++) {
            float acc = 0.0f;
            for (int j = 0; j < k; j++) {
                int32_t row = dp->pair_row[t * k + j];
                if (row >= 0) acc += dp->pair_weight[t * k + j] * dp->y_rows[(int64_t)row * H + h];
            }
            if (shared && shared->pair_row[t] >= 0)
                acc += shared->pair_weight[t] * shared->y_rows[(int64_t)shared->pair_row[t] * H + h];
            w4a8moe_io_put(out, d->io_dtype, t * H + h, acc);
        }
    }
    return W4A8MOE_STATUS_OK;
}

const w4a8moe_prepfin_ops w4a8moe_cpu_local_prepfin = {
    .name = "local",
    .api_version = W4A8MOE_BACKEND_API,
    .device_kind = W4A8MOE_DEVICE_CPU,
    .layout = W4A8MOE_LAYOUT_CONTIGUOUS,
    .supports_parallel = local_supports_parallel,
    .workspace_size = local_workspace_size,
    .prepare = local_prepare,
    .finalize = local_finalize,
};
