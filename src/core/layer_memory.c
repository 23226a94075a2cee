/*
 * layer_memory.c — layers in a shared workspace (include/w4a8moe.h, "Workspaces") and the
 * memory reports (w4a8moe_memory_estimate, w4a8moe_layer_memory).
 *
 * A layer on a shared workspace keeps the most tokens per forward whose scratch fits it, its
 * chunk size C, as its pipelines' max_tokens: every stage sizes and lays out its workspace from
 * max_tokens alone (src/core/backend.h, "Memory"), so C is all it takes. The routed pipeline's
 * two stages come first in the workspace, then the shared expert's: one forward uses all four
 * at once (the routed finalize reads the shared rows), consecutive forwards of any layer reuse
 * the same bytes. Why a workspace object rather than a model handle: docs/design.md, "Memory".
 */
#include "../common/log.h"
#include "layer_impl.h"
#include "struct_abi.h"

#include <stdio.h>
#include <string.h>

/* Weights as the backends keep them: int4 codes (8 per int32), group scales widened to f32, a
 * f32 per-channel scale per output row; unquantised weights widened to f32. */
static uint64_t int4_bytes(int64_t rows, int64_t cols, int64_t g)
{
    return (uint64_t)(rows * cols / 2) + (uint64_t)(rows * (cols / g)) * 4 + (uint64_t)rows * 4;
}

static uint64_t weight_bytes(const w4a8moe_mk *mk)
{
    const w4a8moe_layer_desc *d = &mk->desc;
    int64_t H = d->hidden, I = d->inter, g = d->group_size;
    if (d->weight_scheme == W4A8MOE_WEIGHT_BF16) return (uint64_t)mk->ctx.num_local * 3 * H * I * 4;
    return (uint64_t)mk->ctx.num_local * (int4_bytes(2 * I, H, g) + int4_bytes(H, I, g));
}

/* Scratch of one forward of `tokens` tokens: the routed pipeline, then the shared one. */
static size_t need(const w4a8moe_mk *routed, const w4a8moe_mk *shared, int64_t tokens)
{
    return w4a8moe_mk_workspace_bytes(routed, tokens) +
           (shared ? w4a8moe_mk_workspace_bytes(shared, tokens) : 0);
}

static void fill(const w4a8moe_mk *routed, const w4a8moe_mk *shared, int64_t tokens,
                 int64_t chunk, w4a8moe_memory_info *mi)
{
    memset(mi, 0, sizeof *mi);
    mi->struct_size = sizeof *mi;
    mi->tokens = tokens;
    mi->chunk_tokens = chunk;
    mi->weight_bytes = weight_bytes(routed) + (shared ? weight_bytes(shared) : 0);
    mi->workspace_bytes = need(routed, shared, tokens);
    mi->workspace_min_bytes = need(routed, shared, 1);
}

static void device_name(const w4a8moe_device_info *dev, char *buf, size_t cap)
{
    if (dev->kind == W4A8MOE_DEVICE_CUDA)
        snprintf(buf, cap, "cuda:%d", dev->ordinal);
    else
        snprintf(buf, cap, "cpu");
}

static w4a8moe_status too_small(const w4a8moe_workspace *ws, size_t one, size_t full,
                                int64_t max_tokens, w4a8moe_err *err)
{
    RETURN_ERR(err, W4A8MOE_STATUS_INVALID_ARGUMENT,
               "the shared workspace of %zu bytes is too small for one token of this layer, which "
               "needs %zu bytes (%zu for max_tokens = %lld); hint: create the workspace with at "
               "least that much (w4a8moe_memory_estimate gives the bytes for a token count)",
               ws->bytes, one, full, (long long)max_tokens);
}

