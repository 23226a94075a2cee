/*
 * layer.c — the public w4a8moe_layer_* functions: validate the description and the weights,
 * ask the oracle once, build the modular kernel, run forwards.
 */
#include "../common/log.h"
#include "dispatch.h"
#include "layer_impl.h"
#include "oracle.h"
#include "router.h"
#include "struct_abi.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void w4a8moe_layer_desc_init_sized(w4a8moe_layer_desc *caller, size_t size)
{
    if (!caller) return;
    w4a8moe_layer_desc dd, *d = &dd;
    memset(d, 0, sizeof *d);
    d->activation = W4A8MOE_ACTIVATION_SILU;
    d->weight_scheme = W4A8MOE_WEIGHT_INT4_GROUP;
    d->act_scheme = W4A8MOE_ACT_FP8_TOKEN_DYNAMIC;
    d->io_dtype = W4A8MOE_DTYPE_BF16;
    d->routing.kind = W4A8MOE_ROUTING_SOFTMAX_TOPK;
    d->routing.routed_scaling_factor = 1.0f;
    d->ep_size = 1;
    w4a8moe_struct_out(caller, size, d, sizeof *d, W4A8MOE_V3_LAYER_DESC);
}

/* Limits that keep every size product far from overflow (T*k*H*4 < 2^50). */
#define MAX_DIM (1 << 20)
#define MAX_TOKENS (1 << 24)
#define MAX_EXPERTS (1 << 16)

static int finite_positive(float v) { return v > 0.0f && !isinf(v); }

w4a8moe_status w4a8moe_layer_validate_desc(const w4a8moe_layer_desc *d, w4a8moe_err *err)
{
    RETURN_IF(err, !d, W4A8MOE_STATUS_INVALID_ARGUMENT, "layer description is NULL");
    RETURN_IF(err, d->max_tokens < 1 || d->max_tokens > MAX_TOKENS, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "max_tokens = %lld must be in [1, %d]", (long long)d->max_tokens, MAX_TOKENS);
    RETURN_IF(err, d->group_size != 32 && d->group_size != 64 && d->group_size != 128,
              W4A8MOE_STATUS_INVALID_ARGUMENT, "group size g = %d; hint: g must be 32, 64 or 128",
              d->group_size);
    RETURN_IF(err, d->hidden < d->group_size || d->hidden > MAX_DIM || d->hidden % d->group_size,
              W4A8MOE_STATUS_INVALID_ARGUMENT,
              "hidden size H = %lld must be a positive multiple of g = %d (at most %d)",
              (long long)d->hidden, d->group_size, MAX_DIM);
    RETURN_IF(err, d->inter < d->group_size || d->inter > MAX_DIM || d->inter % d->group_size,
              W4A8MOE_STATUS_INVALID_ARGUMENT,
              "intermediate size I = %lld must be a positive multiple of g = %d (at most %d)",
              (long long)d->inter, d->group_size, MAX_DIM);
    RETURN_IF(err, d->num_experts < 1 || d->num_experts > MAX_EXPERTS,
              W4A8MOE_STATUS_INVALID_ARGUMENT, "num_experts E = %d must be in [1, %d]",
              d->num_experts, MAX_EXPERTS);
    RETURN_IF(err, d->top_k < 1 || d->top_k > d->num_experts, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "top_k k = %d must be in [1, E = %d]", d->top_k, d->num_experts);
    /* the dispatch numbers the routed (token, slot) pairs with int32 row indices
     * (expert_offsets, pair_row: backend.h), on the host and on the GPU alike */
    RETURN_IF(err, d->max_tokens * d->top_k > INT32_MAX, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "max_tokens * top_k = %lld * %d = %lld routed rows exceed the int32 row indices "
              "(2^31 - 1); hint: max_tokens <= %lld for k = %d, or split the batch",
              (long long)d->max_tokens, d->top_k, (long long)(d->max_tokens * d->top_k),
              (long long)(INT32_MAX / d->top_k), d->top_k);
    RETURN_IF(err, (unsigned)d->activation >= W4A8MOE_ACTIVATION_COUNT_,
              W4A8MOE_STATUS_INVALID_ARGUMENT, "activation = %d is not a w4a8moe_activation",
              (int)d->activation);
    RETURN_IF(err, (unsigned)d->weight_scheme >= W4A8MOE_WEIGHT_SCHEME_COUNT_,
              W4A8MOE_STATUS_INVALID_ARGUMENT, "weight_scheme = %d is not a w4a8moe_weight_scheme",
              (int)d->weight_scheme);
    RETURN_IF(err, (unsigned)d->act_scheme >= W4A8MOE_ACT_SCHEME_COUNT_,
              W4A8MOE_STATUS_INVALID_ARGUMENT, "act_scheme = %d is not a w4a8moe_act_scheme",
              (int)d->act_scheme);
    if (d->act_scheme == W4A8MOE_ACT_FP8_TENSOR_STATIC) {
        RETURN_IF(err, !finite_positive(d->act_scale_in), W4A8MOE_STATUS_INVALID_ARGUMENT,
                  "static activation scheme: act_scale_in = %g must be finite and > 0",
                  (double)d->act_scale_in);
        RETURN_IF(err, !finite_positive(d->act_scale_mid), W4A8MOE_STATUS_INVALID_ARGUMENT,
                  "static activation scheme: act_scale_mid = %g must be finite and > 0",
                  (double)d->act_scale_mid);
    }
    RETURN_IF(err, (unsigned)d->io_dtype >= W4A8MOE_DTYPE_COUNT_, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "io_dtype = %d is not a w4a8moe_dtype", (int)d->io_dtype);
    RETURN_IF(err, d->router_weight_on_input && d->top_k != 1, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "router_weight_on_input needs k = 1, got k = %d", d->top_k);
    RETURN_IF(err, d->ep_size < 1 || d->ep_rank < 0 || d->ep_rank >= d->ep_size,
              W4A8MOE_STATUS_INVALID_ARGUMENT, "expert parallelism rank %d of size %d is invalid",
              d->ep_rank, d->ep_size);
    RETURN_IF(err, d->num_experts % d->ep_size, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "E = %d experts do not split evenly over ep_size = %d ranks", d->num_experts,
              d->ep_size);
    return w4a8moe_router_validate(d, err);
}

