/*
 * synth.c — see synth.h.
 */
#include "synth.h"

#include "quant.h"

#include <stdlib.h>
#include <string.h>

uint64_t w4a8moe_synth_next(w4a8moe_synth_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float w4a8moe_synth_uniform(w4a8moe_synth_rng *r, float lo, float hi)
{
    return lo + (hi - lo) * (float)((w4a8moe_synth_next(r) >> 40) * (1.0 / 16777216.0));
}

static void store_scale(void *dst, w4a8moe_dtype dt, size_t i, float v)
{
    if (dt == W4A8MOE_DTYPE_BF16) ((uint16_t *)dst)[i] = w4a8moe_f32_to_bf16(v);
    else if (dt == W4A8MOE_DTYPE_F16) ((uint16_t *)dst)[i] = w4a8moe_f32_to_f16(v);
    else ((float *)dst)[i] = v;
}

/* Bytes of one matrix [rows, cols]: packed, scales, channel scales; each 64-byte aligned. */
static size_t matrix_bytes(int64_t rows, int64_t cols, int g, size_t ssz, int with_channel)
{
    size_t a = ((size_t)(rows * cols / 2) + 63) & ~(size_t)63;
    size_t b = ((size_t)(rows * (cols / g)) * ssz + 63) & ~(size_t)63;
    size_t c = with_channel ? (((size_t)rows * 4 + 63) & ~(size_t)63) : 0;
    return a + b + c;
}

static char *fill_matrix(w4a8moe_int4_matrix *m, int64_t rows, int64_t cols, int g,
                         w4a8moe_dtype sdt, int with_channel, char *p, w4a8moe_synth_rng *r)
{
    size_t words = (size_t)(rows * cols / 8), nscale = (size_t)(rows * (cols / g));
    size_t ssz = sdt == W4A8MOE_DTYPE_F32 ? 4 : 2;
    uint64_t *w64 = (uint64_t *)p;
    for (size_t i = 0; i < words / 2; i++) w64[i] = w4a8moe_synth_next(r);
    if (words & 1) ((uint32_t *)p)[words - 1] = (uint32_t)w4a8moe_synth_next(r);
    m->packed = (const int32_t *)p;
    p += (words * 4 + 63) & ~(size_t)63;
    for (size_t i = 0; i < nscale; i++) store_scale(p, sdt, i, w4a8moe_synth_uniform(r, 0.004f, 0.02f));
    m->scale = p;
    p += (nscale * ssz + 63) & ~(size_t)63;
    m->channel_scale = NULL;
    if (with_channel) {
        float *c = (float *)p;
        for (int64_t i = 0; i < rows; i++) c[i] = w4a8moe_synth_uniform(r, 0.5f, 1.5f);
        m->channel_scale = c;
        p += ((size_t)rows * 4 + 63) & ~(size_t)63;
    }
    m->rows = rows;
    m->cols = cols;
    return p;
}

int w4a8moe_synth_weights_make(w4a8moe_synth_weights *sw, const w4a8moe_layer_desc *d,
                               w4a8moe_dtype scale_dtype, int with_channel, int32_t pool,
                               uint64_t seed)
{
    memset(sw, 0, sizeof *sw);
    int64_t H = d->hidden, I = d->inter;
    int g = d->group_size, E = d->num_experts;
    if (pool <= 0 || pool > E) pool = E;
    size_t ssz = scale_dtype == W4A8MOE_DTYPE_F32 ? 4 : 2;
    size_t per = 2 * matrix_bytes(I, H, g, ssz, with_channel) + matrix_bytes(H, I, g, ssz, with_channel);
    sw->pool_bytes = per * (size_t)pool;
    sw->pool = aligned_alloc(64, sw->pool_bytes);
    sw->experts = calloc((size_t)E, sizeof *sw->experts);
    if (!sw->pool || !sw->experts) {
        w4a8moe_synth_weights_free(sw);
        return -1;
    }
    w4a8moe_synth_rng r = {seed};
    char *p = sw->pool;
    for (int s = 0; s < pool; s++) {
        w4a8moe_expert_weights *x = &sw->experts[s];
        p = fill_matrix(&x->gate, I, H, g, scale_dtype, with_channel, p, &r);
        p = fill_matrix(&x->up, I, H, g, scale_dtype, with_channel, p, &r);
        p = fill_matrix(&x->down, H, I, g, scale_dtype, with_channel, p, &r);
    }
    for (int e = pool; e < E; e++) sw->experts[e] = sw->experts[e % pool];
    sw->weights.scale_dtype = scale_dtype;
    sw->weights.experts = sw->experts;
    return 0;
}

void w4a8moe_synth_weights_free(w4a8moe_synth_weights *sw)
{
    free(sw->pool);
    free(sw->experts);
    memset(sw, 0, sizeof *sw);
}

void w4a8moe_synth_input(void *x, w4a8moe_dtype dt, int64_t T, int64_t H, float amp,
                         w4a8moe_synth_rng *r)
{
    for (int64_t i = 0; i < T * H; i++) store_scale(x, dt, (size_t)i, w4a8moe_synth_uniform(r, -amp, amp));
}

void w4a8moe_synth_routing(int32_t *ids, float *weights, int64_t T, int32_t E, int32_t k,
                           w4a8moe_synth_rng *r)
{
    for (int64_t t = 0; t < T; t++) {
        for (int j = 0; j < k; j++) {
            int32_t e;
            int dup;
            do { /* k <= E, so this ends; rejection keeps the draw uniform */
                e = (int32_t)(w4a8moe_synth_next(r) % (uint64_t)E);
                dup = 0;
                for (int i = 0; i < j; i++) dup |= ids[t * k + i] == e;
            } while (dup);
            ids[t * k + j] = e;
            weights[t * k + j] = w4a8moe_synth_uniform(r, 0.05f, 1.0f);
        }
    }
}
