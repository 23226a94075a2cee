/*
 * gpu_reference.h — a plain, obviously-correct reference of the whole layer on the GPU
 * (tests/gpu/gpu_reference.cu), for token counts where cpu_ref would take minutes. It reads the
 * logical weights (packed int4 words, f32 scales) and follows contract steps 1-7 one thread per
 * output value with cpu_ref's arithmetic (f64 sums, the f32 steps in C's order), so at large T it
 * stands in for cpu_ref. It is itself checked against cpu_ref at small T.
 */
#ifndef W4A8MOE_GPU_REFERENCE_H
#define W4A8MOE_GPU_REFERENCE_H

#include "w4a8moe.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gpuref_layer {
    w4a8moe_layer_desc d;
    int32_t *w13;   /* device [E, 2I, H/8] packed words (gate rows then up rows) */
    float *s13;     /* device [E, 2I, H/g] */
    float *c13;     /* device [E, 2I] */
    int32_t *w2;    /* device [E, H, I/8] */
    float *s2;      /* device [E, H, I/g] */
    float *c2;      /* device [E, H] */
} gpuref_layer;

/* Uploads the host weights (scales widened to f32). Returns 0 on success. */
int gpuref_create(gpuref_layer *L, const w4a8moe_layer_desc *d, const w4a8moe_weights *w);
void gpuref_free(gpuref_layer *L);

/* out [T, H] f32 (device) from x [T, H] f32, ids / weights [T, k] (device). Synchronous.
 * Returns 0 on success. */
int gpuref_forward(const gpuref_layer *L, int64_t T, const float *x, const int32_t *ids,
                   const float *weights, float *out);

#ifdef __cplusplus
}
#endif
#endif /* W4A8MOE_GPU_REFERENCE_H */
