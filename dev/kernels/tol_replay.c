/*
 * tol_replay.c — replays test_gpu_workspace's chunked-forward case (tests/gpu/test_gpu_workspace.c:
 * H 512, I 256, E 32, k 4, group 128, renormalised) on one CUDA backend and says where its rows
 * stand against cpu_ref, so that a failed GPU-tolerance check can be taken apart:
 *   - the layer routed on the device from the logits (what the test ran) and routed on the host
 *     (w4a8moe_route's ids and weights passed in): if only the first is off, the routers differ;
 *   - the five worst rows of each, and how many rows of the two runs differ at all;
 *   - with a count N > 1, seeds s, s + 1, ... s + N - 1: the worst row and the largest mean over
 *     them, and how many seeds fail the tolerance (the rate at which the test would fail).
 * `tol_replay BACKEND T MODE SEED [N]`: MODE 0 ids, 4 logits (gpu_harness.h's modes); SEED is the
 * case's (the test's printed seed + 10 + b for the logits case of its b-th backend).
 * Built by dev/rounds/build_device_bins.sh into build-lab/tol_replay.
 */
#include "gpu/gpu_harness.h"
#include "gpu/workspace_case.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* Relative L2 error of each row of got against ref (rows of ref that are not finite: -1). */
static void row_errors(const float *ref, const float *got, int64_t T, int64_t H, double *rel)
{
    for (int64_t t = 0; t < T; t++) {
        double num = 0, den = 0;
        int finite = 1;
        for (int64_t h = 0; h < H; h++) {
            double r = ref[t * H + h], g = got[t * H + h];
            finite &= isfinite(r) && isfinite(g);
            num += (g - r) * (g - r);
            den += r * r;
        }
        rel[t] = !finite ? -1.0 : den > 0 ? sqrt(num / den) : sqrt(num);
    }
}

static void print_worst(const char *what, const double *rel, int64_t T)
{
    int64_t best[5] = {-1, -1, -1, -1, -1};
    for (int64_t t = 0; t < T; t++)
        for (int i = 0; i < 5; i++)
            if (best[i] < 0 || rel[t] > rel[best[i]]) {
                memmove(best + i + 1, best + i, (size_t)(4 - i) * sizeof best[0]);
                best[i] = t;
                break;
            }
    printf("  %-14s worst rows:", what);
    for (int i = 0; i < 5 && best[i] >= 0; i++) printf(" %lld:%.2e", (long long)best[i], rel[best[i]]);
    printf("\n");
}