static w4a8moe_status check_matrix(const w4a8moe_int4_matrix *m, int64_t rows, int64_t cols,
                                   const char *what, int e, w4a8moe_err *err)
{
    RETURN_IF(err, !m->packed || !m->scale, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "expert %d %s: packed or scale pointer is NULL", e, what);
    RETURN_IF(err, m->rows != rows || m->cols != cols, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "expert %d %s: shape [%lld, %lld] disagrees with the layer, which needs [%lld, %lld]",
              e, what, (long long)m->rows, (long long)m->cols, (long long)rows, (long long)cols);
    return W4A8MOE_STATUS_OK;
}

/* Views one expert's three matrices inside stacked tensors. */
static void view_stacked(const w4a8moe_weights *w, const w4a8moe_layer_desc *d, int e,
                         w4a8moe_expert_weights *x)
{
    int64_t H = d->hidden, I = d->inter, g = d->group_size;
    size_t ssz = w4a8moe_dtype_size(w->scale_dtype);
    const w4a8moe_int4_matrix *s13 = &w->w13_stacked, *s2 = &w->w2_stacked;
    int64_t r13 = (int64_t)e * 2 * I, r2 = (int64_t)e * H;
    x->gate.packed = s13->packed + r13 * (H / 8);
    x->gate.scale = (const char *)s13->scale + (size_t)(r13 * (H / g)) * ssz;
    x->gate.channel_scale = s13->channel_scale ? s13->channel_scale + r13 : NULL;
    x->up = x->gate;
    x->up.packed += I * (H / 8);
    x->up.scale = (const char *)x->up.scale + (size_t)(I * (H / g)) * ssz;
    if (x->up.channel_scale) x->up.channel_scale += I;
    x->down.packed = s2->packed + r2 * (I / 8);
    x->down.scale = (const char *)s2->scale + (size_t)(r2 * (I / g)) * ssz;
    x->down.channel_scale = s2->channel_scale ? s2->channel_scale + r2 : NULL;
    x->gate.rows = x->up.rows = I;
    x->gate.cols = x->up.cols = H;
    x->down.rows = H;
    x->down.cols = I;
}

