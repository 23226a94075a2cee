/*
 * cpu_ref_experts.c — `cpu_ref`, the reference experts backend and the test oracle.
 *
 * Contract steps 3-6 (docs/numerics.md) to the letter, in plain scalar C: weights read in their
 * logical form, products exact, sums in f64, activation and the intermediate quantisation in
 * f32 exactly as written. Never optimised: its job is to be obviously right.
 */
#include "../core/backend.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ref_state {
    w4a8moe_dtype scale_dtype;
    int32_t num_local;
    w4a8moe_expert_weights *experts; /* [E_local] (copies, or the caller's when borrowed) */
    w4a8moe_dense_matrix *dense;      /* BF16 scheme: [3 * E_local] gate, up, down */
    void *owned;                      /* one block holding every copied array */
} ref_state;

static int ref_supports_quant(w4a8moe_weight_scheme w, w4a8moe_act_scheme a, char *why, size_t cap)
{
    int int4 = w == W4A8MOE_WEIGHT_INT4_GROUP &&
               (a == W4A8MOE_ACT_FP8_TOKEN_DYNAMIC || a == W4A8MOE_ACT_FP8_TENSOR_STATIC);
    if (int4 || (w == W4A8MOE_WEIGHT_BF16 && a == W4A8MOE_ACT_BF16)) return 1;
    snprintf(why, cap, "weight scheme %d with activation scheme %d is not a pair (int4 takes fp8 "
             "activations, bf16 weights unquantised ones)", (int)w, (int)a);
    return 0;
}

/* BF16 scheme: keeps the dense matrices (copied unless borrowed). */
static w4a8moe_status ref_pack_dense(const w4a8moe_stage_ctx *ctx, const w4a8moe_logical_weights *w,
                                     ref_state *s, w4a8moe_err *err)
{
    size_t n = 3 * (size_t)w->num_local, total = 0;
    s->dense = malloc(n * sizeof *s->dense);
    RETURN_IF(err, !s->dense, W4A8MOE_STATUS_OUT_OF_MEMORY, "cpu_ref dense table");
    memcpy(s->dense, w->dense, n * sizeof *s->dense);
    if (ctx->borrow_weights) return W4A8MOE_STATUS_OK;
    for (size_t i = 0; i < n; i++)
        total += (size_t)(s->dense[i].rows * s->dense[i].cols) * w4a8moe_dtype_size(s->dense[i].dtype);
    s->owned = malloc(total ? total : 1);
    RETURN_IF(err, !s->owned, W4A8MOE_STATUS_OUT_OF_MEMORY, "cpu_ref dense copy of %zu bytes", total);
    char *p = s->owned;
    for (size_t i = 0; i < n; i++) {
        size_t b = (size_t)(s->dense[i].rows * s->dense[i].cols) * w4a8moe_dtype_size(s->dense[i].dtype);
        memcpy(p, s->dense[i].data, b);
        s->dense[i].data = p;
        p += b;
    }
    return W4A8MOE_STATUS_OK;
}

/* Bytes of one int4 matrix's arrays: packed, scale, channel scale (if any). */
static size_t matrix_bytes(const w4a8moe_int4_matrix *m, int g, size_t ssz)
{
    size_t n = (size_t)(m->rows * m->cols / 8) * 4 + (size_t)(m->rows * (m->cols / g)) * ssz;
    return n + (m->channel_scale ? (size_t)m->rows * 4 : 0);
}

static char *copy_matrix(w4a8moe_int4_matrix *m, int g, size_t ssz, char *p)
{
    size_t np = (size_t)(m->rows * m->cols / 8) * 4, ns = (size_t)(m->rows * (m->cols / g)) * ssz;
    memcpy(p, m->packed, np);
    m->packed = (const int32_t *)p;
    p += np;
    memcpy(p, m->scale, ns);
    m->scale = p;
    p += ns;
    if (m->channel_scale) {
        memcpy(p, m->channel_scale, (size_t)m->rows * 4);
        m->channel_scale = (const float *)p;
        p += (size_t)m->rows * 4;
    }
    return p;
}

