/*
 * dispatch.h — shared stage helpers (see dispatch.c). The layout functions and
 * w4a8moe_activate are declared in backend.h; this adds the routing check.
 */
#ifndef W4A8MOE_DISPATCH_H
#define W4A8MOE_DISPATCH_H

#include "backend.h"

/* Caller-given routing on the host: ids in [-1, E), no expert twice in a token, no NaN weight.
 * The message names the token and slot. */
w4a8moe_status w4a8moe_check_topk(const w4a8moe_layer_desc *d, int64_t T, const int32_t *ids,
                                  const float *weights, w4a8moe_err *err);

#endif /* W4A8MOE_DISPATCH_H */