static w4a8moe_status gather_weights(const w4a8moe_layer_desc *d, const w4a8moe_weights *w,
                                     w4a8moe_expert_weights *out, int32_t begin, int32_t n,
                                     w4a8moe_err *err)
{
    RETURN_IF(err, !w, W4A8MOE_STATUS_INVALID_ARGUMENT, "weights are NULL");
    RETURN_IF(err, (unsigned)w->scale_dtype >= W4A8MOE_DTYPE_COUNT_, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "weights.scale_dtype = %d is not a w4a8moe_dtype", (int)w->scale_dtype);
    int64_t H = d->hidden, I = d->inter, E = d->num_experts;
    if (!w->experts) {
        const w4a8moe_int4_matrix *s13 = &w->w13_stacked, *s2 = &w->w2_stacked;
        RETURN_IF(err, !s13->packed || !s13->scale || !s2->packed || !s2->scale,
                  W4A8MOE_STATUS_INVALID_ARGUMENT,
                  "weights.experts is NULL and the stacked w13/w2 tensors are incomplete");
        RETURN_IF(err, s13->rows != E * 2 * I || s13->cols != H, W4A8MOE_STATUS_INVALID_ARGUMENT,
                  "stacked w13: shape [%lld, %lld] disagrees with the layer, which needs "
                  "[E*2I, H] = [%lld, %lld]",
                  (long long)s13->rows, (long long)s13->cols, (long long)(E * 2 * I), (long long)H);
        RETURN_IF(err, s2->rows != E * H || s2->cols != I, W4A8MOE_STATUS_INVALID_ARGUMENT,
                  "stacked w2: shape [%lld, %lld] disagrees with the layer, which needs "
                  "[E*H, I] = [%lld, %lld]",
                  (long long)s2->rows, (long long)s2->cols, (long long)(E * H), (long long)I);
        for (int32_t i = 0; i < n; i++) view_stacked(w, d, begin + i, &out[i]);
        return W4A8MOE_STATUS_OK;
    }
    for (int32_t i = 0; i < n; i++) {
        const w4a8moe_expert_weights *x = &w->experts[begin + i];
        FORWARD(check_matrix(&x->gate, I, H, "gate (w1)", begin + i, err));
        FORWARD(check_matrix(&x->up, I, H, "up (w3)", begin + i, err));
        FORWARD(check_matrix(&x->down, H, I, "down (w2)", begin + i, err));
        out[i] = *x;
    }
    return W4A8MOE_STATUS_OK;
}

static int32_t default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > 256 ? 256 : (int32_t)n);
}

w4a8moe_status w4a8moe_layer_query_device(const w4a8moe_layer_options *o,
                                          const w4a8moe_device_ops **ops, w4a8moe_device_info *dev,
                                          w4a8moe_err *err)
{
    w4a8moe_device_kind kind = o ? o->device_kind : W4A8MOE_DEVICE_CPU;
    RETURN_IF(err, (unsigned)kind >= W4A8MOE_DEVICE_KIND_COUNT_, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "options.device_kind = %d is not a w4a8moe_device_kind", (int)kind);
    *ops = w4a8moe_registry_device(kind);
    RETURN_IF(err, !*ops, W4A8MOE_STATUS_UNSUPPORTED,
              "this build of w4a8moe has no CUDA support; hint: rebuild where nvcc is installed");
    memset(dev, 0, sizeof *dev);
    FORWARD((*ops)->query(o ? o->device_ordinal : 0, dev, err));
    return W4A8MOE_STATUS_OK;
}

