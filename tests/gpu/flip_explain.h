/*
 * flip_explain.h — whether one GPU output row off cpu_ref is explained by one flipped
 * requantised code, the mechanism docs/numerics.md ("Tolerance") allows: the GPU's last-bit
 * difference in y put y[i] / r on the other side of a midpoint between two e4m3 codes (step 5).
 *
 * For token t it follows cpu_ref's steps 2-6 on the host (src/cpu/cpu_ref_experts.c: the sums
 * in f64, steps 2, 4, 5 in f32) for each routed pair, and for every code within `near` (FLIP_NEAR
 * in the tests: relative) of a midpoint it adds what that code's other neighbour would change in the row
 * (w_j · r_j · step · GEMM2's column i). When cpu_ref's row with that one change is within a
 * quarter of the observed error of the GPU's row, the row is explained: a flip the contract's
 * mechanism allows, whatever the tolerance says of its size. Anything else (no code near a
 * midpoint, or no single flip that lands on the GPU's row) is left unexplained: look for a bug.
 *
 * The basic path only: per-token dynamic scales, no router weight on the input, no shared
 * expert (the caller's layer must have none); otherwise flip_explain_row says it cannot tell.
 * Used by the GPU tests' failure reports and by dev/kernels/flip_probe.c; tests/test_flip_explain.c
 * checks it on the host (a row with one code flipped is explained, a row with noise is not).
 */
#ifndef W4A8MOE_FLIP_EXPLAIN_H
#define W4A8MOE_FLIP_EXPLAIN_H

#include "common/quant.h"
#include "core/backend.h" /* w4a8moe_io_get, w4a8moe_activate, w4a8moe_ref_dot */
#include "w4a8moe.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FLIP_NEAR 1e-5 /* relative distance to a midpoint a GPU's last bits can cross */

/* The code on the other side of v from e4m3(v), and v's relative distance to their midpoint
 * (infinite for the saturated 448, which cannot flip). */
static inline uint8_t flip_other_code(float v, double *margin)
{
    uint8_t c = w4a8moe_f32_to_e4m3(v), mag = c & 0x7f;
    if (mag >= 0x7e) {
        *margin = INFINITY;
        return c;
    }
    double av = fabs((double)v), ac = fabs((double)w4a8moe_e4m3_to_f32(c));
    uint8_t o = av >= ac ? (uint8_t)(mag + 1) : (mag > 0 ? (uint8_t)(mag - 1) : mag);
    double ao = fabs((double)w4a8moe_e4m3_to_f32(o)), mid = 0.5 * (ac + ao);
    *margin = av > 0 && o != mag ? fabs(av - mid) / av : INFINITY;
    return (uint8_t)((c & 0x80) | o);
}

typedef struct flip_explain {
    int can_tell;    /* 0: a path this does not follow (the reason in why) */
    int explained;   /* one flip lands within a quarter of the observed error */
    int candidates;  /* codes within `near` of a midpoint */
    int pair;        /* the best candidate: routed pair j, code i, ... */
    int64_t i;
    double margin;   /* its relative distance to the midpoint */
    double move;     /* how far that flip alone moves cpu_ref's row (rel-L2) */
    double residual; /* rel-L2 of the GPU's row against cpu_ref's row with that flip */
    double observed; /* rel-L2 of the GPU's row against cpu_ref's */
    char why[96];
} flip_explain;

/* cpu_ref's step 2 for token t of x ([T, H] in d->io_dtype) into a[H]; returns the scale s_t. */
static inline float flip_quantise_token(const w4a8moe_layer_desc *d, const void *x, int64_t t, uint8_t *a)
{
    const int64_t H = d->hidden;
    float amax = 0.0f;
    for (int64_t c = 0; c < H; c++) {
        const float v = fabsf(w4a8moe_io_get(x, d->io_dtype, t * H + c));
        if (amax == amax && !(v <= amax)) amax = v;
    }
    const float s = w4a8moe_act_scale(amax);
    for (int64_t c = 0; c < H; c++) a[c] = w4a8moe_f32_to_e4m3(w4a8moe_io_get(x, d->io_dtype, t * H + c) / s);
    return s;
}

/* cpu_ref's steps 3-5 for one routed pair (expert weights xw) of a token (a, s from
 * flip_quantise_token): y[I] and the codes b[I]; returns r. h: scratch of 2I values. */
static inline float flip_pair_codes(const w4a8moe_layer_desc *d, const w4a8moe_expert_weights *xw,
                                    w4a8moe_dtype sdt, const uint8_t *a, float s, float *h, float *y,
                                    uint8_t *b)
{
    const int64_t I = d->inter;
    const int g = d->group_size;
    for (int64_t n = 0; n < I; n++) {
        h[n] = (float)((double)s * w4a8moe_ref_dot(&xw->gate, sdt, g, n, a));
        h[I + n] = (float)((double)s * w4a8moe_ref_dot(&xw->up, sdt, g, n, a));
    }
    float ym = 0.0f;
    for (int64_t i = 0; i < I; i++) {
        y[i] = w4a8moe_activate(d->activation, h[i], h[I + i]);
        const float v = fabsf(y[i]);
        if (ym == ym && !(v <= ym)) ym = v;
    }
    const float r = w4a8moe_act_scale(ym);
    for (int64_t i = 0; i < I; i++) b[i] = w4a8moe_f32_to_e4m3(y[i] / r);
    return r;
}

