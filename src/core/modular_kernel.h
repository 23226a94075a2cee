/*
 * modular_kernel.h — one layer's pipeline: prepare → experts → finalize, with the two stages'
 * state and workspaces, allocated once at create (or carved from a shared workspace).
 */
#ifndef W4A8MOE_MODULAR_KERNEL_H
#define W4A8MOE_MODULAR_KERNEL_H

#include "backend.h"

typedef struct w4a8moe_mk {
    const w4a8moe_experts_ops *experts;
    const w4a8moe_prepfin_ops *prepfin;
    const w4a8moe_device_ops *devops;
    w4a8moe_device_info dev;
    w4a8moe_layer_desc desc; /* routing.score_bias points at score_bias below */
    float *score_bias;       /* host copy, [E] or NULL */
    w4a8moe_stage_ctx ctx;
    void *experts_state, *prepfin_state;
    void *experts_ws, *prepfin_ws;
} w4a8moe_mk;

/* mk->experts, prepfin, devops, dev, desc and ctx must be set; allocates and packs. */
w4a8moe_status w4a8moe_mk_init(w4a8moe_mk *mk, const w4a8moe_logical_weights *w, w4a8moe_err *err);
w4a8moe_status w4a8moe_mk_forward(w4a8moe_mk *mk, int64_t T, const void *x,
                                  const w4a8moe_routing_input *routing, void *out, void *stream,
                                  w4a8moe_err *err);
/* The same with a shared-expert pipeline smk (E = 1, k = 1) routed by shared_routing: both
 * pipelines prepare and run, then the routed finalize combines both (one rounding). */
w4a8moe_status w4a8moe_mk_forward_shared(w4a8moe_mk *mk, w4a8moe_mk *smk,
                                         const w4a8moe_routing_input *shared_routing, int64_t T,
                                         const void *x, const w4a8moe_routing_input *routing,
                                         void *out, void *stream, w4a8moe_err *err);
/* w4a8moe_layer_check for one pipeline: the prepare/finalize's check, OK when it has none. */
w4a8moe_status w4a8moe_mk_check(w4a8moe_mk *mk, void *stream, w4a8moe_err *err);
/* Bytes of the two stages' workspaces for forwards of `tokens` tokens (each stage rounded up
 * to 256 bytes), as w4a8moe_mk_workspace_carve lays them out; the desc's max_tokens is not
 * changed. */
size_t w4a8moe_mk_workspace_bytes(const w4a8moe_mk *mk, int64_t tokens);
/* ctx.external_workspace: points the stages' workspaces into base, which holds
 * w4a8moe_mk_workspace_bytes(mk, mk->desc.max_tokens) bytes. */
void w4a8moe_mk_workspace_carve(w4a8moe_mk *mk, void *base);
/* Releases what init acquired (safe on a partly initialised mk). */
void w4a8moe_mk_release(w4a8moe_mk *mk);

#endif /* W4A8MOE_MODULAR_KERNEL_H */
