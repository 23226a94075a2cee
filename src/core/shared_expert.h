/*
 * shared_expert.h — a layer's shared-expert pipeline (docs/numerics.md, step 7): a second modular
 * kernel with E = 1, k = 1 and the shared expert's own I, g and schemes, run after the routed
 * experts; the routed finalize adds its rows (weight 1 or sigmoid(x . gate)) before the one
 * rounding to the output dtype.
 */
#ifndef W4A8MOE_SHARED_EXPERT_H
#define W4A8MOE_SHARED_EXPERT_H

#include "modular_kernel.h"

typedef struct w4a8moe_shared_rt {
    w4a8moe_mk mk;
    int32_t *ids;     /* [max_tokens] all 0: every token runs the shared expert */
    float *weights;   /* [max_tokens] 1, or the gate's sigmoid per token */
    float *gate;      /* [H] f32 copy of the gate weight, or NULL */
} w4a8moe_shared_rt;

/* Rejects schemes the routed experts cannot use (BF16 is for shared experts only). */
w4a8moe_status w4a8moe_shared_check_routed(const w4a8moe_layer_desc *d, w4a8moe_err *err);

/* Builds the shared pipeline next to the routed one (routed: its mk, already initialised).
 * forced: the caller's forced backend name or NULL. *out is NULL on failure. */
w4a8moe_status w4a8moe_shared_create(const w4a8moe_mk *routed, const w4a8moe_shared_expert *se,
                                     const char *forced, w4a8moe_shared_rt **out,
                                     w4a8moe_err *err);

/* Routes every token to the shared expert with its weight, then runs the whole layer:
 * prepare/experts for the routed and the shared pipelines, one finalize. */
w4a8moe_status w4a8moe_shared_forward(w4a8moe_mk *routed, w4a8moe_shared_rt *s, int64_t T,
                                      const void *x, const w4a8moe_routing_input *routing,
                                      void *out, void *stream, w4a8moe_err *err);

void w4a8moe_shared_free(w4a8moe_shared_rt *s);

/* What shared_create decides before it reads weights: mk's description, stage context and
 * backends (only se's inter, schemes and group size are read). For memory estimates
 * (src/core/layer_memory.c); nothing is allocated. */
w4a8moe_status w4a8moe_shared_plan(const w4a8moe_mk *routed, const w4a8moe_shared_expert *se,
                                   const char *forced, w4a8moe_mk *mk, w4a8moe_err *err);

#endif /* W4A8MOE_SHARED_EXPERT_H */