/* One seed; returns 1 when the device-routed run is within the tolerance. verbose: print rows. */
static int replay(const char *be, int64_t T, int mode, uint64_t seed, int verbose, double *worst, double *mean)
{
    w4a8moe_layer_desc d = workspace_case_shape();
    w4a8moe_synth_weights sw;
    if (w4a8moe_synth_weights_make(&sw, &d, W4A8MOE_DTYPE_BF16, 0, 0, seed)) return -1;
    w4a8moe_synth_rng rng = {seed ^ 0x5eed};
    gh_inputs in;
    gh_dev g;
    if (gh_inputs_make(&in, &d, T, mode, &rng) || gh_dev_make(&g, &d, &in)) return -1;
    w4a8moe_layer *L = gh_layer(&d, &sw.weights, W4A8MOE_DEVICE_CUDA, be, NULL);
    w4a8moe_layer *R = gh_layer(&d, &sw.weights, W4A8MOE_DEVICE_CPU, "cpu_ref", NULL);
    if (!L || !R) { fprintf(stderr, "create: %s\n", w4a8moe_last_error()); return -1; }
    size_t n = (size_t)(T * d.hidden), nk = (size_t)(T * d.top_k);
    float *a = malloc(n * 4), *b = malloc(n * 4), *r = malloc(n * 4), *hw = malloc(nk * 4);
    int32_t *hid = malloc(nk * 4);
    double *ea = malloc((size_t)T * 8), *eb = malloc((size_t)T * 8);
    void *hout = malloc(n * 2), *dw = NULL, *did = NULL;
    int ok = a && b && r && hw && hid && ea && eb && hout;
    w4a8moe_routing_input dr = gh_routing(g.ids, g.weights, g.logits);
    w4a8moe_routing_input hr = gh_routing(in.ids, in.weights, in.logits);
    cudaMemset(g.out, 0xff, n * 2);
    ok = ok && w4a8moe_layer_forward(L, T, g.x, &dr, g.out, NULL) == W4A8MOE_STATUS_OK &&
         gh_fetch(&d, T, g.out, a) == 0;
    ok = ok && w4a8moe_layer_forward(R, T, in.x, &hr, hout, NULL) == W4A8MOE_STATUS_OK;
    /* the same layer on the host router's ids and weights */
    if (ok && in.logits) {
        ok = w4a8moe_route(&d, T, in.logits, hid, hw) == W4A8MOE_STATUS_OK &&
             cudaMalloc(&did, nk * 4) == cudaSuccess && cudaMalloc(&dw, nk * 4) == cudaSuccess &&
             cudaMemcpy(did, hid, nk * 4, cudaMemcpyHostToDevice) == cudaSuccess &&
             cudaMemcpy(dw, hw, nk * 4, cudaMemcpyHostToDevice) == cudaSuccess;
        w4a8moe_routing_input ir = gh_routing(did, dw, NULL);
        cudaMemset(g.out, 0xff, n * 2);
        ok = ok && w4a8moe_layer_forward(L, T, g.x, &ir, g.out, NULL) == W4A8MOE_STATUS_OK &&
             gh_fetch(&d, T, g.out, b) == 0;
    } else if (ok) {
        memcpy(b, a, n * 4);
    }
    if (!ok) { fprintf(stderr, "forward: %s\n", w4a8moe_last_error()); return -1; }
    for (size_t i = 0; i < n; i++) r[i] = gh_io_get(hout, d.io_dtype, (int64_t)i);
    gh_stats sa = gh_compare_stats(r, a, T, d.hidden), sb = gh_compare_stats(r, b, T, d.hidden);
    *worst = sa.worst;
    *mean = sa.mean;
    if (verbose) {
        row_errors(r, a, T, d.hidden, ea);
        row_errors(r, b, T, d.hidden, eb);
        int64_t differ = 0;
        for (int64_t t = 0; t < T; t++)
            differ += memcmp(a + t * d.hidden, b + t * d.hidden, (size_t)d.hidden * 4) != 0;
        printf("%s T %lld mode %d seed %llu\n", be, (long long)T, mode, (unsigned long long)seed);
        printf("  device-routed: worst %.3e mean %.3e, rows > 2e-3 %lld of %lld, NaN rows %lld\n", sa.worst,
               sa.mean, (long long)sa.above_cpu_tol, (long long)sa.rows, (long long)sa.nan_bad);
        printf("  host-routed:   worst %.3e mean %.3e, rows > 2e-3 %lld of %lld, NaN rows %lld\n", sb.worst,
               sb.mean, (long long)sb.above_cpu_tol, (long long)sb.rows, (long long)sb.nan_bad);
        printf("  rows where the two runs differ: %lld of %lld\n", (long long)differ, (long long)T);
        print_worst("device-routed", ea, T);
        print_worst("host-routed", eb, T);
    }
    int within = gh_within_tol(&sa, be);
    free(a); free(b); free(r); free(hw); free(hid); free(ea); free(eb); free(hout);
    cudaFree(did); cudaFree(dw);
    w4a8moe_layer_free(L);
    w4a8moe_layer_free(R);
    gh_dev_free(&g);
    gh_inputs_free(&in);
    w4a8moe_synth_weights_free(&sw);
    return within;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s BACKEND T MODE SEED [N]\n", argv[0]);
        return 2;
    }
    const char *be = argv[1];
    int64_t T = atoll(argv[2]);
    int mode = atoi(argv[3]);
    uint64_t seed = strtoull(argv[4], NULL, 10);
    int N = argc > 5 ? atoi(argv[5]) : 1;
    int fails = 0;
    double worst_max = 0, mean_max = 0, worst, mean;
    for (int i = 0; i < N; i++) {
        int w = replay(be, T, mode, seed + (uint64_t)i, N == 1 || i == 0, &worst, &mean);
        if (w < 0) return 1;
        if (!w) {
            fails++;
            printf("  seed %llu out of tolerance: worst %.3e mean %.3e\n", (unsigned long long)(seed + i), worst, mean);
        }
        if (worst > worst_max) worst_max = worst;
        if (mean > mean_max) mean_max = mean;
    }
    printf("%s T %lld mode %d, %d seeds from %llu: %d out of tolerance; worst row %.3e, largest mean %.3e\n", be,
           (long long)T, mode, N, (unsigned long long)seed, fails, worst_max, mean_max);
    return 0;
}
