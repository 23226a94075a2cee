/*
 * synth.h — synthetic W4A8 layers from a seed: random int4 weights, group scales and inputs,
 * generated fast (16 nibbles per 64-bit random draw). Used by the CLI's bench and verify and by
 * the tests; never by the library's own code paths.
 *
 * Memory: a layer with E experts may be backed by a pool of P <= E distinct expert weight sets
 * (expert e uses set e % P), so full-size shapes such as deepseek-v3 (E = 256, 5.6 GB of int4)
 * fit in memory for tests; benchmarks use P = E so every expert's bytes are distinct.
 */
#ifndef W4A8MOE_SYNTH_H
#define W4A8MOE_SYNTH_H

#include "w4a8moe.h"

#include <stdint.h>

typedef struct w4a8moe_synth_rng {
    uint64_t s;
} w4a8moe_synth_rng;

uint64_t w4a8moe_synth_next(w4a8moe_synth_rng *r);
/* Uniform in [lo, hi). */
float w4a8moe_synth_uniform(w4a8moe_synth_rng *r, float lo, float hi);

typedef struct w4a8moe_synth_weights {
    w4a8moe_weights weights;            /* ready to pass to w4a8moe_layer_create */
    w4a8moe_expert_weights *experts;    /* [E] views into the pool */
    void *pool;                         /* the P distinct sets */
    size_t pool_bytes;
} w4a8moe_synth_weights;

/* Random weights for d: int4 uniform over [-8, 7], scales uniform in [0.004, 0.02) stored in
 * scale_dtype, per-channel scales in [0.5, 1.5) when with_channel, P = pool distinct sets
 * (0 or > E: E). Returns 0 on success, -1 when memory runs out. */
int w4a8moe_synth_weights_make(w4a8moe_synth_weights *sw, const w4a8moe_layer_desc *d,
                               w4a8moe_dtype scale_dtype, int with_channel, int32_t pool,
                               uint64_t seed);
void w4a8moe_synth_weights_free(w4a8moe_synth_weights *sw);

/* x [T, H] in dtype, values uniform in [-amp, amp). */
void w4a8moe_synth_input(void *x, w4a8moe_dtype dt, int64_t T, int64_t H, float amp,
                         w4a8moe_synth_rng *r);

/* Random routing: k distinct experts per token among E, weights uniform in [0.05, 1). */
void w4a8moe_synth_routing(int32_t *ids, float *weights, int64_t T, int32_t E, int32_t k,
                           w4a8moe_synth_rng *r);

#endif /* W4A8MOE_SYNTH_H */