w4a8moe_status w4a8moe_layer_ws_check_device(const w4a8moe_device_info *dev,
                                             const w4a8moe_workspace *ws, w4a8moe_err *err)
{
    if (ws->dev.kind != dev->kind || (dev->kind == W4A8MOE_DEVICE_CUDA && ws->dev.ordinal != dev->ordinal)) {
        char a[32], b[32];
        device_name(&ws->dev, a, sizeof a);
        device_name(dev, b, sizeof b);
        RETURN_ERR(err, W4A8MOE_STATUS_INVALID_ARGUMENT,
                   "the shared workspace lives on %s, the layer on %s; hint: create the workspace "
                   "on the layer's device (options.device_kind and device_ordinal)", a, b);
    }
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status w4a8moe_layer_ws_check(const w4a8moe_mk *mk, const w4a8moe_workspace *ws,
                                      w4a8moe_err *err)
{
    size_t one = w4a8moe_mk_workspace_bytes(mk, 1);
    if (one > ws->bytes)
        return too_small(ws, one, w4a8moe_mk_workspace_bytes(mk, mk->desc.max_tokens),
                         mk->desc.max_tokens, err);
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status w4a8moe_layer_ws_attach(w4a8moe_layer *L, w4a8moe_workspace *ws, w4a8moe_err *err)
{
    w4a8moe_mk *shared = L->shared ? &L->shared->mk : NULL;
    size_t cap = ws->bytes;
    int64_t lo = 1, hi = L->max_tokens;
    if (need(&L->mk, shared, lo) > cap)
        return too_small(ws, need(&L->mk, shared, 1), need(&L->mk, shared, hi), hi, err);
    /* the largest C in [1, max_tokens] with need(C) <= cap; need grows with C */
    if (need(&L->mk, shared, hi) <= cap) {
        lo = hi;
    } else {
        while (hi - lo > 1) { /* need(lo) fits, need(hi) does not */
            int64_t mid = lo + (hi - lo) / 2;
            if (need(&L->mk, shared, mid) <= cap)
                lo = mid;
            else
                hi = mid;
        }
    }
    L->chunk = lo;
    L->mk.desc.max_tokens = lo;
    w4a8moe_mk_workspace_carve(&L->mk, ws->base);
    if (shared) {
        shared->desc.max_tokens = lo;
        w4a8moe_mk_workspace_carve(shared, (char *)ws->base + w4a8moe_mk_workspace_bytes(&L->mk, lo));
    }
    w4a8moe_workspace_retain(ws);
    L->ws = ws;
    w4a8moe_log(W4A8MOE_LOG_INFO, "layer in a shared workspace of %zu bytes: chunks of %lld tokens "
                "(%zu bytes each; max_tokens %lld)", cap, (long long)lo, need(&L->mk, shared, lo),
                (long long)L->max_tokens);
    return W4A8MOE_STATUS_OK;
}

#define MAX_ESTIMATE_TOKENS (1 << 24)

w4a8moe_status w4a8moe_memory_estimate_sized(const w4a8moe_layer_desc *d,
                                             const w4a8moe_shared_expert *shared,
                                             const w4a8moe_layer_options *opts, int64_t tokens,
                                             w4a8moe_memory_info *info, size_t size)
{
    w4a8moe_err *err = w4a8moe_thread_err();
    err->msg[0] = '\0';
    RETURN_IF(err, !d || !info, W4A8MOE_STATUS_INVALID_ARGUMENT, "description or info is NULL");
    RETURN_IF(err, tokens < 1 || tokens > MAX_ESTIMATE_TOKENS, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "tokens = %lld must be in [1, %d]", (long long)tokens, MAX_ESTIMATE_TOKENS);
    w4a8moe_layer_desc dd;
    w4a8moe_layer_options o;
    w4a8moe_shared_expert se;
    FORWARD(STRUCT_IN(err, &dd, d, w4a8moe_layer_desc, W4A8MOE_V3_LAYER_DESC));
    if (opts) FORWARD(STRUCT_IN(err, &o, opts, w4a8moe_layer_options, W4A8MOE_V3_LAYER_OPTIONS));
    if (shared) FORWARD(STRUCT_IN(err, &se, shared, w4a8moe_shared_expert, W4A8MOE_V3_SHARED_EXPERT));
    dd.max_tokens = tokens; /* the size asked for, whatever the description says */
    w4a8moe_mk mk, smk;
    memset(&mk, 0, sizeof mk);
    memset(&smk, 0, sizeof smk);
    const w4a8moe_device_ops *ops = w4a8moe_layer_ops_of(opts ? &o : NULL);
    int saved = w4a8moe_device_save(ops);
    w4a8moe_status st = w4a8moe_layer_plan(&dd, opts ? &o : NULL, &mk, err);
    if (st == W4A8MOE_STATUS_OK && shared)
        st = w4a8moe_shared_plan(&mk, &se, w4a8moe_layer_forced_backend(opts ? &o : NULL), &smk, err);
    w4a8moe_device_restore(ops, saved);
    FORWARD(st);
    w4a8moe_memory_info mi;
    fill(&mk, shared ? &smk : NULL, tokens, tokens, &mi);
    w4a8moe_struct_out(info, size, &mi, sizeof mi, W4A8MOE_V4_MEMORY_INFO);
    return W4A8MOE_STATUS_OK;
}

w4a8moe_status w4a8moe_layer_memory_sized(const w4a8moe_layer *layer, int64_t tokens,
                                          w4a8moe_memory_info *info, size_t size)
{
    w4a8moe_err *err = w4a8moe_thread_err();
    err->msg[0] = '\0';
    RETURN_IF(err, !layer || !info, W4A8MOE_STATUS_INVALID_ARGUMENT, "layer or info is NULL");
    RETURN_IF(err, tokens < 0 || tokens > MAX_ESTIMATE_TOKENS, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "tokens = %lld must be in [0, %d] (0: the layer's chunk size)", (long long)tokens,
              MAX_ESTIMATE_TOKENS);
    w4a8moe_memory_info mi;
    fill(&layer->mk, layer->shared ? &layer->shared->mk : NULL, tokens ? tokens : layer->chunk,
         layer->chunk, &mi);
    w4a8moe_struct_out(info, size, &mi, sizeof mi, W4A8MOE_V4_MEMORY_INFO);
    return W4A8MOE_STATUS_OK;
}
