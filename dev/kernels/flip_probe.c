/*
 * flip_probe.c — on the host, what one flipped requantised code does to one output row of
 * test_gpu_workspace's case (H 512, I 256, E 32, k 4, g 128; tests/gpu/test_gpu_workspace.c),
 * to test the reading docs/numerics.md ("Tolerance") gives for a GPU row off cpu_ref: that y[i] / r
 * (step 5) sat so near a midpoint between two e4m3 codes that the GPU's last-bit difference in y
 * picked the other code. For token t it follows cpu_ref's steps (docs/numerics.md) for each routed
 * pair, lists the codes nearest a midpoint (relative distance) and, for each, the relative L2
 * change of the output row when that one code takes its other neighbour — to be set beside the
 * row error the GPU run measured (dev/kernels/tol_replay.c).
 * `flip_probe T MODE SEED TOKEN [N]`: the case of tol_replay (MODE 0 ids, 4 logits); N codes a
 * pair (default 3). TOKEN -1 scans every token of N seeds from SEED instead: for every code of
 * every pair, the row move its flip would make (one column of GEMM2 times the code's step), and
 * how many of those moves exceed the GPU tolerance's 1e-2 and 2e-3 (docs/numerics.md).
 * cpu_ref's steps come from tests/gpu/flip_explain.h (the GPU tests' failure reports), whose
 * host test checks them against cpu_ref bit for bit. CPU only; built by
 * dev/rounds/build_device_bins.sh into build-lab/flip_probe.
 */
#include "gpu/flip_explain.h"
#include "gpu/gpu_harness.h"
#include "gpu/workspace_case.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Step 6 for one pair: o[H] from codes b and scale r. */
static void gemm2(const w4a8moe_layer_desc *d, const w4a8moe_expert_weights *x, w4a8moe_dtype sdt,
                  const uint8_t *b, float r, float *o)
{
    for (int64_t m = 0; m < d->hidden; m++)
        o[m] = (float)((double)r * w4a8moe_ref_dot(&x->down, sdt, d->group_size, m, b));
}

