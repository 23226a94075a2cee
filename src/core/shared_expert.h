/*
 * shared_expert.h — a layer's shared-expert pipeline (docs/numerics.md, step 7): a second modular
 * kernel with E = 1, k = 1 and the shared expert's own I, g and schemes, run after the routed
 * experts; the routed finalize adds its rows (weight 1 or sigmoid(x . gate)) before the one
 * rounding to the output dtype.
 *
 * On a CPU layer the routing arrays below live in host memory and the gate runs on the host. On
 * a device layer (CUDA) they live on the device: the all-zero ids and the weights (1, or the
 * gate's sigmoid written per forward by a kernel queued on the caller's stream), so a forward
 * needs no host synchronisation and can be captured in a CUDA graph (docs/design.md, "Shared
 * experts").
 */
#ifndef W4A8MOE_SHARED_EXPERT_H
#define W4A8MOE_SHARED_EXPERT_H

#include "modular_kernel.h"

/* What the shared pipeline needs from a device whose memory is not the host's (the core never
 * calls CUDA itself); registry.c gives one per such device kind, NULL for the host. */
typedef struct w4a8moe_shared_device_ops {
    w4a8moe_device_kind kind;
    /* Copies bytes from the host into memory the device's alloc returned (at create; waits). */
    w4a8moe_status (*upload)(const w4a8moe_device_info *dev, void *dst, const void *src,
                             size_t bytes, w4a8moe_err *err);
    /* Queues on stream: weights[t] = sigmoid(x[t] . gate) for t < T, the dot product summed in
     * f32, 1 where that is NaN (as the host's gate). x [T, H] in io dtype, gate [H] f32 and
     * weights [T] f32 on the device. */
    w4a8moe_status (*gate)(const w4a8moe_device_info *dev, int64_t T, int64_t H, const void *x,
                           w4a8moe_dtype io_dtype, const float *gate, float *weights, void *stream,
                           w4a8moe_err *err);
} w4a8moe_shared_device_ops;

/* registry.c: the shared-pipeline services of a device kind, NULL for the host (and for kinds
 * this build lacks). */
const w4a8moe_shared_device_ops *w4a8moe_registry_shared_device(w4a8moe_device_kind kind);

typedef struct w4a8moe_shared_rt {
    w4a8moe_mk mk;
    const w4a8moe_shared_device_ops *sdev; /* NULL: the arrays below are host memory */
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

/* For explain: which experts backend a shared expert of a layer like d would run on, for an
 * int4 one (d's g and activation scheme) and an unquantised one, as lines appended to buf
 * (the w4a8moe_oracle_report conventions: truncated to cap, returns the length needed). */
size_t w4a8moe_shared_report(const w4a8moe_device_info *dev, const w4a8moe_layer_desc *d,
                             const char *forced, char *buf, size_t cap);

#endif /* W4A8MOE_SHARED_EXPERT_H */
