/*
 * modular_kernel.c — see modular_kernel.h. The only place the two stages meet.
 */
#include "modular_kernel.h"

#include <string.h>

static w4a8moe_status alloc_ws(w4a8moe_mk *mk, size_t bytes, void **ptr, w4a8moe_err *err)
{
    *ptr = NULL;
    if (bytes == 0) return W4A8MOE_STATUS_OK;
    return mk->devops->alloc(&mk->dev, bytes, ptr, err);
}

w4a8moe_status w4a8moe_mk_init(w4a8moe_mk *mk, const w4a8moe_logical_weights *w, w4a8moe_err *err)
{
    const w4a8moe_stage_ctx *ctx = &mk->ctx;
    size_t pf_bytes = mk->prepfin->workspace_size ? mk->prepfin->workspace_size(ctx) : 0;
    size_t ex_bytes = mk->experts->workspace_size ? mk->experts->workspace_size(ctx) : 0;
    if (!ctx->external_workspace) { /* else the layer carves them: w4a8moe_mk_workspace_carve */
        FORWARD(alloc_ws(mk, pf_bytes, &mk->prepfin_ws, err));
        FORWARD(alloc_ws(mk, ex_bytes, &mk->experts_ws, err));
    }
    if (mk->prepfin->create) FORWARD(mk->prepfin->create(ctx, &mk->prepfin_state, err));
    FORWARD(mk->experts->pack_weights(ctx, w, &mk->experts_state, err));
    return W4A8MOE_STATUS_OK;
}

/* The dispatch of one forward before its prepare: the experts' tile plan asked for, if any. */
static void mk_dispatch_init(const w4a8moe_mk *mk, int64_t T, w4a8moe_dispatch *dp)
{
    memset(dp, 0, sizeof *dp);
    if (mk->experts->plan_tiles)
        mk->experts->plan_tiles(&mk->ctx, mk->experts_state, T, mk->experts_ws, &dp->plan);
}

w4a8moe_status w4a8moe_mk_forward(w4a8moe_mk *mk, int64_t T, const void *x,
                                  const w4a8moe_routing_input *routing, void *out, void *stream,
                                  w4a8moe_err *err)
{
    w4a8moe_dispatch dispatch;
    const w4a8moe_stage_ctx *ctx = &mk->ctx;
    mk_dispatch_init(mk, T, &dispatch);
    FORWARD(mk->prepfin->prepare(ctx, mk->prepfin_state, T, x, routing, mk->prepfin_ws, &dispatch,
                                 stream, err));
    FORWARD(mk->experts->run(ctx, mk->experts_state, &dispatch, mk->experts_ws, stream, err));
    FORWARD(mk->prepfin->finalize(ctx, mk->prepfin_state, &dispatch, NULL, out, stream, err));
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status w4a8moe_mk_forward_shared(w4a8moe_mk *mk, w4a8moe_mk *smk,
                                         const w4a8moe_routing_input *shared_routing, int64_t T,
                                         const void *x, const w4a8moe_routing_input *routing,
                                         void *out, void *stream, w4a8moe_err *err)
{
    w4a8moe_dispatch dispatch, shared;
    mk_dispatch_init(mk, T, &dispatch);
    mk_dispatch_init(smk, T, &shared);
    FORWARD(mk->prepfin->prepare(&mk->ctx, mk->prepfin_state, T, x, routing, mk->prepfin_ws,
                                 &dispatch, stream, err));
    FORWARD(mk->experts->run(&mk->ctx, mk->experts_state, &dispatch, mk->experts_ws, stream, err));
    FORWARD(smk->prepfin->prepare(&smk->ctx, smk->prepfin_state, T, x, shared_routing,
                                  smk->prepfin_ws, &shared, stream, err));
    FORWARD(smk->experts->run(&smk->ctx, smk->experts_state, &shared, smk->experts_ws, stream, err));
    FORWARD(mk->prepfin->finalize(&mk->ctx, mk->prepfin_state, &dispatch, &shared, out, stream, err));
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status w4a8moe_mk_check(w4a8moe_mk *mk, void *stream, w4a8moe_err *err)
{
    if (!mk->prepfin->check) return W4A8MOE_STATUS_OK;
    return mk->prepfin->check(&mk->ctx, mk->prepfin_state, stream, err);
}

static size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

/* The two stages' sizes for `tokens` tokens: a copy of the description with that max_tokens,
 * which is all a stage sizes its workspace from (backend.h, "Memory"). */
static void stage_bytes(const w4a8moe_mk *mk, int64_t tokens, size_t *pf, size_t *ex)
{
    w4a8moe_layer_desc d = mk->desc;
    d.max_tokens = tokens;
    w4a8moe_stage_ctx ctx = mk->ctx;
    ctx.desc = &d;
    *pf = mk->prepfin->workspace_size ? align256(mk->prepfin->workspace_size(&ctx)) : 0;
    *ex = mk->experts->workspace_size ? align256(mk->experts->workspace_size(&ctx)) : 0;
}

size_t w4a8moe_mk_workspace_bytes(const w4a8moe_mk *mk, int64_t tokens)
{
    size_t pf, ex;
    stage_bytes(mk, tokens, &pf, &ex);
    return pf + ex;
}

void w4a8moe_mk_workspace_carve(w4a8moe_mk *mk, void *base)
{
    size_t pf, ex;
    stage_bytes(mk, mk->desc.max_tokens, &pf, &ex);
    mk->prepfin_ws = pf ? base : NULL;
    mk->experts_ws = ex ? (char *)base + pf : NULL;
}

void w4a8moe_mk_release(w4a8moe_mk *mk)
{
    if (mk->experts_state && mk->experts->free_state) mk->experts->free_state(mk->experts_state);
    if (mk->prepfin_state && mk->prepfin->free_state) mk->prepfin->free_state(mk->prepfin_state);
    if (mk->ctx.external_workspace) mk->experts_ws = mk->prepfin_ws = NULL; /* not ours */
    if (mk->experts_ws) mk->devops->release(&mk->dev, mk->experts_ws);
    if (mk->prepfin_ws) mk->devops->release(&mk->dev, mk->prepfin_ws);
    mk->experts_state = mk->prepfin_state = mk->experts_ws = mk->prepfin_ws = NULL;
}