static double rel_l2(const float *ref, const float *got, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* TOKEN -1: over every token of nseeds cases, the row move of each code's flip. The move of
 * code i of pair j is |w_j| * r_j * |step| * ||col_i|| / ||out||, col_i[m] = C2[m] * S2[m, i / g]
 * * q2[m, i]: exact for GEMM2 in f64, before the f32 roundings of steps 6-7. */
static int scan(int64_t T, int mode, uint64_t seed0, int nseeds)
{
    w4a8moe_layer_desc d = workspace_case_shape();
    int64_t H = d.hidden, I = d.inter, k = d.top_k;
    int g = d.group_size;
    int64_t flips = 0, above2 = 0, above3 = 0, rows = 0, rows_at_risk = 0;
    double worst = 0;
    float *hh = malloc((size_t)(2 * I) * 4), *y = malloc((size_t)I * 4), *o = malloc((size_t)(H * k) * 4);
    float *out = malloc((size_t)H * 4), r[8];
    double *coln = malloc((size_t)I * sizeof(double));
    uint8_t *a = malloc((size_t)H), *b = malloc((size_t)(I * k));
    int32_t *ids = malloc((size_t)(T * k) * 4);
    float *wts = malloc((size_t)(T * k) * 4);
    for (int sd = 0; sd < nseeds; sd++) {
        uint64_t seed = seed0 + (uint64_t)sd;
        w4a8moe_synth_weights sw;
        if (w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, seed)) return 1;
        w4a8moe_synth_rng rng = {seed ^ 0x5eed};
        gh_inputs in;
        if (gh_inputs_make(&in, &d, T, mode, &rng)) return 1;
        if (in.logits) {
            if (w4a8moe_route(&d, T, in.logits, ids, wts) != W4A8MOE_STATUS_OK) return 1;
        } else {
            memcpy(ids, in.ids, (size_t)(T * k) * 4);
            memcpy(wts, in.weights, (size_t)(T * k) * 4);
        }
        const w4a8moe_dtype sdt = sw.weights.scale_dtype;
        for (int64_t t = 0; t < T; t++) {
            const float s = flip_quantise_token(&d, in.x, t, a);
            memset(out, 0, (size_t)H * 4);
            for (int64_t j = 0; j < k; j++) {
                int32_t e = ids[t * k + j];
                if (e < 0) continue;
                const w4a8moe_expert_weights *x = &sw.experts[e];
                r[j] = flip_pair_codes(&d, x, sdt, a, s, hh, y, b + j * I);
                gemm2(&d, x, sdt, b + j * I, r[j], o + j * H);
                for (int64_t m = 0; m < H; m++) out[m] += wts[t * k + j] * o[j * H + m];
            }
            double on = 0;
            for (int64_t m = 0; m < H; m++) on += (double)out[m] * out[m];
            on = sqrt(on);
            int risk = 0;
            for (int64_t j = 0; j < k; j++) {
                int32_t e = ids[t * k + j];
                if (e < 0) continue;
                const w4a8moe_int4_matrix *dn = &sw.experts[e].down;
                for (int64_t i = 0; i < I; i++) coln[i] = 0;
                for (int64_t m = 0; m < H; m++) {
                    const int32_t *row = dn->packed + m * (I / 8);
                    double c = dn->channel_scale ? dn->channel_scale[m] : 1.0;
                    for (int64_t i = 0; i < I; i++) {
                        double v = c * (double)w4a8moe_scale_get(dn->scale, sdt, m * (I / g) + i / g) *
                                   (double)w4a8moe_int4_get(row, i);
                        coln[i] += v * v;
                    }
                }
                for (int64_t i = 0; i < I; i++) {
                    uint8_t c = b[j * I + i];
                    double step;
                    /* the neighbour on the larger side (the step a flip up takes; a flip down
                     * takes at most this) */
                    uint8_t mag = c & 0x7f;
                    if (mag >= 0x7e) continue; /* 448: the row's max, it cannot flip */
                    step = fabs((double)w4a8moe_e4m3_to_f32((uint8_t)(mag + 1)) -
                                (double)w4a8moe_e4m3_to_f32(mag));
                    double move = fabs((double)wts[t * k + j]) * r[j] * step * sqrt(coln[i]) / on;
                    flips++;
                    above2 += move > 2e-3;
                    above3 += move > 1e-2;
                    risk |= move > 1e-2;
                    if (move > worst) worst = move;
                }
            }
            rows++;
            rows_at_risk += risk;
        }
        gh_inputs_free(&in);
        w4a8moe_synth_weights_free(&sw);
    }
    printf("T %lld mode %d, %d seeds from %llu: %lld rows, %lld codes; a flip would move its row > 2e-3 for "
           "%lld codes (%.3f %%), > 1e-2 for %lld (%.4f %%), worst %.3e; rows with a code whose flip breaks 1e-2: "
           "%lld (%.1f %%)\n", (long long)T, mode, nseeds, (unsigned long long)seed0, (long long)rows,
           (long long)flips, (long long)above2, 100.0 * above2 / flips, (long long)above3, 100.0 * above3 / flips,
           worst, (long long)rows_at_risk, 100.0 * rows_at_risk / rows);
    free(hh); free(y); free(o); free(out); free(coln); free(a); free(b); free(ids); free(wts);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s T MODE SEED TOKEN [N]\n", argv[0]);
        return 2;
    }
    int64_t T = atoll(argv[1]), t = atoll(argv[4]);
    int mode = atoi(argv[2]), N = argc > 5 ? atoi(argv[5]) : 3;
    uint64_t seed = strtoull(argv[3], NULL, 10);
    if (t == -1) return scan(T, mode, seed, argc > 5 ? N : 1);
    w4a8moe_layer_desc d = workspace_case_shape();
    int64_t H = d.hidden, I = d.inter, k = d.top_k;
    if (t < 0 || t >= T) { fprintf(stderr, "token %lld outside [0, %lld)\n", (long long)t, (long long)T); return 2; }
    w4a8moe_synth_weights sw;
    if (w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, seed)) return 1;
    w4a8moe_synth_rng rng = {seed ^ 0x5eed};
    gh_inputs in;
    if (gh_inputs_make(&in, &d, T, mode, &rng)) return 1;
    int32_t *ids = malloc((size_t)(T * k) * 4);
    float *wts = malloc((size_t)(T * k) * 4);
    if (in.logits) {
        if (w4a8moe_route(&d, T, in.logits, ids, wts) != W4A8MOE_STATUS_OK) return 1;
    } else {
        memcpy(ids, in.ids, (size_t)(T * k) * 4);
        memcpy(wts, in.weights, (size_t)(T * k) * 4);
    }
    uint8_t *a = malloc((size_t)H), *b = malloc((size_t)I * k);
    const float s = flip_quantise_token(&d, in.x, t, a);
    float *hh = malloc((size_t)(2 * I) * 4), *y = malloc((size_t)(I * k) * 4), r[8];
    float *o = malloc((size_t)(H * k) * 4), *ref = malloc((size_t)H * 4), *alt = malloc((size_t)H * 4);
    float *oj = malloc((size_t)H * 4);
    const w4a8moe_dtype sdt = sw.weights.scale_dtype;
    for (int64_t j = 0; j < k; j++) {
        int32_t e = ids[t * k + j];
        if (e < 0) continue;
        const w4a8moe_expert_weights *x = &sw.experts[e];
        r[j] = flip_pair_codes(&d, x, sdt, a, s, hh, y + j * I, b + j * I);
        gemm2(&d, x, sdt, b + j * I, r[j], o + j * H);
    }
    /* step 7, f32, j ascending */
    memset(ref, 0, (size_t)H * 4);
    for (int64_t j = 0; j < k; j++)
        if (ids[t * k + j] >= 0)
            for (int64_t m = 0; m < H; m++) ref[m] += wts[t * k + j] * o[j * H + m];
    printf("token %lld (T %lld, mode %d, seed %llu): step-2 scale %.6g\n", (long long)t, (long long)T, mode,
           (unsigned long long)seed, s);
    for (int64_t j = 0; j < k; j++) {
        int32_t e = ids[t * k + j];
        if (e < 0) continue;
        printf(" pair %lld: expert %d weight %.5f, r %.6g\n", (long long)j, e, wts[t * k + j], r[j]);
        /* the N codes nearest a midpoint, and what flipping each does to the row */
        double *mg = malloc((size_t)I * sizeof(double));
        for (int64_t i = 0; i < I; i++) flip_other_code(y[j * I + i] / r[j], &mg[i]); /* 448: infinite */
        int64_t pick[16];
        int np = N < 16 ? N : 16;
        for (int q = 0; q < np; q++) { /* the q-th smallest margin: take it, mark it used */
            int64_t best = 0;
            for (int64_t i = 1; i < I; i++)
                if (mg[i] < mg[best]) best = i;
            pick[q] = best;
            mg[best] = INFINITY;
        }
        free(mg);
        for (int q = 0; q < np; q++) {
            int64_t i = pick[q];
            double m;
            uint8_t keep = b[j * I + i], oc = flip_other_code(y[j * I + i] / r[j], &m);
            b[j * I + i] = oc;
            gemm2(&d, &sw.experts[e], sdt, b + j * I, r[j], oj);
            b[j * I + i] = keep;
            memcpy(alt, ref, (size_t)H * 4);
            for (int64_t mm = 0; mm < H; mm++) alt[mm] += wts[t * k + j] * (oj[mm] - o[j * H + mm]);
            printf("   i %3lld: y/r %+.9g, midpoint distance %.3e (rel), code %+g -> %+g: row moves %.4e\n",
                   (long long)i, (double)(y[j * I + i] / r[j]), m, (double)w4a8moe_e4m3_to_f32(keep),
                   (double)w4a8moe_e4m3_to_f32(oc), rel_l2(ref, alt, H));
        }
    }
    free(ids); free(wts); free(a); free(b); free(hh); free(y); free(o); free(ref); free(alt); free(oj);
    gh_inputs_free(&in);
    w4a8moe_synth_weights_free(&sw);
    return 0;
}
