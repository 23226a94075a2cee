/*
 * shared_expert.c — see shared_expert.h. The shared pipeline is an ordinary modular kernel
 * (E = 1, k = 1) chosen by the oracle; only the combine is shared with the routed pipeline,
 * through the `shared` argument of finalize, so the output is still one f32 sum and one
 * rounding (docs/numerics.md, step 7).
 */
#include "shared_expert.h"

#include "../common/log.h"
#include "oracle.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

w4a8moe_status w4a8moe_shared_check_routed(const w4a8moe_layer_desc *d, w4a8moe_err *err)
{
    RETURN_IF(err, d->weight_scheme != W4A8MOE_WEIGHT_INT4_GROUP, W4A8MOE_STATUS_UNSUPPORTED,
              "routed experts with weight scheme %d: unquantised (bf16) weights are supported for "
              "shared experts only; hint: pass them as w4a8moe_weights.shared",
              (int)d->weight_scheme);
    RETURN_IF(err, d->act_scheme == W4A8MOE_ACT_BF16, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "int4 routed experts need fp8 activations (token dynamic or tensor static), not the "
              "unquantised activation scheme");
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status check_int4(const w4a8moe_int4_matrix *m, int64_t rows, int64_t cols,
                                 const char *what, w4a8moe_err *err)
{
    RETURN_IF(err, !m->packed || !m->scale, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "shared expert %s: packed or scale pointer is NULL", what);
    RETURN_IF(err, m->rows != rows || m->cols != cols, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "shared expert %s: shape [%lld, %lld] disagrees with the layer, which needs [%lld, %lld]",
              what, (long long)m->rows, (long long)m->cols, (long long)rows, (long long)cols);
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status check_dense(const w4a8moe_dense_matrix *m, int64_t rows, int64_t cols,
                                  const char *what, w4a8moe_err *err)
{
    RETURN_IF(err, !m->data, W4A8MOE_STATUS_INVALID_ARGUMENT, "shared expert %s: data is NULL", what);
    RETURN_IF(err, (unsigned)m->dtype >= W4A8MOE_DTYPE_COUNT_, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "shared expert %s: dtype %d is not a w4a8moe_dtype", what, (int)m->dtype);
    RETURN_IF(err, m->rows != rows || m->cols != cols, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "shared expert %s: shape [%lld, %lld] disagrees with the layer, which needs [%lld, %lld]",
              what, (long long)m->rows, (long long)m->cols, (long long)rows, (long long)cols);
    return W4A8MOE_STATUS_OK;
}

static int finite_pos(float v) { return v > 0.0f && !isinf(v); }

/* The shared pipeline's description: the routed one with E = 1, k = 1 and its own I, g and
 * schemes; no router (its ids are given), no weight on the input, one rank. */
static w4a8moe_status shared_desc(const w4a8moe_layer_desc *d, const w4a8moe_shared_expert *se,
                                  w4a8moe_layer_desc *s, w4a8moe_err *err)
{
    int64_t H = d->hidden, I = se->inter;
    RETURN_IF(err, I < 1 || I > (1 << 22), W4A8MOE_STATUS_INVALID_ARGUMENT,
              "shared expert: inter = %lld must be in [1, 2^22]", (long long)I);
    *s = *d;
    s->num_experts = 1;
    s->top_k = 1;
    s->inter = I;
    s->weight_scheme = se->weight_scheme;
    s->act_scheme = se->act_scheme;
    s->act_scale_in = se->act_scale_in;
    s->act_scale_mid = se->act_scale_mid;
    memset(&s->routing, 0, sizeof s->routing);
    s->routing.kind = W4A8MOE_ROUTING_SOFTMAX_TOPK;
    s->routing.routed_scaling_factor = 1.0f;
    s->router_weight_on_input = 0;
    s->ep_rank = 0;
    s->ep_size = 1;
    if (se->weight_scheme == W4A8MOE_WEIGHT_BF16) {
        RETURN_IF(err, se->act_scheme != W4A8MOE_ACT_BF16, W4A8MOE_STATUS_INVALID_ARGUMENT,
                  "shared expert: bf16 weights need act_scheme W4A8MOE_ACT_BF16");
        return W4A8MOE_STATUS_OK; /* group_size stays the routed g: unused */
    }
    RETURN_IF(err, se->weight_scheme != W4A8MOE_WEIGHT_INT4_GROUP, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "shared expert: weight_scheme %d is not a w4a8moe_weight_scheme", (int)se->weight_scheme);
    RETURN_IF(err, se->act_scheme != W4A8MOE_ACT_FP8_TOKEN_DYNAMIC &&
                       se->act_scheme != W4A8MOE_ACT_FP8_TENSOR_STATIC,
              W4A8MOE_STATUS_INVALID_ARGUMENT,
              "shared expert: int4 weights need fp8 activations (act_scheme %d)", (int)se->act_scheme);
    int g = se->group_size;
    RETURN_IF(err, g != 32 && g != 64 && g != 128, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "shared expert: group size g = %d; hint: g must be 32, 64 or 128", g);
    RETURN_IF(err, H % g || I % g, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "shared expert: H = %lld and I = %lld must be multiples of its g = %d", (long long)H,
              (long long)I, g);
    RETURN_IF(err, (unsigned)se->scale_dtype >= W4A8MOE_DTYPE_COUNT_, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "shared expert: scale_dtype %d is not a w4a8moe_dtype", (int)se->scale_dtype);
    if (se->act_scheme == W4A8MOE_ACT_FP8_TENSOR_STATIC)
        RETURN_IF(err, !finite_pos(se->act_scale_in) || !finite_pos(se->act_scale_mid),
                  W4A8MOE_STATUS_INVALID_ARGUMENT,
                  "shared expert: static scales %g, %g must be finite and > 0",
                  (double)se->act_scale_in, (double)se->act_scale_mid);
    s->group_size = g;
    return W4A8MOE_STATUS_OK;
}

/* The forced backend when it accepts the shared expert, else the best the oracle finds. */
static w4a8moe_status pick_backend(w4a8moe_mk *mk, const char *forced, w4a8moe_err *err)
{
    if (forced && forced[0]) {
        const w4a8moe_experts_ops *ops = w4a8moe_registry_find_experts(forced);
        w4a8moe_verdict v;
        if (ops) {
            w4a8moe_oracle_judge(ops, &mk->dev, &mk->desc, &v);
            if (v.ok) {
                mk->experts = ops;
                mk->prepfin = v.prepfin;
                return W4A8MOE_STATUS_OK;
            }
            w4a8moe_log(W4A8MOE_LOG_INFO,
                        "shared expert: forced backend %s rejects it (%s: %s); the oracle picks",
                        forced, w4a8moe_axis_name(v.axis), v.why);
        }
    }
    return w4a8moe_oracle_select(&mk->dev, &mk->desc, NULL, &mk->experts, &mk->prepfin, err);
}

static w4a8moe_status shared_build(w4a8moe_shared_rt *s, const w4a8moe_mk *routed,
                                   const w4a8moe_shared_expert *se, const char *forced,
                                   w4a8moe_err *err)
{
    const w4a8moe_layer_desc *d = &routed->desc;
    int64_t H = d->hidden, I = se->inter, T = d->max_tokens;
    RETURN_IF(err, routed->dev.kind != W4A8MOE_DEVICE_CPU || d->ep_size != 1,
              W4A8MOE_STATUS_UNSUPPORTED,
              "shared experts run on CPU layers with ep_size 1 for now (this layer: %s, ep_size "
              "%d); hint: create the layer without the shared expert (run --routed-only)",
              routed->dev.kind == W4A8MOE_DEVICE_CPU ? "cpu" : "cuda", d->ep_size);
    w4a8moe_mk *mk = &s->mk;
    FORWARD(shared_desc(d, se, &mk->desc, err));
    w4a8moe_dense_matrix dense[3];
    w4a8moe_logical_weights lw = {se->scale_dtype, 0, 1, NULL, NULL};
    if (se->weight_scheme == W4A8MOE_WEIGHT_BF16) {
        FORWARD(check_dense(&se->gate, I, H, "gate", err));
        FORWARD(check_dense(&se->up, I, H, "up", err));
        FORWARD(check_dense(&se->down, H, I, "down", err));
        dense[0] = se->gate;
        dense[1] = se->up;
        dense[2] = se->down;
        lw.dense = dense;
    } else {
        FORWARD(check_int4(&se->int4.gate, I, H, "gate (w1)", err));
        FORWARD(check_int4(&se->int4.up, I, H, "up (w3)", err));
        FORWARD(check_int4(&se->int4.down, H, I, "down (w2)", err));
        lw.experts = &se->int4;
    }
    s->ids = calloc((size_t)T, sizeof *s->ids);
    s->weights = malloc((size_t)T * sizeof *s->weights);
    RETURN_IF(err, !s->ids || !s->weights, W4A8MOE_STATUS_OUT_OF_MEMORY, "shared routing arrays");
    for (int64_t t = 0; t < T; t++) s->weights[t] = 1.0f;
    if (se->gate_weight) {
        RETURN_IF(err, (unsigned)se->gate_weight_dtype >= W4A8MOE_DTYPE_COUNT_,
                  W4A8MOE_STATUS_INVALID_ARGUMENT, "shared expert gate: dtype %d is not a w4a8moe_dtype",
                  (int)se->gate_weight_dtype);
        s->gate = malloc((size_t)H * sizeof *s->gate);
        RETURN_IF(err, !s->gate, W4A8MOE_STATUS_OUT_OF_MEMORY, "shared expert gate copy");
        for (int64_t h = 0; h < H; h++) s->gate[h] = w4a8moe_io_get(se->gate_weight, se->gate_weight_dtype, h);
    }
    mk->devops = routed->devops;
    mk->dev = routed->dev;
    mk->ctx = routed->ctx;
    mk->ctx.desc = &mk->desc;
    mk->ctx.dev = &mk->dev;
    mk->ctx.expert_begin = 0;
    mk->ctx.num_local = 1;
    FORWARD(pick_backend(mk, forced, err));
    w4a8moe_log(W4A8MOE_LOG_INFO, "shared expert: backend %s with prepare/finalize %s",
                mk->experts->name, mk->prepfin->name);
    RETURN_IF(err, mk->prepfin != routed->prepfin, W4A8MOE_STATUS_UNSUPPORTED,
              "shared expert: its prepare/finalize %s differs from the routed experts' %s, whose "
              "finalize must combine both",
              mk->prepfin->name, routed->prepfin->name);
    return w4a8moe_mk_init(mk, &lw, err);
}

w4a8moe_status w4a8moe_shared_create(const w4a8moe_mk *routed, const w4a8moe_shared_expert *se,
                                     const char *forced, w4a8moe_shared_rt **out, w4a8moe_err *err)
{
    *out = NULL;
    w4a8moe_shared_rt *s = calloc(1, sizeof *s);
    RETURN_IF(err, !s, W4A8MOE_STATUS_OUT_OF_MEMORY, "shared expert pipeline");
    w4a8moe_status st = shared_build(s, routed, se, forced, err);
    if (st != W4A8MOE_STATUS_OK) {
        w4a8moe_shared_free(s);
        return st;
    }
    *out = s;
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status w4a8moe_shared_forward(w4a8moe_mk *routed, w4a8moe_shared_rt *s, int64_t T,
                                      const void *x, const w4a8moe_routing_input *routing,
                                      void *out, void *stream, w4a8moe_err *err)
{
    const w4a8moe_layer_desc *d = &routed->desc;
    int64_t H = d->hidden;
    if (s->gate) {
        for (int64_t t = 0; t < T; t++) {
            float acc = 0.0f;
            for (int64_t h = 0; h < H; h++) acc += w4a8moe_io_get(x, d->io_dtype, t * H + h) * s->gate[h];
            float w = 1.0f / (1.0f + expf(-acc));
            /* NaN only when x[t] has NaN/Inf: the token's output is NaN through the expert's
             * own scale anyway, and a NaN routing weight would be refused by prepare */
            s->weights[t] = w == w ? w : 1.0f;
        }
    }
    w4a8moe_routing_input sr = {.topk_ids = s->ids, .topk_weights = s->weights};
    return w4a8moe_mk_forward_shared(routed, &s->mk, &sr, T, x, routing, out, stream, err);
}

void w4a8moe_shared_free(w4a8moe_shared_rt *s)
{
    if (!s) return;
    if (s->mk.devops) w4a8moe_mk_release(&s->mk);
    free(s->ids);
    free(s->weights);
    free(s->gate);
    free(s);
}

w4a8moe_status w4a8moe_shared_plan(const w4a8moe_mk *routed, const w4a8moe_shared_expert *se,
                                   const char *forced, w4a8moe_mk *mk, w4a8moe_err *err)
{
    FORWARD(shared_desc(&routed->desc, se, &mk->desc, err));
    mk->devops = routed->devops;
    mk->dev = routed->dev;
    mk->ctx = routed->ctx;
    mk->ctx.desc = &mk->desc;
    mk->ctx.dev = &mk->dev;
    mk->ctx.expert_begin = 0;
    mk->ctx.num_local = 1;
    return pick_backend(mk, forced, err);
}
