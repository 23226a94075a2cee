/*
 * gpu_route_probe.h — the device router (src/cuda/kernels/local_route.cuh) run on its own, so
 * tests can compare its ids and weights with the host router's (w4a8moe_route) directly, not
 * only through a layer's output (tests/gpu/gpu_route_probe.cu compiles its own copy of the
 * kernel).
 */
#ifndef W4A8MOE_GPU_ROUTE_PROBE_H
#define W4A8MOE_GPU_ROUTE_PROBE_H

#include "w4a8moe.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Host logits f32 [T, E] → host ids int32 [T, k], weights f32 [T, k] through the device router,
 * following d->routing (score_bias: host [E] or NULL). Synchronous. 0 on success. */
int gpu_route_probe(const w4a8moe_layer_desc *d, int64_t T, const float *logits, int32_t *ids,
                    float *weights);

#ifdef __cplusplus
}
#endif
#endif /* W4A8MOE_GPU_ROUTE_PROBE_H */
