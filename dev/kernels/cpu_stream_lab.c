/*
 * cpu_stream_lab.c — the `cpu` backend's stream kernel alone (cpu_experts_impl.h), one thread:
 * the rate it multiplies a tile's weights at with the tile in cache (its compute ceiling) and
 * streamed from memory (a buffer much larger than the LLC, tiles in address order, as the decode
 * path hands them to a thread), at 1-4 rows and 1-3 digit planes. Random nibbles, scales and
 * digits; the out sums are checked against a scalar evaluation of the same formula. First, how
 * many planes the groups of a per-token quantised Gaussian row need (the rate is set by them).
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc dev/kernels/cpu_stream_lab.c build/libw4a8moe.a \
 *      -l:libjansson.a -lm -pthread -o /tmp/cpu_stream_lab && /tmp/cpu_stream_lab [MB]
 */
#include "common/quant.h"
#include "cpu/cpu_experts_impl.h"

#include <math.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { K = 2048, G = 128, NP = 8 }; /* a tile: 8 panels of K = 2048 (qwen3-30b's GEMM1 shape) */

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

/* Rows with random digits in planes [0, nd) (|d2| <= 4), t = 0. */
static void make_rows(int8_t *a, int32_t *corr, int nd)
{
    memset(a, 0, (size_t)K * 4);
    for (int64_t c = 0; c < K / 8; c++)
        for (int p = 0; p < nd; p++)
            for (int j = 0; j < 8; j++)
                a[c * 32 + 8 * p + j] = (int8_t)(p == 2 ? (int)(next() % 9) - 4 : (int)(next() % 256) - 128);
    for (int b = 0; b < K / G; b++) {
        int32_t word = 0 | nd << 8;
        memcpy(a + (size_t)b * G * 4 + CPU_GROUP_WORD, &word, 4);
        corr[b] = (int32_t)(next() % 1000);
    }
}

/* acc of row r, channel ch of panel p, by the formula in cpu_experts_impl.h. */
static double scalar_acc(const uint8_t *w, size_t panel_bytes, size_t group_bytes, const int8_t *a,
                         const int32_t *corr, int p, int ch)
{
    double acc = 0;
    int blk = ch / 8, j = ch % 8;
    for (int b = 0; b < K / G; b++) {
        const uint8_t *gp = w + (size_t)p * panel_bytes + (size_t)b * group_bytes;
        int64_t S[3] = {0, 0, 0};
        for (int c = 0; c < G / 8; c++) {
            uint32_t dw;
            memcpy(&dw, gp + (size_t)c * CPU_CHUNK + 32 * blk + 4 * j, 4);
            const int8_t *x = a + ((size_t)b * G / 8 + c) * 32;
            for (int i = 0; i < 8; i++) {
                int nib = (dw >> (4 * i)) & 15, pos = (i % 2) * 4 + i / 2; /* even inputs, then odd */
                for (int d = 0; d < 3; d++) S[d] += nib * x[8 * d + pos];
            }
        }
        int32_t P = (int32_t)(S[0] + 256 * S[1] + 65536 * S[2]) - corr[b];
        uint16_t sb;
        memcpy(&sb, gp + (size_t)(G / 8) * CPU_CHUNK + 2 * ch, 2);
        uint32_t u = (uint32_t)sb << 16;
        float s;
        memcpy(&s, &u, 4);
        acc += (double)s * P;
    }
    return acc;
}

/* The planes of a row of n Gaussian values quantised per token (amax -> 448), as the decode path
 * prepares it: counts of groups needing 1, 2, 3 planes. */
