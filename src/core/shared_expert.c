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
#include <stdio.h>
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

/* The shared pipeline runs on the routed one's device, with its own description and one
 * local expert. */
static void shared_stage_ctx(w4a8moe_mk *mk, const w4a8moe_mk *routed)
{
    mk->devops = routed->devops;
    mk->dev = routed->dev;
    mk->ctx = routed->ctx;
    mk->ctx.desc = &mk->desc;
    mk->ctx.dev = &mk->dev;
    mk->ctx.expert_begin = 0;
    mk->ctx.num_local = 1;
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

/* The host's copy of what the pipeline reads per forward, in memory of the layer's device:
 * host memory on CPU layers, else the device's alloc and upload (init: bytes on the host). */
static w4a8moe_status shared_array(w4a8moe_shared_rt *s, size_t bytes, const void *init, void **out,
                                   w4a8moe_err *err)
{
    *out = NULL;
    if (!s->sdev) {
        *out = malloc(bytes);
        RETURN_IF(err, !*out, W4A8MOE_STATUS_OUT_OF_MEMORY, "shared expert routing array of %zu bytes",
                  bytes);
        memcpy(*out, init, bytes);
        return W4A8MOE_STATUS_OK;
    }
    FORWARD(s->mk.devops->alloc(&s->mk.dev, bytes, out, err));
    return s->sdev->upload(&s->mk.dev, *out, init, bytes, err);
}

static void shared_array_free(w4a8moe_shared_rt *s, void *p)
{
    if (!p) return;
    if (s->sdev)
        s->mk.devops->release(&s->mk.dev, p);
    else
        free(p);
}

/* ids [T] all 0, weights [T] all 1 and the gate [H] widened to f32, on the layer's device. */
static w4a8moe_status shared_routing_arrays(w4a8moe_shared_rt *s, const w4a8moe_shared_expert *se,
                                            int64_t T, int64_t H, w4a8moe_err *err)
{
    if (se->gate_weight)
        RETURN_IF(err, (unsigned)se->gate_weight_dtype >= W4A8MOE_DTYPE_COUNT_,
                  W4A8MOE_STATUS_INVALID_ARGUMENT, "shared expert gate: dtype %d is not a w4a8moe_dtype",
                  (int)se->gate_weight_dtype);
    int32_t *ids = calloc((size_t)T, sizeof *ids);
    float *ones = malloc((size_t)T * sizeof *ones);
    float *gate = se->gate_weight ? malloc((size_t)H * sizeof *gate) : NULL;
    w4a8moe_status st = W4A8MOE_STATUS_OUT_OF_MEMORY;
    if (!ids || !ones || (se->gate_weight && !gate)) {
        w4a8moe_err_set(err, st, __FILE__, __LINE__, "shared expert routing arrays (T = %lld)",
                        (long long)T);
        goto done;
    }
    for (int64_t t = 0; t < T; t++) ones[t] = 1.0f;
    for (int64_t h = 0; gate && h < H; h++) gate[h] = w4a8moe_io_get(se->gate_weight, se->gate_weight_dtype, h);
    st = shared_array(s, (size_t)T * sizeof *ids, ids, (void **)&s->ids, err);
    if (st == W4A8MOE_STATUS_OK)
        st = shared_array(s, (size_t)T * sizeof *ones, ones, (void **)&s->weights, err);
    if (st == W4A8MOE_STATUS_OK && gate)
        st = shared_array(s, (size_t)H * sizeof *gate, gate, (void **)&s->gate, err);
done:
    free(ids);
    free(ones);
    free(gate);
    return st;
}

static w4a8moe_status shared_build(w4a8moe_shared_rt *s, const w4a8moe_mk *routed,
                                   const w4a8moe_shared_expert *se, const char *forced,
                                   w4a8moe_err *err)
{
    const w4a8moe_layer_desc *d = &routed->desc;
    int64_t H = d->hidden, I = se->inter, T = d->max_tokens;
    /* the routed finalize adds the shared rows, so it must see all of them: one rank */
    RETURN_IF(err, d->ep_size != 1, W4A8MOE_STATUS_UNSUPPORTED,
              "shared experts run on layers with ep_size 1 for now (this layer: ep_size %d); "
              "hint: create the layer without the shared expert (run --routed-only)",
              d->ep_size);
    s->sdev = w4a8moe_registry_shared_device(routed->dev.kind);
    RETURN_IF(err, routed->dev.kind != W4A8MOE_DEVICE_CPU && (!s->sdev || !s->sdev->upload || !s->sdev->gate),
              W4A8MOE_STATUS_UNSUPPORTED,
              "shared experts: this build has no shared-expert services for device kind %d; hint: "
              "create the layer without the shared expert (run --routed-only)",
              (int)routed->dev.kind);
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
    shared_stage_ctx(mk, routed);
    FORWARD(shared_routing_arrays(s, se, T, H, err));
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

/* The Qwen2-MoE gate on the host: weights[t] = sigmoid(x[t] . gate), f32, h ascending. */
static void host_gate(const w4a8moe_layer_desc *d, const w4a8moe_shared_rt *s, int64_t T, const void *x)
{
    int64_t H = d->hidden;
    for (int64_t t = 0; t < T; t++) {
        float acc = 0.0f;
        for (int64_t h = 0; h < H; h++) acc += w4a8moe_io_get(x, d->io_dtype, t * H + h) * s->gate[h];
        float w = 1.0f / (1.0f + expf(-acc));
        /* NaN only when x[t] has NaN/Inf: the token's output is NaN through the expert's
         * own scale anyway, and a NaN routing weight would be refused by prepare */
        s->weights[t] = w == w ? w : 1.0f;
    }
}

w4a8moe_status w4a8moe_shared_forward(w4a8moe_mk *routed, w4a8moe_shared_rt *s, int64_t T,
                                      const void *x, const w4a8moe_routing_input *routing,
                                      void *out, void *stream, w4a8moe_err *err)
{
    const w4a8moe_layer_desc *d = &routed->desc;
    if (s->gate) {
        if (s->sdev) /* a kernel on stream: the shared prepare after it reads the weights */
            FORWARD(s->sdev->gate(&routed->dev, T, d->hidden, x, d->io_dtype, s->gate, s->weights,
                                  stream, err));
        else
            host_gate(d, s, T, x);
    }
    w4a8moe_routing_input sr = {.topk_ids = s->ids, .topk_weights = s->weights};
    return w4a8moe_mk_forward_shared(routed, &s->mk, &sr, T, x, routing, out, stream, err);
}

void w4a8moe_shared_free(w4a8moe_shared_rt *s)
{
    if (!s) return;
    if (s->mk.devops) {
        w4a8moe_mk_release(&s->mk);
        shared_array_free(s, s->ids);
        shared_array_free(s, s->weights);
        shared_array_free(s, s->gate);
    }
    free(s);
}

w4a8moe_status w4a8moe_shared_plan(const w4a8moe_mk *routed, const w4a8moe_shared_expert *se,
                                   const char *forced, w4a8moe_mk *mk, w4a8moe_err *err)
{
    FORWARD(shared_desc(&routed->desc, se, &mk->desc, err));
    shared_stage_ctx(mk, routed);
    return pick_backend(mk, forced, err);
}

/* ---- explain ------------------------------------------------------------------------------ */

/* pick_backend without the log: the forced backend when it accepts sd, else the first that
 * does; NULL when none. */
static const w4a8moe_experts_ops *quiet_choice(const w4a8moe_device_info *dev,
                                               const w4a8moe_layer_desc *sd, const char *forced,
                                               w4a8moe_verdict *v)
{
    const w4a8moe_experts_ops *ops = forced && forced[0] ? w4a8moe_registry_find_experts(forced) : NULL;
    if (ops) {
        w4a8moe_oracle_judge(ops, dev, sd, v);
        if (v->ok) return ops;
    }
    size_t n;
    const w4a8moe_experts_ops *const *ex = w4a8moe_registry_experts(&n);
    for (size_t i = 0; i < n; i++) {
        w4a8moe_oracle_judge(ex[i], dev, sd, v);
        if (v->ok) return ex[i];
    }
    return NULL;
}

static void report_one(const w4a8moe_device_info *dev, const w4a8moe_layer_desc *sd,
                       const char *forced, const char *what, char *buf, size_t cap, size_t *used)
{
    w4a8moe_verdict v;
    const w4a8moe_experts_ops *ops = quiet_choice(dev, sd, forced, &v);
    if (ops)
        w4a8moe_report_appendf(buf, cap, used, "  %s: %s (prepare/finalize: %s)\n", what, ops->name,
                               v.prepfin->name);
    else
        w4a8moe_report_appendf(buf, cap, used, "  %s: no backend runs it on this device\n", what);
}

size_t w4a8moe_shared_report(const w4a8moe_device_info *dev, const w4a8moe_layer_desc *d,
                             const char *forced, char *buf, size_t cap)
{
    size_t used = 0;
    if (cap) buf[0] = '\0';
    w4a8moe_report_appendf(buf, cap, &used,
                           "shared expert, if the layer has one (a second pipeline: E = 1, k = 1):\n");
    if (d->ep_size != 1) {
        w4a8moe_report_appendf(buf, cap, &used,
                               "  not run with ep_size %d (shared experts need ep_size 1)\n",
                               d->ep_size);
        return used;
    }
    w4a8moe_shared_expert se;
    memset(&se, 0, sizeof se);
    se.inter = d->inter;
    se.weight_scheme = W4A8MOE_WEIGHT_INT4_GROUP;
    se.act_scheme = d->act_scheme == W4A8MOE_ACT_FP8_TENSOR_STATIC ? d->act_scheme
                                                                   : W4A8MOE_ACT_FP8_TOKEN_DYNAMIC;
    se.group_size = d->group_size;
    se.act_scale_in = d->act_scale_in;
    se.act_scale_mid = d->act_scale_mid;
    w4a8moe_layer_desc sd;
    w4a8moe_err err;
    if (shared_desc(d, &se, &sd, &err) == W4A8MOE_STATUS_OK)
        report_one(dev, &sd, forced, "int4 x fp8 (I and g as the routed experts')", buf, cap, &used);
    se.weight_scheme = W4A8MOE_WEIGHT_BF16;
    se.act_scheme = W4A8MOE_ACT_BF16;
    if (shared_desc(d, &se, &sd, &err) == W4A8MOE_STATUS_OK)
        report_one(dev, &sd, forced, "unquantised (bf16/f16/f32 weights, block-FP8 dequantised)", buf,
                   cap, &used);
    return used;
}
