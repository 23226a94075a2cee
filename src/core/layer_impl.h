/*
 * layer_impl.h — the layer handle's insides, shared by layer.c (create, forward, free) and
 * layer_memory.c (shared workspaces, memory reports). Nothing outside src/core includes it.
 */
#ifndef W4A8MOE_LAYER_IMPL_H
#define W4A8MOE_LAYER_IMPL_H

#include "layer_internal.h"
#include "modular_kernel.h"
#include "shared_expert.h"
#include "workspace.h"

struct w4a8moe_layer {
    w4a8moe_mk mk;                   /* mk.desc.max_tokens is the chunk size, see below */
    w4a8moe_expert_weights *experts; /* [E_local] views into the caller's weights */
    w4a8moe_err err;
    w4a8moe_shared_rt *shared;       /* the shared-expert pipeline, or NULL */
    void (*owner_release)(void *);   /* see w4a8moe_layer_attach_owner */
    void *owner;
    int64_t max_tokens;              /* the caller's: the most tokens one forward accepts */
    int64_t chunk;                   /* tokens per chunk: max_tokens with a workspace of its
                                        own, else what fits the shared one (both pipelines'
                                        descriptions carry it as max_tokens) */
    w4a8moe_workspace *ws;           /* the shared workspace (a reference), or NULL */
};

/* The first half of create, without weights: validates d, queries the device, fills mk's
 * description and stage context and runs the oracle (opts->backend, W4A8MOE_BACKEND). */
w4a8moe_status w4a8moe_layer_plan(const w4a8moe_layer_desc *d, const w4a8moe_layer_options *o,
                                  w4a8moe_mk *mk, w4a8moe_err *err);
w4a8moe_status w4a8moe_layer_validate_desc(const w4a8moe_layer_desc *d, w4a8moe_err *err);
w4a8moe_status w4a8moe_layer_query_device(const w4a8moe_layer_options *o,
                                          const w4a8moe_device_ops **ops, w4a8moe_device_info *dev,
                                          w4a8moe_err *err);
const w4a8moe_device_ops *w4a8moe_layer_ops_of(const w4a8moe_layer_options *o);
const char *w4a8moe_layer_forced_backend(const w4a8moe_layer_options *o);
/* The caller's current device, saved by the public entry points before anything may switch it
 * and restored on the way out (-1 when the device has no such notion). */
int w4a8moe_device_save(const w4a8moe_device_ops *ops);
void w4a8moe_device_restore(const w4a8moe_device_ops *ops, int saved);

/* layer_memory.c. ws is on the device dev (INVALID_ARGUMENT naming both otherwise). */
w4a8moe_status w4a8moe_layer_ws_check_device(const w4a8moe_device_info *dev,
                                             const w4a8moe_workspace *ws, w4a8moe_err *err);
/* Before packing: ws holds the routed pipeline's scratch for one token (a quick refusal
 * before the weights are read). */
w4a8moe_status w4a8moe_layer_ws_check(const w4a8moe_mk *mk, const w4a8moe_workspace *ws,
                                      w4a8moe_err *err);
/* After both pipelines are built: the chunk size (the most tokens, up to max_tokens, whose
 * scratch fits ws), written into both descriptions, and the stages' workspaces carved from
 * ws; the layer takes a reference on ws. */
w4a8moe_status w4a8moe_layer_ws_attach(w4a8moe_layer *L, w4a8moe_workspace *ws, w4a8moe_err *err);

#endif /* W4A8MOE_LAYER_IMPL_H */
