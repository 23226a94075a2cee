/*
 * sm90_w4a8_gemm.cu — kernel lab for the cuda_sm90 grouped W4A8 GEMM
 * (src/cuda/kernels/sm90_grouped_gemm.cuh), against the CPU reference and the cuda_sm89 kernel.
 *
 * Problem: E experts, each with its own weights q [N, K] int4, S [N, K/g], C [N], and its own
 * rows of a [R, K] e4m3 (row counts vary around M, so tiles are partly filled).
 *   plain (GEMM2 form):  out[r, n] = s[r] * C[n] * sum_b S[n, b] * P_b
 *   gated (GEMM1 form):  N = 2I rows (gate, up), y[r, i] = silu(h[r, i]) * h[r, I + i]
 * CPU reference: f64 sums (cpu_ref's), on up to 24 sampled rows. Versions:
 *   sm89           the cuda_sm89 library kernel (mma.sync, f64 promotion) — the baseline
 *   fp8grp bn128   e4m3 wgmma m64n128k32, 2 consumer warpgroups, TMA ring of 5 stages,
 *                  promotion once per K group
 *   f16 bn128      f16 wgmma m64n128k16 on the exactly widened values (the activations widened
 *                  by sm90_widen_kernel, outside the timing), 8 stages of 64 K, promotion per
 *                  K group (the library's fallback)
 *   f16s bn128/256 the scaled kernel (sm90_scaled_gemm.cuh): group scales folded into the f16
 *                  weights, one accumulator, the next k32 step converted while the wgmmas run
 *   f16s-pP bnN    the same with the tensor-core sum added into f32 every P k32 steps (for
 *                  GEMM1: fewer truncating additions a sum; needs a second BN/2 of registers)
 *   f16s bn64, f16 bn64   the two kernels at the library's smallest tile (dev/kernels/tune_sm90_tiles.py)
 *   f16x bn128/192 (versions a, b) the promoting kernel with a converter warpgroup writing f16 A
 *                  tiles to shared memory and wgmma on two shared operands
 *                  (sm90_convert_ss_gemm.cuh): the promotion's accuracy at a wider tile
 * The scales are bf16 values (stored as f32), as a bf16 checkpoint's, so f16s is exact.
 * Each run poisons the output first (NaN) and checks every sampled row; timing is the median
 * of 15 runs with the L2 flushed (256 MB memset) before each, TFLOP/s = 2*R*N*K / t.
 *
 * Build: nvcc -O3 -std=c++17 -Iinclude -gencode=arch=compute_90a,code=sm_90a \
 *            dev/kernels/sm90_w4a8_gemm.cu -o build-lab/sm90_lab
 * Run:   [LAB_ONLY=digits] [LAB_ITERS=n] build-lab/sm90_lab [M] [E] [N] [K] [g] [gated] [seed]
 *        (default 2048 8 4096 14336 128 0: Mixtral's down projection at 2048 rows per expert)
 */
#include "../../src/common/quant.h"
#include "../../src/cuda/kernels/sm90_scaled_gemm.cuh"
#include "sm90_convert_ss_gemm.cuh"

#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <algorithm>
#include <vector>