/* The caller's current device, saved by the public entry points before anything may switch it
 * (the CUDA backends make the layer's device current) and restored on the way out. */
int w4a8moe_device_save(const w4a8moe_device_ops *ops)
{
    return ops && ops->current ? ops->current() : -1;
}

void w4a8moe_device_restore(const w4a8moe_device_ops *ops, int saved)
{
    if (ops && ops->make_current && saved >= 0) ops->make_current(saved);
}

const w4a8moe_device_ops *w4a8moe_layer_ops_of(const w4a8moe_layer_options *o)
{
    w4a8moe_device_kind kind = o ? o->device_kind : W4A8MOE_DEVICE_CPU;
    return (unsigned)kind < W4A8MOE_DEVICE_KIND_COUNT_ ? w4a8moe_registry_device(kind) : NULL;
}

const char *w4a8moe_layer_forced_backend(const w4a8moe_layer_options *o)
{
    if (o && o->backend && o->backend[0]) return o->backend;
    const char *env = getenv("W4A8MOE_BACKEND");
    return env && env[0] ? env : NULL;
}

w4a8moe_status w4a8moe_layer_plan(const w4a8moe_layer_desc *d, const w4a8moe_layer_options *o,
                                  w4a8moe_mk *mk, w4a8moe_err *err)
{
    FORWARD(w4a8moe_layer_validate_desc(d, err));
    FORWARD(w4a8moe_shared_check_routed(d, err));
    FORWARD(w4a8moe_layer_query_device(o, &mk->devops, &mk->dev, err));
    mk->desc = *d;
    mk->ctx.desc = &mk->desc;
    mk->ctx.dev = &mk->dev;
    w4a8moe_stage_ctx_set_local(&mk->ctx, d);
    mk->ctx.num_threads = o && o->num_threads > 0 ? o->num_threads : default_threads();
    mk->ctx.borrow_weights = o ? o->borrow_weights : 0;
    mk->ctx.external_workspace = o && o->workspace;
    /* a workspace on another device is the caller's mistake, whatever the oracle says */
    if (o && o->workspace) FORWARD(w4a8moe_layer_ws_check_device(&mk->dev, o->workspace, err));
    return w4a8moe_oracle_select(&mk->dev, &mk->desc, w4a8moe_layer_forced_backend(o),
                                 &mk->experts, &mk->prepfin, err);
}

static w4a8moe_status layer_build(w4a8moe_layer *L, const w4a8moe_layer_desc *d,
                                  const w4a8moe_weights *w, const w4a8moe_layer_options *o,
                                  w4a8moe_err *err)
{
    w4a8moe_mk *mk = &L->mk;
    L->max_tokens = L->chunk = d->max_tokens;
    /* the oracle before the weights: a layer it refuses fails without reading them */
    FORWARD(w4a8moe_layer_plan(d, o, mk, err));
    int32_t per_rank = mk->ctx.num_local;
    if (o && o->workspace) FORWARD(w4a8moe_layer_ws_check(mk, o->workspace, err));
    if (d->routing.score_bias) {
        mk->score_bias = malloc((size_t)d->num_experts * sizeof(float));
        RETURN_IF(err, !mk->score_bias, W4A8MOE_STATUS_OUT_OF_MEMORY, "router bias copy");
        memcpy(mk->score_bias, d->routing.score_bias, (size_t)d->num_experts * sizeof(float));
        mk->desc.routing.score_bias = mk->score_bias;
    }
    L->experts = calloc((size_t)per_rank, sizeof *L->experts);
    RETURN_IF(err, !L->experts, W4A8MOE_STATUS_OUT_OF_MEMORY, "expert table of %d entries", per_rank);
    FORWARD(gather_weights(d, w, L->experts, mk->ctx.expert_begin, per_rank, err));
    w4a8moe_logical_weights lw = {w->scale_dtype, mk->ctx.expert_begin, per_rank, L->experts, NULL};
    FORWARD(w4a8moe_mk_init(mk, &lw, err));
    if (w->shared) FORWARD(w4a8moe_shared_create(mk, w->shared, w4a8moe_layer_forced_backend(o), &L->shared, err));
    if (o && o->workspace) FORWARD(w4a8moe_layer_ws_attach(L, o->workspace, err));
    if (!mk->ctx.borrow_weights) {
        /* the backend copied what it needs: drop the views so nothing dangles */
        free(L->experts);
        L->experts = NULL;
    }
    return W4A8MOE_STATUS_OK;
}