static w4a8moe_status ref_pack(const w4a8moe_stage_ctx *ctx, const w4a8moe_logical_weights *w,
                               void **state, w4a8moe_err *err)
{
    int g = ctx->desc->group_size;
    size_t ssz = w4a8moe_dtype_size(w->scale_dtype);
    ref_state *s = calloc(1, sizeof *s);
    RETURN_IF(err, !s, W4A8MOE_STATUS_OUT_OF_MEMORY, "cpu_ref state");
    *state = s;
    s->scale_dtype = w->scale_dtype;
    s->num_local = w->num_local;
    if (w->dense) return ref_pack_dense(ctx, w, s, err);
    s->experts = malloc((size_t)w->num_local * sizeof *s->experts);
    RETURN_IF(err, !s->experts, W4A8MOE_STATUS_OUT_OF_MEMORY, "cpu_ref expert table");
    memcpy(s->experts, w->experts, (size_t)w->num_local * sizeof *s->experts);
    if (ctx->borrow_weights) return W4A8MOE_STATUS_OK;
    size_t total = 0;
    for (int e = 0; e < w->num_local; e++)
        total += matrix_bytes(&s->experts[e].gate, g, ssz) + matrix_bytes(&s->experts[e].up, g, ssz) +
                 matrix_bytes(&s->experts[e].down, g, ssz);
    s->owned = malloc(total ? total : 1);
    RETURN_IF(err, !s->owned, W4A8MOE_STATUS_OUT_OF_MEMORY,
              "cpu_ref weight copy of %zu bytes; hint: borrow_weights avoids the copy", total);
    char *p = s->owned;
    for (int e = 0; e < w->num_local; e++) {
        p = copy_matrix(&s->experts[e].gate, g, ssz, p);
        p = copy_matrix(&s->experts[e].up, g, ssz, p);
        p = copy_matrix(&s->experts[e].down, g, ssz, p);
    }
    return W4A8MOE_STATUS_OK;
}

static void ref_free(void *state)
{
    ref_state *s = state;
    if (!s) return;
    free(s->owned);
    free(s->experts);
    free(s->dense);
    free(s);
}

/* workspace: h [2I] f32, y [I] f32, b [I] e4m3, then (BF16 scheme) x [H] f32 16-aligned */
static size_t ref_workspace_size(const w4a8moe_stage_ctx *ctx)
{
    return (size_t)ctx->desc->inter * (3 * sizeof(float) + 1) + 16 +
           (size_t)ctx->desc->hidden * sizeof(float);
}

/* One output channel n of an int4 matrix against e4m3 input a[K]:
 * C[n] * sum_b S[n,b] * sum_{k in b} q[n,k] * a[k], sums in f64 (returns without the input
 * scale, which the caller applies). core/backend.h declares it. */
double w4a8moe_ref_dot(const w4a8moe_int4_matrix *m, w4a8moe_dtype sdt, int g, int64_t n,
                       const uint8_t *a)
{
    int64_t K = m->cols;
    const int32_t *row = m->packed + n * (K / 8);
    double acc = 0.0;
    for (int64_t b = 0; b < K / g; b++) {
        double P = 0.0;
        for (int64_t k = b * g; k < (b + 1) * g; k++)
            P += (double)w4a8moe_int4_get(row, k) * (double)w4a8moe_e4m3_to_f32(a[k]);
        acc += (double)w4a8moe_scale_get(m->scale, sdt, n * (K / g) + b) * P;
    }
    double c = m->channel_scale ? (double)m->channel_scale[n] : 1.0;
    return c * acc;
}