#define CK(x)                                                                                  \
    do {                                                                                       \
        cudaError_t e_ = (x);                                                                  \
        if (e_ != cudaSuccess) {                                                               \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

static uint64_t rng = 0x1234567;
static uint32_t next32(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}
static float unif(float lo, float hi) { return lo + (hi - lo) * (float)(next32() & 0xffffff) / 16777216.0f; }

struct problem {
    int M, E, N, K, g, gated, R;
    std::vector<int32_t> off;            /* [E + 1] */
    std::vector<uint8_t> a;              /* [R, K] */
    std::vector<float> sa;               /* [R] */
    std::vector<int32_t> q;              /* [E, N, K/8] */
    std::vector<float> S, C;             /* [E, N, K/g], [E, N] */
};

static double silu_d(double v) { return v / (1.0 + exp(-v)); }

/* Reference row r: plain [N] or gated [N/2]. */
static void ref_row(const problem &P, int e, int r, std::vector<double> &out)
{
    int N = P.N, K = P.K, g = P.g, G = K / g;
    std::vector<float> h(N);
    for (int n = 0; n < N; n++) {
        const int32_t *qr = &P.q[((size_t)e * N + n) * (K / 8)];
        double acc = 0;
        for (int b = 0; b < G; b++) {
            double Pb = 0;
            for (int k = b * g; k < (b + 1) * g; k++)
                Pb += (double)w4a8moe_int4_get(qr, k) * w4a8moe_e4m3_to_f32(P.a[(size_t)r * K + k]);
            acc += (double)P.S[((size_t)e * N + n) * G + b] * Pb;
        }
        h[n] = (float)((double)P.sa[r] * ((double)P.C[(size_t)e * N + n] * acc));
    }
    out.assign(P.gated ? N / 2 : N, 0.0);
    for (size_t i = 0; i < out.size(); i++)
        out[i] = P.gated ? (double)(float)silu_d(h[i]) * h[N / 2 + i] : h[i];
}

static void make(problem &P)
{
    P.off.assign(P.E + 1, 0);
    for (int e = 0; e < P.E; e++) P.off[e + 1] = P.off[e] + std::max(1, P.M + (int)(next32() % 33) - 16);
    P.R = P.off[P.E];
    P.a.resize((size_t)P.R * P.K);
    for (auto &v : P.a) {
        uint8_t c;
        do c = (uint8_t)next32(); while ((c & 0x7f) == 0x7f); /* no NaN codes */
        v = c;
    }
    P.sa.resize(P.R);
    for (auto &v : P.sa) v = unif(0.001f, 0.01f);
    P.q.resize((size_t)P.E * P.N * (P.K / 8));
    for (auto &v : P.q) v = (int32_t)next32() ^ (int32_t)(next32() << 21);
    P.S.resize((size_t)P.E * P.N * (P.K / P.g));
    for (auto &v : P.S) v = w4a8moe_bf16_to_f32(w4a8moe_f32_to_bf16(unif(0.004f, 0.02f)));
    P.C.resize((size_t)P.E * P.N);
    for (auto &v : P.C) v = unif(0.5f, 1.5f);
}

template <typename T>
static T *upload(const std::vector<T> &v)
{
    T *d = NULL;
    CK(cudaMalloc((void **)&d, v.size() * sizeof(T) + 16));
    CK(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}

/* Worst rel-L2 over the sampled rows; NaN (unwritten) counts as failure. */
static double check(const problem &P, const float *dout, int n_out)
{
    std::vector<float> got((size_t)P.R * n_out);
    CK(cudaMemcpy(got.data(), dout, got.size() * 4, cudaMemcpyDeviceToHost));
    double worst = 0;
    std::vector<double> ref;
    for (int i = 0; i < 24; i++) {
        int r = (int)((int64_t)i * (P.R - 1) / 23), e = 0;
        while (P.off[e + 1] <= r) e++;
        ref_row(P, e, r, ref);
        double num = 0, den = 0;
        for (int n = 0; n < n_out; n++) {
            double gv = got[(size_t)r * n_out + n];
            if (!isfinite(gv)) return INFINITY;
            num += (gv - ref[n]) * (gv - ref[n]);
            den += ref[n] * ref[n];
        }
        worst = std::max(worst, sqrt(num / (den > 0 ? den : 1)));
    }
    return worst;
}

int main(int argc, char **argv)
{
    problem P;
    P.M = argc > 1 ? atoi(argv[1]) : 2048;
    P.E = argc > 2 ? atoi(argv[2]) : 8;
    P.N = argc > 3 ? atoi(argv[3]) : 4096;
    P.K = argc > 4 ? atoi(argv[4]) : 14336;
    P.g = argc > 5 ? atoi(argv[5]) : 128;
    P.gated = argc > 6 ? atoi(argv[6]) : 0;
    rng ^= argc > 7 ? (uint64_t)atoll(argv[7]) * 0x9e3779b97f4a7c15ull : 0;
    make(P);
    const int n_out = P.gated ? P.N / 2 : P.N, G = P.K / P.g;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("lab sm90_w4a8_gemm on %s: R=%d (E=%d, ~%d rows each) N=%d K=%d g=%d %s\n", prop.name,
           P.R, P.E, P.M, P.N, P.K, P.g, P.gated ? "gated" : "plain");

    int32_t *d_q = upload(P.q), *d_off = upload(P.off);
    float *d_S = upload(P.S), *d_C = upload(P.C), *d_sa = upload(P.sa);
    uint8_t *d_a = upload(P.a);
    float *d_out;
    uint32_t *d_rowmax;
    int2 *d_tiles;
    int32_t *d_ntiles;
    CK(cudaMalloc((void **)&d_out, (size_t)P.R * n_out * 4));
    CK(cudaMalloc((void **)&d_rowmax, (size_t)P.R * 4));
    CK(cudaMalloc((void **)&d_tiles, (size_t)(P.R + P.E) * 8));
    CK(cudaMalloc((void **)&d_ntiles, 4));
    char *flush;
    const size_t flush_bytes = 256u << 20;
    CK(cudaMalloc((void **)&flush, flush_bytes));

    /* sm89 packing */
    uint2 *q89;
    float *s89, *c89;
    CK(cudaMalloc((void **)&q89, P.q.size() * 4));
    CK(cudaMalloc((void **)&s89, P.S.size() * 4));
    CK(cudaMalloc((void **)&c89, P.C.size() * 4));
    for (int e = 0; e < P.E; e++) {
        int64_t n1 = P.N / 16 * (P.K / 32) * 32;
        sm89_pack_kernel<<<(unsigned)((n1 + 255) / 256), 256>>>(d_q + (size_t)e * P.N * (P.K / 8), P.N,
                                                                 P.K, q89 + (size_t)e * P.N * (P.K / 8) / 2);
        int64_t n2 = (int64_t)P.N * G;
        sm89_pack_scales_kernel<<<(unsigned)((n2 + 255) / 256), 256>>>(
            d_S + (size_t)e * P.N * G, 2, P.N, G, d_C + (size_t)e * P.N, s89 + (size_t)e * P.N * G,
            c89 + (size_t)e * P.N);
    }
    /* sm90 packing: the e4m3 layout (128 K a stage) and the bf16 one (64 K a stage) */
    const int64_t nrb0 = P.gated ? (n_out + 31) / 32 : (n_out + 63) / 64, nrb = (nrb0 + 1) & ~1ll;
    const int64_t rows_pad = nrb * 64, per_e = nrb * ((P.K + 127) / 128) * 512 + nrb * 512;
    uint2 *q90[2];
    float *s90, *c90;
    uint16_t *a_wide;
    CK(cudaMalloc((void **)&q90[0], (size_t)P.E * per_e * 8));
    CK(cudaMalloc((void **)&q90[1], (size_t)P.E * per_e * 8));
    CK(cudaMalloc((void **)&s90, (size_t)P.E * rows_pad * G * 4));
    CK(cudaMalloc((void **)&c90, (size_t)P.E * rows_pad * 4));
    CK(cudaMalloc((void **)&a_wide, (size_t)P.R * P.K * 2));
    for (int e = 0; e < P.E; e++) {
        for (int bf = 0; bf < 2; bf++) {
            int64_t n1 = nrb * ((P.K + (bf ? 63 : 127)) / (bf ? 64 : 128)) * 128 * (bf ? 2 : 4);
            sm90_pack_kernel<<<(unsigned)((n1 + 255) / 256), 256>>>(d_q + (size_t)e * P.N * (P.K / 8),
                                                                     n_out, P.gated, P.K, rows_pad, bf,
                                                                     0, q90[bf] + e * n1);
        }
        int64_t n2 = rows_pad * G;
        sm90_pack_scales_kernel<<<(unsigned)((n2 + 255) / 256), 256>>>(
            d_S + (size_t)e * P.N * G, 2, n_out, P.gated, G, rows_pad, d_C + (size_t)e * P.N,
            s90 + e * n2, c90 + e * rows_pad);
    }
    sm90_widen_kernel<<<P.R, 256>>>(d_a, d_off + P.E, P.K, a_wide);
    /* the scaled kernel's weight blocks (int4 + scales a 64-K stage) */
    const int blk = sm90s_block_bytes(P.g);
    const int64_t KB64 = (P.K + 63) / 64, per_s = nrb * KB64 * blk;
    char *qs;
    float *cs;
    int32_t *shift, *inexact;
    CK(cudaMalloc((void **)&qs, (size_t)P.E * per_s));
    CK(cudaMalloc((void **)&cs, (size_t)P.E * rows_pad * 4));
    CK(cudaMalloc((void **)&shift, (size_t)rows_pad * 4));
    CK(cudaMalloc((void **)&inexact, 4));
    CK(cudaMemset(inexact, 0, 4));
    for (int e = 0; e < P.E; e++) {
        int64_t n1 = nrb * KB64 * 128 * 2;
        sm90_pack_kernel<<<(unsigned)((n1 + 255) / 256), 256>>>(d_q + (size_t)e * P.N * (P.K / 8), n_out,
                                                                 P.gated, P.K, rows_pad, 1, blk / 8,
                                                                 (uint2 *)(qs + e * per_s));
        sm90s_row_shift_kernel<<<(unsigned)((rows_pad + 255) / 256), 256>>>(
            d_S + (size_t)e * P.N * G, 2, n_out, P.gated, G, rows_pad, d_C + (size_t)e * P.N, shift,
            cs + e * rows_pad, inexact);
        int64_t n3 = nrb * KB64 * (P.g == 32 ? 128 : 64);
        sm90s_pack_scales_kernel<<<(unsigned)((n3 + 255) / 256), 256>>>(
            d_S + (size_t)e * P.N * G, 2, n_out, P.gated, P.K, P.g, rows_pad, shift, qs + e * per_s);
    }
    CK(cudaDeviceSynchronize());
    int32_t h_inexact = 0;
    CK(cudaMemcpy(&h_inexact, inexact, 4, cudaMemcpyDeviceToHost));
    if (h_inexact) printf("scaled packing: some scale is not exact in f16 (unexpected for bf16 scales)\n");

    const double flops = 2.0 * P.R * P.N * P.K;
    printf("%-14s %10s %10s %12s\n", "version", "us", "TFLOP/s", "worst relL2");
    const char *names[] = {"sm89 nt4", "fp8grp bn128", "f16 bn128", "f16s bn128", "f16s bn256",
                           "f16s-p8 bn128", "f16s-p8 bn192", "f16s-p16 bn192", "f16s bn64", "f16 bn64",
                           "f16x bn128", "f16x bn192"};
    const char *only = getenv("LAB_ONLY"); /* the versions to run, as digits/letters: "24ab" */
    for (int v = 0; v < 12; v++) {
        if (only && !strchr(only, v < 10 ? '0' + v : 'a' + v - 10)) continue;
        const int bn = v == 0 ? 32 : v == 4 ? 256 : v == 10 ? 128 : v == 11 ? 192 : v >= 8 ? 64 : v >= 6 ? 192 : 128;
        const bool wide = v >= 2;
        const char *name = names[v];
        unsigned bound = (unsigned)((P.R + bn - 1) / bn + P.E);
        CUtensorMap tm;
        if (v > 0 && sm90_tmap_act(&tm, wide ? (const void *)a_wide : (const void *)d_a, P.R, P.K, bn, wide)) {
            printf("%s: tensor map failed\n", name);
            continue;
        }
        auto run = [&]() -> cudaError_t {
            sm89_schedule_kernel<<<1, 1024>>>(d_off, P.E, bn, d_tiles, d_ntiles, d_rowmax, P.R);
            if (v == 0) {
                sm89_gemm_args a = {q89, s89, c89, P.N, n_out, P.K, P.g, d_a, d_sa, d_off, d_tiles,
                                    d_ntiles, d_out, d_rowmax, 0};
                dim3 grid(bound, (unsigned)((n_out / 16 + 3) / 4));
                if (P.gated) sm89_gemm_kernel<4, 1, true><<<grid, 128>>>(a);
                else sm89_gemm_kernel<4, 1, false><<<grid, 128>>>(a);
                return cudaGetLastError();
            }
            if (v >= 3 && v <= 8) {
                sm90_gemm_args a = {(const uint2 *)qs, NULL, cs, nrb, n_out, P.K, P.g, d_sa, d_off, d_tiles,
                                    d_ntiles, d_out, d_rowmax, 0};
                if (v == 5) return P.gated ? sm90s_gemm_launch<128, 10, true, 8>(tm, a, bound, 0)
                                           : sm90s_gemm_launch<128, 10, false, 8>(tm, a, bound, 0);
                if (v == 6) return P.gated ? sm90s_gemm_launch<192, 7, true, 8>(tm, a, bound, 0)
                                           : sm90s_gemm_launch<192, 7, false, 8>(tm, a, bound, 0);
                if (v == 7) return P.gated ? sm90s_gemm_launch<192, 7, true, 16>(tm, a, bound, 0)
                                           : sm90s_gemm_launch<192, 7, false, 16>(tm, a, bound, 0);
                if (v == 8) return P.gated ? sm90s_gemm_launch<64, 14, true>(tm, a, bound, 0)
                                           : sm90s_gemm_launch<64, 14, false>(tm, a, bound, 0);
                if (bn == 256) return P.gated ? sm90s_gemm_launch<256, 6, true>(tm, a, bound, 0)
                                              : sm90s_gemm_launch<256, 6, false>(tm, a, bound, 0);
                return P.gated ? sm90s_gemm_launch<128, 10, true>(tm, a, bound, 0)
                               : sm90s_gemm_launch<128, 10, false>(tm, a, bound, 0);
            }
            sm90_gemm_args a = {q90[wide], s90, c90, nrb, n_out, P.K, P.g, d_sa, d_off, d_tiles, d_ntiles,
                                d_out, d_rowmax, 0};
            if (v == 10) return P.gated ? sm90x_gemm_launch<128, 6, true>(tm, a, bound, 0)
                                        : sm90x_gemm_launch<128, 6, false>(tm, a, bound, 0);
            if (v == 11) return P.gated ? sm90x_gemm_launch<192, 5, true>(tm, a, bound, 0)
                                        : sm90x_gemm_launch<192, 5, false>(tm, a, bound, 0);
            if (v == 9) return P.gated ? sm90_gemm_launch<64, 10, true>(tm, a, bound, 0, SM90_F16)
                                       : sm90_gemm_launch<64, 10, false>(tm, a, bound, 0, SM90_F16);
            if (wide) return P.gated ? sm90_gemm_launch<128, 8, true>(tm, a, bound, 0, SM90_F16)
                                     : sm90_gemm_launch<128, 8, false>(tm, a, bound, 0, SM90_F16);
            return P.gated ? sm90_gemm_launch<128, 5, true>(tm, a, bound, 0, SM90_FP8_GROUP)
                           : sm90_gemm_launch<128, 5, false>(tm, a, bound, 0, SM90_FP8_GROUP);
        };
        CK(cudaMemset(d_out, 0xff, (size_t)P.R * n_out * 4));
        CK(run());
        CK(cudaDeviceSynchronize());
        double err = check(P, d_out, n_out);
        std::vector<float> ts;
        cudaEvent_t t0, t1;
        CK(cudaEventCreate(&t0));
        CK(cudaEventCreate(&t1));
        const int iters = getenv("LAB_ITERS") ? atoi(getenv("LAB_ITERS")) : 15;
        for (int it = 0; it < iters; it++) {
            CK(cudaMemset(flush, it, flush_bytes));
            CK(cudaEventRecord(t0));
            CK(run());
            CK(cudaEventRecord(t1));
            CK(cudaEventSynchronize(t1));
            float ms;
            CK(cudaEventElapsedTime(&ms, t0, t1));
            ts.push_back(ms * 1000.0f);
        }
        std::sort(ts.begin(), ts.end());
        double us = ts[ts.size() / 2];
        printf("%-14s %10.1f %10.1f %12.3g %s\n", name, us, flops / us * 1e-6, err,
               err <= 2e-3 ? "ok" : err <= 1e-2 ? "ok (gpu tol)" : "FAIL");
    }
    return 0;
}