/* The caller's description, weights (with their shared expert) and options in this library's
 * layouts (struct_abi.h); the NULL ones stay NULL. */
typedef struct caller_structs {
    w4a8moe_layer_desc d;
    w4a8moe_weights w;
    w4a8moe_shared_expert se;
    w4a8moe_layer_options o;
} caller_structs;

static w4a8moe_status read_desc_opts(const w4a8moe_layer_desc **d, const w4a8moe_layer_options **o,
                                     caller_structs *c, w4a8moe_err *err)
{
    RETURN_IF(err, !*d, W4A8MOE_STATUS_INVALID_ARGUMENT, "layer description is NULL");
    FORWARD(STRUCT_IN(err, &c->d, *d, w4a8moe_layer_desc, W4A8MOE_V3_LAYER_DESC));
    *d = &c->d;
    if (*o) {
        FORWARD(STRUCT_IN(err, &c->o, *o, w4a8moe_layer_options, W4A8MOE_V3_LAYER_OPTIONS));
        *o = &c->o;
    }
    return W4A8MOE_STATUS_OK;
}

static w4a8moe_status read_weights(const w4a8moe_weights **w, caller_structs *c, w4a8moe_err *err)
{
    RETURN_IF(err, !*w, W4A8MOE_STATUS_INVALID_ARGUMENT, "weights are NULL");
    FORWARD(STRUCT_IN(err, &c->w, *w, w4a8moe_weights, W4A8MOE_V3_WEIGHTS));
    if (c->w.shared) {
        FORWARD(STRUCT_IN(err, &c->se, c->w.shared, w4a8moe_shared_expert,
                          W4A8MOE_V3_SHARED_EXPERT));
        c->w.shared = &c->se;
    }
    *w = &c->w;
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status w4a8moe_layer_create(const w4a8moe_layer_desc *d, const w4a8moe_weights *w,
                                    const w4a8moe_layer_options *opts, w4a8moe_layer **out)
{
    w4a8moe_err *err = w4a8moe_thread_err();
    err->msg[0] = '\0';
    RETURN_IF(err, !out, W4A8MOE_STATUS_INVALID_ARGUMENT, "out (the layer handle) is NULL");
    *out = NULL;
    caller_structs c;
    FORWARD(read_desc_opts(&d, &opts, &c, err));
    FORWARD(read_weights(&w, &c, err));
    w4a8moe_layer *L = calloc(1, sizeof *L);
    RETURN_IF(err, !L, W4A8MOE_STATUS_OUT_OF_MEMORY, "layer handle");
    const w4a8moe_device_ops *ops = w4a8moe_layer_ops_of(opts);
    int saved = w4a8moe_device_save(ops);
    w4a8moe_status st = layer_build(L, d, w, opts, err);
    if (st != W4A8MOE_STATUS_OK) {
        w4a8moe_layer_free(L);
        L = NULL;
    }
    w4a8moe_device_restore(ops, saved);
    *out = L;
    return st;
}

static w4a8moe_status forward_once(w4a8moe_layer *L, int64_t T, const void *x,
                                   const w4a8moe_routing_input *r, void *out, void *stream,
                                   w4a8moe_err *err)
{
    return L->shared ? w4a8moe_shared_forward(&L->mk, L->shared, T, x, r, out, stream, err)
                     : w4a8moe_mk_forward(&L->mk, T, x, r, out, stream, err);
}

/* T above the chunk size of a layer on a shared workspace: consecutive chunks, each a complete
 * forward of its tokens (every step of docs/numerics.md is per token: the per-token scales, the
 * router, the weight on the input, the shared expert's gate), so the rows are the ones one
 * forward would give. Bad caller-given ids name the token of the batch, not of its chunk: on the
 * host they are checked whole first; on a device the stage ctx carries the chunk's offset. */
static w4a8moe_status forward_chunks(w4a8moe_layer *L, int64_t T, const char *x,
                                     const w4a8moe_routing_input *r, char *out, void *stream,
                                     w4a8moe_err *err)
{
    const w4a8moe_layer_desc *d = &L->mk.desc;
    if (L->mk.dev.kind == W4A8MOE_DEVICE_CPU && r->topk_ids)
        FORWARD(w4a8moe_check_topk(d, T, r->topk_ids, r->topk_weights, err));
    size_t row = (size_t)d->hidden * w4a8moe_dtype_size(d->io_dtype);
    for (int64_t t0 = 0; t0 < T; t0 += L->chunk) {
        int64_t n = T - t0 < L->chunk ? T - t0 : L->chunk;
        w4a8moe_routing_input c = *r;
        if (c.topk_ids) c.topk_ids += t0 * d->top_k;
        if (c.topk_weights) c.topk_weights += t0 * d->top_k;
        if (c.router_logits) c.router_logits += t0 * d->num_experts;
        L->mk.ctx.token_base = t0;
        w4a8moe_status st = forward_once(L, n, x + (size_t)t0 * row, &c, out + (size_t)t0 * row, stream, err);
        L->mk.ctx.token_base = 0;
        FORWARD(st);
    }
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status w4a8moe_layer_forward(w4a8moe_layer *layer, int64_t T, const void *x,
                                     const w4a8moe_routing_input *routing, void *out,
                                     void *stream)
{
    if (!layer) {
        w4a8moe_err *err = w4a8moe_thread_err();
        RETURN_ERR(err, W4A8MOE_STATUS_INVALID_ARGUMENT, "layer is NULL");
    }
    w4a8moe_err *err = &layer->err;
    err->msg[0] = '\0';
    RETURN_IF(err, T < 0 || T > layer->max_tokens, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "T = %lld tokens is outside [0, max_tokens = %lld]; hint: create the layer with a "
              "larger max_tokens or split the batch",
              (long long)T, (long long)layer->max_tokens);
    if (T == 0) return W4A8MOE_STATUS_OK;
    RETURN_IF(err, !x || !out || !routing, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "x, out and routing must not be NULL");
    w4a8moe_routing_input ri;
    FORWARD(STRUCT_IN(err, &ri, routing, w4a8moe_routing_input, W4A8MOE_V3_ROUTING_INPUT));
    routing = &ri;
    RETURN_IF(err, !routing->router_logits && (!routing->topk_ids || !routing->topk_weights),
              W4A8MOE_STATUS_INVALID_ARGUMENT,
              "routing needs topk_ids and topk_weights, or router_logits");
    int saved = w4a8moe_device_save(layer->mk.devops);
    w4a8moe_status st = T <= layer->chunk ? forward_once(layer, T, x, routing, out, stream, err)
                                          : forward_chunks(layer, T, x, routing, out, stream, err);
    w4a8moe_device_restore(layer->mk.devops, saved);
    return st;
}

w4a8moe_status w4a8moe_layer_check(w4a8moe_layer *layer, void *stream)
{
    if (!layer) {
        w4a8moe_err *err = w4a8moe_thread_err();
        RETURN_ERR(err, W4A8MOE_STATUS_INVALID_ARGUMENT, "layer is NULL");
    }
    w4a8moe_err *err = &layer->err;
    err->msg[0] = '\0';
    FORWARD(w4a8moe_mk_check(&layer->mk, stream, err));
    if (layer->shared) FORWARD(w4a8moe_mk_check(&layer->shared->mk, stream, err));
    return W4A8MOE_STATUS_OK;
}

const char *w4a8moe_layer_backend(const w4a8moe_layer *layer)
{
    return layer && layer->mk.experts ? layer->mk.experts->name : "";
}

const char *w4a8moe_layer_prepfin(const w4a8moe_layer *layer)
{
    return layer && layer->mk.prepfin ? layer->mk.prepfin->name : "";
}

const char *w4a8moe_layer_shared_backend(const w4a8moe_layer *layer)
{
    return layer && layer->shared && layer->shared->mk.experts ? layer->shared->mk.experts->name : "";
}

int w4a8moe_layer_attach_owner(w4a8moe_layer *layer, void (*release)(void *), void *owner)
{
    if (!layer || layer->owner_release) return -1;
    layer->owner_release = release;
    layer->owner = owner;
    return 0;
}

const char *w4a8moe_layer_error(const w4a8moe_layer *layer) { return layer ? layer->err.msg : ""; }

void w4a8moe_layer_free(w4a8moe_layer *layer)
{
    if (!layer) return;
    const w4a8moe_device_ops *ops = layer->mk.devops;
    int saved = w4a8moe_device_save(ops);
    if (ops) w4a8moe_mk_release(&layer->mk);
    w4a8moe_shared_free(layer->shared);
    free(layer->mk.score_bias);
    free(layer->experts);
    w4a8moe_workspace_release(layer->ws);
    if (layer->owner_release) layer->owner_release(layer->owner);
    free(layer);
    w4a8moe_device_restore(ops, saved);
}

w4a8moe_status w4a8moe_explain(const w4a8moe_layer_desc *d, const w4a8moe_layer_options *opts,
                               char *buf, size_t cap, size_t *needed)
{
    w4a8moe_err *err = w4a8moe_thread_err();
    err->msg[0] = '\0';
    RETURN_IF(err, !buf && cap, W4A8MOE_STATUS_INVALID_ARGUMENT, "buf is NULL but cap is %zu", cap);
    caller_structs c;
    FORWARD(read_desc_opts(&d, &opts, &c, err));
    FORWARD(w4a8moe_layer_validate_desc(d, err));
    FORWARD(w4a8moe_shared_check_routed(d, err)); /* what create refuses, explain refuses too */
    const w4a8moe_device_ops *ops;
    w4a8moe_device_info dev;
    FORWARD(w4a8moe_layer_query_device(opts, &ops, &dev, err));
    int saved = w4a8moe_device_save(ops);
    size_t n = w4a8moe_oracle_report(&dev, d, w4a8moe_layer_forced_backend(opts), buf, cap);
    n += w4a8moe_shared_report(&dev, d, w4a8moe_layer_forced_backend(opts), n < cap ? buf + n : NULL,
                               n < cap ? cap - n : 0);
    w4a8moe_device_restore(ops, saved);
    if (needed) *needed = n + 1;
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status w4a8moe_route(const w4a8moe_layer_desc *d, int64_t T, const float *logits,
                             int32_t *topk_ids, float *topk_weights)
{
    w4a8moe_err *err = w4a8moe_thread_err();
    err->msg[0] = '\0';
    const w4a8moe_layer_options *no_opts = NULL;
    caller_structs c;
    FORWARD(read_desc_opts(&d, &no_opts, &c, err));
    FORWARD(w4a8moe_layer_validate_desc(d, err));
    RETURN_IF(err, T < 0, W4A8MOE_STATUS_INVALID_ARGUMENT, "T = %lld is negative", (long long)T);
    RETURN_IF(err, T > 0 && (!logits || !topk_ids || !topk_weights), W4A8MOE_STATUS_INVALID_ARGUMENT,
              "logits, topk_ids and topk_weights must not be NULL");
    return w4a8moe_router_run(d, d->routing.score_bias, T, logits, topk_ids, topk_weights, err);
}