static void ref_row(const w4a8moe_layer_desc *d, const w4a8moe_expert_weights *x, w4a8moe_dtype sdt,
                    const uint8_t *a, float s, float *h, float *y, uint8_t *b, float *out)
{
    int64_t H = d->hidden, I = d->inter;
    int g = d->group_size;
    /* step 3: GEMM1, gate rows then up rows */
    for (int64_t n = 0; n < I; n++) {
        h[n] = (float)((double)s * w4a8moe_ref_dot(&x->gate, sdt, g, n, a));
        h[I + n] = (float)((double)s * w4a8moe_ref_dot(&x->up, sdt, g, n, a));
    }
    /* step 4: gated activation, f32 */
    for (int64_t i = 0; i < I; i++) y[i] = w4a8moe_activate(d->activation, h[i], h[I + i]);
    /* step 5: requantise per routed pair */
    float r;
    if (d->act_scheme == W4A8MOE_ACT_FP8_TENSOR_STATIC) {
        r = d->act_scale_mid;
    } else {
        float amax = 0.0f;
        for (int64_t i = 0; i < I; i++) {
            float v = y[i] < 0 ? -y[i] : y[i];
            if (amax == amax && !(v <= amax)) amax = v; /* a NaN sticks */
        }
        r = w4a8moe_act_scale(amax);
    }
    for (int64_t i = 0; i < I; i++) b[i] = w4a8moe_f32_to_e4m3(y[i] / r);
    /* step 6: GEMM2 */
    for (int64_t m = 0; m < H; m++) out[m] = (float)((double)r * w4a8moe_ref_dot(&x->down, sdt, g, m, b));
}

/* One dense row: sum_k W[n,k] * x[k] in f64. */
static double dense_dot(const w4a8moe_dense_matrix *m, int64_t n, const float *x)
{
    double acc = 0.0;
    for (int64_t k = 0; k < m->cols; k++)
        acc += (double)w4a8moe_scale_get(m->data, m->dtype, n * m->cols + k) * (double)x[k];
    return acc;
}

/* BF16 scheme (unquantised shared expert): h = W13 x, y = act, out = W2 y; x and y in f32. */
static void ref_row_dense(const w4a8moe_layer_desc *d, const w4a8moe_dense_matrix *m,
                          const float *x, float *h, float *y, float *out)
{
    int64_t H = d->hidden, I = d->inter;
    for (int64_t n = 0; n < I; n++) {
        h[n] = (float)dense_dot(&m[0], n, x);
        h[I + n] = (float)dense_dot(&m[1], n, x);
    }
    for (int64_t i = 0; i < I; i++) y[i] = w4a8moe_activate(d->activation, h[i], h[I + i]);
    for (int64_t o = 0; o < H; o++) out[o] = (float)dense_dot(&m[2], o, y);
}

static w4a8moe_status ref_run(const w4a8moe_stage_ctx *ctx, void *state, const w4a8moe_dispatch *dp,
                              void *workspace, void *stream, w4a8moe_err *err)
{
    (void)stream;
    (void)err;
    const ref_state *s = state;
    const w4a8moe_layer_desc *d = ctx->desc;
    int64_t H = d->hidden, I = d->inter;
    float *h = workspace, *y = h + 2 * I;
    uint8_t *b = (uint8_t *)(y + I);
    if (s->dense) {
        float *x = (float *)((char *)workspace + (size_t)I * (3 * sizeof(float) + 1));
        x = (float *)(((uintptr_t)x + 15) & ~(uintptr_t)15);
        for (int e = 0; e < s->num_local; e++)
            for (int64_t r = dp->expert_offsets[e]; r < dp->expert_offsets[e + 1]; r++) {
                int64_t t = dp->row_token[r];
                for (int64_t k = 0; k < H; k++) x[k] = w4a8moe_io_get(dp->x, d->io_dtype, t * H + k);
                ref_row_dense(d, &s->dense[3 * e], x, h, y, dp->y_rows + r * H);
            }
        return W4A8MOE_STATUS_OK;
    }
    for (int e = 0; e < s->num_local; e++)
        for (int64_t r = dp->expert_offsets[e]; r < dp->expert_offsets[e + 1]; r++)
            ref_row(d, &s->experts[e], s->scale_dtype, dp->a_q + r * H, dp->a_scale[r], h, y, b,
                    dp->y_rows + r * H);
    return W4A8MOE_STATUS_OK;
}

const w4a8moe_experts_ops w4a8moe_cpu_ref_experts = {
    .name = "cpu_ref",
    .api_version = W4A8MOE_BACKEND_API,
    .device_kind = W4A8MOE_DEVICE_CPU,
    .layout = W4A8MOE_LAYOUT_CONTIGUOUS,
    /* every device, scheme pair, activation, parallel config and shape the core accepts */
    .supports_quant = ref_supports_quant,
    .workspace_size = ref_workspace_size,
    .pack_weights = ref_pack,
    .free_state = ref_free,
    .run = ref_run,
};
