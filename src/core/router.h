/*
 * router.h — router logits → (expert id, weight) pairs, on the host (docs/numerics.md
 * "Routing"). Backends on other devices implement the same rules in their own prepare stage
 * and are tested against this one.
 */
#ifndef W4A8MOE_ROUTER_H
#define W4A8MOE_ROUTER_H

#include "../common/error.h"

/* logits f32 [T, E] → ids int32 [T, k], weights f32 [T, k] following d->routing.
 * NaN logits rank lowest; ties go to the lower expert index. */
w4a8moe_status w4a8moe_router_run(const w4a8moe_layer_desc *d, const float *score_bias, int64_t T,
                                  const float *logits, int32_t *ids, float *weights,
                                  w4a8moe_err *err);

/* Checks the routing description against E and k; names the field at fault. */
w4a8moe_status w4a8moe_router_validate(const w4a8moe_layer_desc *d, w4a8moe_err *err);

#endif /* W4A8MOE_ROUTER_H */
