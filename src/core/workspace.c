/*
 * workspace.c — w4a8moe_workspace_create/size/free; see workspace.h. Layers take their share
 * of it in src/core/layer_memory.c.
 */
#include "workspace.h"

#include <stdlib.h>

w4a8moe_status w4a8moe_workspace_create(w4a8moe_device_kind kind, int32_t ordinal, size_t bytes,
                                        w4a8moe_workspace **out)
{
    w4a8moe_err *err = w4a8moe_thread_err();
    err->msg[0] = '\0';
    RETURN_IF(err, !out, W4A8MOE_STATUS_INVALID_ARGUMENT, "out (the workspace handle) is NULL");
    *out = NULL;
    RETURN_IF(err, (unsigned)kind >= W4A8MOE_DEVICE_KIND_COUNT_, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "device kind %d is not a w4a8moe_device_kind", (int)kind);
    RETURN_IF(err, bytes == 0, W4A8MOE_STATUS_INVALID_ARGUMENT,
              "a workspace of 0 bytes holds nothing; hint: size it with w4a8moe_memory_estimate");
    const w4a8moe_device_ops *ops = w4a8moe_registry_device(kind);
    RETURN_IF(err, !ops, W4A8MOE_STATUS_UNSUPPORTED,
              "this build of w4a8moe has no CUDA support; hint: rebuild where nvcc is installed");
    w4a8moe_workspace *ws = calloc(1, sizeof *ws);
    RETURN_IF(err, !ws, W4A8MOE_STATUS_OUT_OF_MEMORY, "workspace handle");
    ws->devops = ops;
    ws->bytes = bytes;
    atomic_init(&ws->refs, 1);
    int saved = ops->current ? ops->current() : -1;
    w4a8moe_status st = ops->query(ordinal, &ws->dev, err);
    if (st == W4A8MOE_STATUS_OK && kind == W4A8MOE_DEVICE_CUDA && ws->dev.cuda_sm == 0) {
        st = W4A8MOE_STATUS_INVALID_ARGUMENT;
        w4a8moe_err_set(err, st, __FILE__, __LINE__, "no workspace on cuda:%d: %s", ordinal,
                        ws->dev.name);
    }
    if (st == W4A8MOE_STATUS_OK) st = ops->alloc(&ws->dev, bytes, &ws->base, err);
    if (ops->make_current && saved >= 0) ops->make_current(saved);
    if (st != W4A8MOE_STATUS_OK) {
        free(ws);
        return st;
    }
    *out = ws;
    return W4A8MOE_STATUS_OK;
}

size_t w4a8moe_workspace_size(const w4a8moe_workspace *ws) { return ws ? ws->bytes : 0; }

void w4a8moe_workspace_retain(w4a8moe_workspace *ws) { atomic_fetch_add(&ws->refs, 1); }

void w4a8moe_workspace_release(w4a8moe_workspace *ws)
{
    if (!ws || atomic_fetch_sub(&ws->refs, 1) != 1) return;
    int saved = ws->devops->current ? ws->devops->current() : -1;
    ws->devops->release(&ws->dev, ws->base);
    if (ws->devops->make_current && saved >= 0) ws->devops->make_current(saved);
    free(ws);
}

void w4a8moe_workspace_free(w4a8moe_workspace *ws) { w4a8moe_workspace_release(ws); }