/* The codes of one routed pair (expert weights xw, router weight w; y, b, r from
 * flip_pair_codes) within `near` of a midpoint: fe keeps the one whose flip lands closest to
 * got. rn: ||ref||; col: scratch of H values. */
static inline void flip_explain_pair(const w4a8moe_layer_desc *d, const w4a8moe_expert_weights *xw,
                                     w4a8moe_dtype sdt, const float *y, const uint8_t *b, float r, int j,
                                     float w, const float *ref, const float *got, double rn, double near,
                                     double *col, flip_explain *fe)
{
    const int64_t H = d->hidden, I = d->inter;
    const int g = d->group_size;
    const w4a8moe_int4_matrix *dn = &xw->down;
    for (int64_t i = 0; i < I; i++) {
        double margin;
        const uint8_t oc = flip_other_code(y[i] / r, &margin);
        if (!(margin <= near)) continue;
        fe->candidates++;
        /* cpu_ref's row with code i's other neighbour: + w · r · step · C2 · S2 · q2[:, i] */
        const double step = (double)w4a8moe_e4m3_to_f32(oc) - (double)w4a8moe_e4m3_to_f32(b[i]);
        double mv = 0, res = 0;
        for (int64_t m = 0; m < H; m++) {
            const double c = dn->channel_scale ? dn->channel_scale[m] : 1.0;
            col[m] = (double)w * r * step * c * (double)w4a8moe_scale_get(dn->scale, sdt, m * (I / g) + i / g) *
                     (double)w4a8moe_int4_get(dn->packed + m * (I / 8), i);
            const double left = (double)got[m] - ((double)ref[m] + col[m]);
            mv += col[m] * col[m];
            res += left * left;
        }
        res = sqrt(res) / rn;
        if (res < fe->residual) {
            fe->residual = res;
            fe->pair = j;
            fe->i = i;
            fe->margin = margin;
            fe->move = sqrt(mv) / rn;
        }
    }
}

/* Row t of a forward of layer d (experts: [E] weights; x: [T, H] in d->io_dtype; ids, wts:
 * [T, k]; ref and got: cpu_ref's and the GPU's output rows of t, [H] f32), the codes within
 * `near` of a midpoint considered. */
static inline void flip_explain_row(const w4a8moe_layer_desc *d, const w4a8moe_expert_weights *experts,
                                    w4a8moe_dtype sdt, const void *x, int64_t t, const int32_t *ids,
                                    const float *wts, const float *ref, const float *got, double near,
                                    flip_explain *fe)
{
    memset(fe, 0, sizeof *fe);
    fe->residual = INFINITY;
    const int64_t H = d->hidden, I = d->inter, k = d->top_k;
    if (d->act_scheme != W4A8MOE_ACT_FP8_TOKEN_DYNAMIC || d->router_weight_on_input) {
        snprintf(fe->why, sizeof fe->why, "static scales or the router weight on the input: not followed");
        return;
    }
    double rn = 0, dn = 0;
    for (int64_t m = 0; m < H; m++) {
        rn += (double)ref[m] * ref[m];
        dn += ((double)got[m] - ref[m]) * ((double)got[m] - ref[m]);
    }
    rn = rn > 0 ? sqrt(rn) : 1.0;
    fe->observed = sqrt(dn) / rn;
    uint8_t *a = malloc((size_t)H), *b = malloc((size_t)I);
    float *h = malloc((size_t)(2 * I) * 4), *y = malloc((size_t)I * 4);
    double *col = malloc((size_t)H * sizeof(double));
    fe->can_tell = a && b && h && y && col;
    if (!fe->can_tell) snprintf(fe->why, sizeof fe->why, "out of host memory");
    if (fe->can_tell) {
        const float s = flip_quantise_token(d, x, t, a);
        for (int64_t j = 0; j < k; j++) {
            const int32_t e = ids[t * k + j];
            if (e < 0) continue;
            const float r = flip_pair_codes(d, &experts[e], sdt, a, s, h, y, b);
            flip_explain_pair(d, &experts[e], sdt, y, b, r, (int)j, wts[t * k + j], ref, got, rn, near, col, fe);
        }
    }
    fe->explained = fe->candidates > 0 && fe->residual <= 0.25 * fe->observed;
    free(a); free(b); free(h); free(y); free(col);
}

/* One line on f saying what flip_explain_row found for row t. */
static inline void flip_explain_print(FILE *f, int64_t t, const flip_explain *fe)
{
    if (!fe->can_tell)
        fprintf(f, "  row %lld: %s\n", (long long)t, fe->why);
    else if (fe->explained)
        fprintf(f, "  row %lld (rel-L2 %.3e): explained by one flipped requantised code, pair %d code %lld, "
                   "%.1e (relative) from an e4m3 midpoint; that flip alone moves cpu_ref's row %.3e, leaving "
                   "%.1e (docs/numerics.md, Tolerance)\n", (long long)t, fe->observed, fe->pair, (long long)fe->i,
                fe->margin, fe->move, fe->residual);
    else
        fprintf(f, "  row %lld (rel-L2 %.3e): NOT explained by one flipped code (%d codes within %.0e of a "
                   "midpoint; the best leaves %.1e): look for a bug\n", (long long)t, fe->observed, fe->candidates,
                FLIP_NEAR, fe->residual);
}

#endif /* W4A8MOE_FLIP_EXPLAIN_H */