static void plane_census(int64_t n, int with_outliers)
{
    float *x = malloc((size_t)n * sizeof(float)), amax = 0;
    uint8_t *q = malloc((size_t)n);
    int8_t *a = aligned_alloc(64, (size_t)n * 4);
    int32_t *corr = malloc((size_t)(n / G + 1) * sizeof(int32_t)), nan = 0, count[4] = {0};
    for (int64_t i = 0; i < n; i++) { /* Box-Muller */
        double u1 = (next() + 1.0) / 4294967297.0, u2 = next() / 4294967296.0;
        x[i] = (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
        if (with_outliers && i % 512 == 7) x[i] *= 20; /* a few large channels, as in real activations */
        amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    }
    for (int64_t i = 0; i < n; i++) q[i] = w4a8moe_f32_to_e4m3(x[i] / (amax / 448.0f));
    w4a8moe_cpu_prep_codes_avx2(q, n, G, a, corr, &nan);
    for (int64_t b = 0; b < n / G; b++) {
        int32_t word;
        memcpy(&word, a + (size_t)b * G * 4 + CPU_GROUP_WORD, 4);
        count[(word >> 8) & 3]++;
    }
    printf("a Gaussian row of %lld%s: groups needing 1, 2, 3 planes: %d, %d, %d\n", (long long)n,
           with_outliers ? " with outliers" : "", count[1], count[2], count[3]);
    free(x), free(q), free(a), free(corr);
}

int main(int argc, char **argv)
{
    plane_census(1 << 16, 0);
    plane_census(1 << 16, 1);
    size_t mb = argc > 1 ? (size_t)atoll(argv[1]) : 512;
    const size_t group_bytes = (size_t)G / 8 * CPU_CHUNK + 32; /* chunks + 16 bf16 scales */
    const size_t panel_bytes = (group_bytes * (K / G) + 63) / 64 * 64;
    const size_t tile_bytes = panel_bytes * NP;
    size_t ntiles = mb * 1000000 / tile_bytes;
    uint8_t *w = aligned_alloc(64, ntiles * tile_bytes);
    for (size_t i = 0; i < ntiles * tile_bytes / 4; i++) ((uint32_t *)(void *)w)[i] = next();
    for (size_t t = 0; t < ntiles * NP; t++) /* bf16 scales in [0.5, 1) */
        for (int b = 0; b < K / G; b++)
            for (int ch = 0; ch < 16; ch++) {
                uint16_t s = (uint16_t)(0x3f00 | (next() & 0x7f));
                memcpy(w + t * panel_bytes + (size_t)b * group_bytes + (size_t)(G / 8) * CPU_CHUNK + 2 * ch, &s, 2);
            }
    int8_t *rows[4];
    int32_t *corr[4];
    double *out = aligned_alloc(64, 4 * NP * 16 * sizeof(double));
    for (int r = 0; r < 4; r++) {
        rows[r] = aligned_alloc(64, (size_t)K * 4);
        corr[r] = malloc((K / G + 1) * sizeof(int32_t));
    }
    printf("tile %zu KB, %zu tiles (%.0f MB); GB/s of weights, one thread\n", tile_bytes >> 10, ntiles,
           ntiles * tile_bytes / 1e6);
    for (int nd = 1; nd <= 3; nd++)
        for (int nr = 1; nr <= 4; nr++) {
            for (int r = 0; r < nr; r++) make_rows(rows[r], corr[r], nd);
            cpu_gemm_args ga = {.panel_bytes = panel_bytes, .group_bytes = group_bytes, .K = K, .g = G,
                                .scale_bf16 = 1, .np = NP, .nr = nr, .a = (const int8_t *const *)rows,
                                .corr = (const int32_t *const *)corr, .out = out};
            /* check tile 1 against the scalar formula */
            ga.w = w + tile_bytes;
            w4a8moe_cpu_stream_avx2(&ga);
            for (int r = 0; r < nr; r++)
                for (int p = 0; p < NP; p++)
                    for (int ch = 0; ch < 16; ch++) {
                        double want = scalar_acc(ga.w, panel_bytes, group_bytes, rows[r], corr[r], p, ch);
                        if (out[(size_t)r * NP * 16 + p * 16 + ch] != want) {
                            printf("MISMATCH nd %d rows %d row %d panel %d ch %d: %.17g != %.17g\n", nd, nr, r,
                                   p, ch, out[(size_t)r * NP * 16 + p * 16 + ch], want);
                            return 1;
                        }
                    }
            double t0 = now();
            int hot = 0;
            while (now() - t0 < 0.3) {
                for (int i = 0; i < 64; i++) w4a8moe_cpu_stream_avx2(&ga);
                hot += 64;
            }
            double hot_gbs = (double)hot * tile_bytes / (now() - t0) / 1e9;
            t0 = now();
            for (size_t t = 0; t < ntiles; t++) {
                ga.w = w + t * tile_bytes;
                ga.pf_next = t + 1 < ntiles ? ga.w + tile_bytes : NULL;
                w4a8moe_cpu_stream_avx2(&ga);
            }
            double cold_gbs = (double)ntiles * tile_bytes / (now() - t0) / 1e9;
            printf("planes %d rows %d: hot %6.2f GB/s, streamed %6.2f GB/s\n", nd, nr, hot_gbs, cold_gbs);
        }
    return 0;
}
