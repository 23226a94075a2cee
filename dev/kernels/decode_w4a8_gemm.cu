/*
 * decode_w4a8_gemm.cu — kernel lab for the decode grouped GEMM (src/cuda/kernels/
 * sm90_decode_gemm.cuh) against the library's sm89_gemm_kernel, on E experts with M rows each
 * (the decode shape: many weight bytes, few rows):
 *   out[m, n] = r[m] * C[n] * sum_b S[n, b] * sum_{k in b} q[e(m), n, k] * a[m, k]
 *
 * Reference (a naive f64 kernel, itself checked against the CPU) → versions → validation →
 * benchmark with an L2 flush. Versions, each at nt (8-row fragments) and ksplit (K slices):
 *   sm89   the library's sm89_gemm_kernel (one group in registers, then its scales)
 *   ring   dev/kernels/ring_decode_gemm.cuh: a register ring of D steps in flight a warp
 *   bulk   src/cuda/kernels/sm90_decode_gemm.cuh: shared-memory stages filled by bulk copies
 *   f16    dev/kernels/f16_decode_gemm.cuh: int4 and e4m3 widened to f16, mma k16 (the
 *          cheap conversion; within 1e-5 of sm89 a row, not bitwise)
 *   gated  the GEMM1 form (gate/up pair, SiLU, row amax)
 * Every ring/bulk version must equal the sm89 version of its tile bit for bit (same sums in the
 * same order); plain versions are also compared with the reference (rel-L2 per row).
 * Build: nvcc -O3 -std=c++17 -Iinclude -gencode=arch=compute_90a,code=sm_90a \
 *            dev/kernels/decode_w4a8_gemm.cu -o build-lab/decode_lab
 * Run:   build-lab/decode_lab E M N K [g]   e.g. 2 1 4096 14336 (Mixtral's down projection at
 *        T = 1: two experts, one row each). Prints each version's worst rel-L2 per row against
 *        the reference (up to 16 rows), µs (median of 20, L2 flushed before each), GB/s of
 *        weights. LAB_ONLY=i runs version i alone, LAB_ITERS=n times n runs (ncu: 1).
 */
#include "../../src/common/quant.h"
#include "../../src/cuda/kernels/sm90_decode_gemm.cuh"
#include "f16_decode_gemm.cuh"
#include "ring_decode_gemm.cuh"

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
            return 1;                                                                          \
        }                                                                                      \
    } while (0)

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next32(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static int CHECK_EVERY;
static int check_row(int m) { return m % CHECK_EVERY == 0; }

__global__ void v1_naive(int R, int M, int N, int K, int g, const uint8_t *a, const float *r,
                         const int32_t *q, const float *S, const float *C, float *out)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)R * N) return;
    int m = (int)(i / N), n = (int)(i % N), e = m / M;
    const int32_t *qe = q + (size_t)e * N * (K / 8);
    double acc = 0;
    for (int b = 0; b < K / g; b++) {
        double P = 0;
        for (int k = b * g; k < (b + 1) * g; k++)
            P += (double)w4a8moe_int4_get(qe + (size_t)n * (K / 8), k) * w4a8moe_e4m3_to_f32(a[(size_t)m * K + k]);
        acc += (double)S[((size_t)e * N + n) * (K / g) + b] * P;
    }
    out[i] = (float)((double)r[m] * ((double)C[(size_t)e * N + n] * acc));
}

enum { SM89 = 0, RING = 1, BULK = 2, F16 = 3 };

template <int NT, int KS, bool GATED, int KIND>
static cudaError_t launch(const sm89_gemm_args &p, int ntiles)
{
    dim3 grid(ntiles, (unsigned)((p.n_out / 16 + 4 / KS - 1) / (4 / KS)));
    if (KIND == RING) {
        size_t smem = sm89_ring_smem(p.K, p.g, KS, GATED);
        if (smem > 48 * 1024)
            cudaFuncSetAttribute(sm89_ring_kernel<NT, KS, GATED>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        sm89_ring_kernel<NT, KS, GATED><<<grid, 128, smem>>>(p);
    } else if (KIND == BULK) {
        size_t smem = sm90_decode_smem(p.K, p.g, KS, GATED);
        cudaFuncSetAttribute(sm90_decode_kernel<NT, KS, GATED>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        sm90_decode_kernel<NT, KS, GATED><<<grid, 128, smem>>>(p);
    } else if (KIND == F16) {
        sm89_decode_f16_kernel<NT, KS, GATED><<<grid, 128>>>(p);
    } else {
        sm89_gemm_kernel<NT, KS, GATED><<<grid, 128>>>(p);
    }
    return cudaGetLastError();
}

struct version {
    const char *name;
    int kind, nt, ks, gated, same_as; /* same_as: index of the version it must equal (bitwise,
                                         or within 1e-5 rel-L2 a row for F16), or -1 */
    cudaError_t (*fn)(const sm89_gemm_args &, int);
};
static const version versions[] = {
    {"sm89 nt=1 ks=4", SM89, 1, 4, 0, -1, launch<1, 4, false, SM89>},
    {"ring nt=1 ks=4", RING, 1, 4, 0, 0, launch<1, 4, false, RING>},
    {"bulk nt=1 ks=4", BULK, 1, 4, 0, 0, launch<1, 4, false, BULK>},
    {"sm89 nt=2 ks=4", SM89, 2, 4, 0, -1, launch<2, 4, false, SM89>},
    {"bulk nt=2 ks=4", BULK, 2, 4, 0, 3, launch<2, 4, false, BULK>},
    {"sm89 nt=4 ks=2", SM89, 4, 2, 0, -1, launch<4, 2, false, SM89>},
    {"bulk nt=4 ks=2", BULK, 4, 2, 0, 5, launch<4, 2, false, BULK>},
    {"gated sm89 nt=1 ks=4", SM89, 1, 4, 1, -1, launch<1, 4, true, SM89>},
    {"gated bulk nt=1 ks=4", BULK, 1, 4, 1, 7, launch<1, 4, true, BULK>},
    {"gated sm89 nt=2 ks=4", SM89, 2, 4, 1, -1, launch<2, 4, true, SM89>},
    {"gated bulk nt=2 ks=4", BULK, 2, 4, 1, 9, launch<2, 4, true, BULK>},
    {"f16 nt=1 ks=4", F16, 1, 4, 0, 0, launch<1, 4, false, F16>},
    {"f16 nt=2 ks=4", F16, 2, 4, 0, 3, launch<2, 4, false, F16>},
    {"gated f16 nt=1 ks=4", F16, 1, 4, 1, 7, launch<1, 4, true, F16>},
    {"gated f16 nt=2 ks=4", F16, 2, 4, 1, 9, launch<2, 4, true, F16>},
};
#define NVERSIONS (int)(sizeof versions / sizeof versions[0])

int main(int argc, char **argv)
{
    int E = argc > 1 ? atoi(argv[1]) : 2, M = argc > 2 ? atoi(argv[2]) : 1;
    int N = argc > 3 ? atoi(argv[3]) : 4096, K = argc > 4 ? atoi(argv[4]) : 14336;
    int g = argc > 5 ? atoi(argv[5]) : 128;
    if (E < 1 || M < 1 || N % 32 || K % g || g % 32) { fprintf(stderr, "need N %% 32 == 0, K %% g == 0, g %% 32 == 0\n"); return 2; }
    int R = E * M;
    CHECK_EVERY = R <= 16 ? 1 : R / 16;
    size_t nq = (size_t)E * N * K / 8, ns = (size_t)E * N * (K / g);
    std::vector<uint8_t> a((size_t)R * K);
    std::vector<int32_t> q(nq);
    std::vector<float> S(ns), C((size_t)E * N), r(R), ref((size_t)R * N), got((size_t)R * N);
    for (auto &v : a) { uint8_t c = (uint8_t)next32(); v = (c & 0x7f) == 0x7f ? 0x38 : c; }
    for (auto &v : q) v = (int32_t)next32() ^ (int32_t)(next32() << 16);
    for (auto &v : S) v = 0.004f + 0.016f * (next32() & 0xffff) / 65536.0f;
    for (auto &v : C) v = 0.5f + (next32() & 0xffff) / 65536.0f;
    for (auto &v : r) v = 0.01f + 0.01f * (next32() & 0xff) / 256.0f;

    uint8_t *da; int32_t *dq; float *dS, *dC, *dr, *dout, *dws, *dwc, *dref; uint2 *dwq; void *flush;
    int32_t *doff, *dnt; int2 *dtiles; uint32_t *drm, *drm2;
    size_t flush_bytes = (size_t)256 << 20;
    CK(cudaMalloc(&da, a.size())); CK(cudaMalloc(&dq, nq * 4)); CK(cudaMalloc(&dS, ns * 4));
    CK(cudaMalloc(&dC, C.size() * 4)); CK(cudaMalloc(&dr, R * 4)); CK(cudaMalloc(&dout, got.size() * 4));
    CK(cudaMalloc(&dref, got.size() * 4));
    CK(cudaMalloc(&dwq, nq * 4)); CK(cudaMalloc(&dws, ns * 4)); CK(cudaMalloc(&dwc, C.size() * 4));
    CK(cudaMalloc(&flush, flush_bytes)); CK(cudaMalloc(&doff, 4 * (E + 1))); CK(cudaMalloc(&dnt, 4));
    CK(cudaMalloc(&dtiles, sizeof(int2) * (R + E))); CK(cudaMalloc(&drm, 4 * R)); CK(cudaMalloc(&drm2, 4 * R));
    CK(cudaMemcpy(da, a.data(), a.size(), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dq, q.data(), nq * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dS, S.data(), ns * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dC, C.data(), C.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dr, r.data(), R * 4, cudaMemcpyHostToDevice));
    for (int e = 0; e < E; e++) { /* the library's packing, one expert at a time */
        size_t qe = (size_t)N * K / 8, se = (size_t)N * (K / g);
        sm89_pack_kernel<<<(unsigned)((qe + 255) / 256), 256>>>(dq + e * qe, N, K, dwq + e * qe / 2);
        sm89_pack_scales_kernel<<<(unsigned)((std::max(se, (size_t)N) + 255) / 256), 256>>>(
            dS + e * se, 2, N, K / g, dC + (size_t)e * N, dws + e * se, dwc + (size_t)e * N);
    }
    std::vector<int32_t> off(E + 1);
    for (int e = 0; e <= E; e++) off[e] = e * M;
    CK(cudaMemcpy(doff, off.data(), 4 * (E + 1), cudaMemcpyHostToDevice));
    CK(cudaGetLastError());
    /* reference: the naive kernel (f64, checked against the CPU on a few rows below) */
    v1_naive<<<(unsigned)(((size_t)R * N + 255) / 256), 256>>>(R, M, N, K, g, da, dr, dq, dS, dC, dref);
    CK(cudaMemcpy(ref.data(), dref, ref.size() * 4, cudaMemcpyDeviceToHost));
    { /* the naive kernel against a CPU f64 sum, two rows */
        double worst = 0;
        for (int m : {0, R - 1}) {
            int e = m / M;
            for (int n = 0; n < N; n += 97) {
                double acc = 0;
                for (int b = 0; b < K / g; b++) {
                    double P = 0;
                    for (int k = b * g; k < (b + 1) * g; k++)
                        P += (double)w4a8moe_int4_get(q.data() + ((size_t)e * N + n) * (K / 8), k) * w4a8moe_e4m3_to_f32(a[(size_t)m * K + k]);
                    acc += (double)S[((size_t)e * N + n) * (K / g) + b] * P;
                }
                float v = (float)((double)r[m] * ((double)C[(size_t)e * N + n] * acc));
                worst = std::max(worst, (double)fabsf(v - ref[(size_t)m * N + n]) / (fabs(v) + 1e-30));
            }
        }
        printf("naive vs CPU: worst rel %.2e%s\n", worst, worst <= 1e-6 ? "" : "  FAIL");
    }

    double wbytes = (double)E * N * (K / 2.0 + 4.0 * K / g);
    printf("E=%d M=%d N=%d K=%d g=%d: %.2f MB of weights\n", E, M, N, K, g, wbytes / 1e6);
    printf("%-26s %12s %10s %9s\n", "version", "max rel-L2", "us", "GB/s");
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    std::vector<std::vector<float>> outs(NVERSIONS);
    std::vector<std::vector<uint32_t>> amaxes(NVERSIONS);
    /* LAB_ONLY=i runs version i alone (for ncu), LAB_ITERS=n times it n times (default 20) */
    int only = getenv("LAB_ONLY") ? atoi(getenv("LAB_ONLY")) : -1;
    int iters = getenv("LAB_ITERS") ? atoi(getenv("LAB_ITERS")) : 20;
    for (int v = 0; v < NVERSIONS; v++) {
        const version &V = versions[v];
        if (only >= 0 && v != only) continue;
        int bt = 8 * V.nt;
        if (M > 2 * bt) continue; /* the tile would read each expert's weights many times */
        sm89_schedule_kernel<<<1, 1024>>>(doff, E, bt, dtiles, dnt, drm, 0);
        int ntiles = 0;
        for (int e = 0; e < E; e++) ntiles += (M + bt - 1) / bt;
        bool gated = V.gated;
        sm89_gemm_args p = {dwq, dws, dwc, N, gated ? N / 2 : N, K, g, da, dr, doff, dtiles, dnt, dout,
                            gated ? drm : NULL, 0};
        auto run = [&]() -> cudaError_t { return V.fn(p, ntiles); };
        CK(cudaMemset(dout, 0xff, got.size() * 4)); /* poison */
        CK(cudaMemset(drm, 0, 4 * R));
        CK(run());
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(got.data(), dout, got.size() * 4, cudaMemcpyDeviceToHost));
        char verdict[64] = "";
        double worst = 0;
        std::vector<uint32_t> rm(R, 0);
        if (gated) CK(cudaMemcpy(rm.data(), drm, 4 * R, cudaMemcpyDeviceToHost));
        for (int m = 0; m < R && !gated; m++) {
            if (!check_row(m)) continue;
            double num = 0, den = 0;
            for (int n = 0; n < N; n++) {
                double d = (double)got[(size_t)m * N + n] - ref[(size_t)m * N + n];
                num += d * d;
                den += (double)ref[(size_t)m * N + n] * ref[(size_t)m * N + n];
            }
            double rel = sqrt(num / (den > 0 ? den : 1));
            if (!(rel <= worst)) worst = rel; /* NaN sticks */
        }
        if (!(worst <= 1e-6)) snprintf(verdict, sizeof verdict, "  FAIL");
        if (V.same_as >= 0 && !outs[V.same_as].empty() && V.kind != F16) {
            size_t n = (size_t)R * (gated ? N / 2 : N);
            bool same = !memcmp(got.data(), outs[V.same_as].data(), n * 4) && rm == amaxes[V.same_as];
            snprintf(verdict, sizeof verdict, same ? "  = %s bitwise" : "  DIFFERS from %s  FAIL",
                     versions[V.same_as].name);
        } else if (V.same_as >= 0 && !outs[V.same_as].empty()) { /* F16: f32 sums in the MMA */
            int n = gated ? N / 2 : N;
            double w = 0;
            for (int m = 0; m < R; m++) {
                double num = 0, den = 0;
                for (int c = 0; c < n; c++) {
                    double d = (double)got[(size_t)m * n + c] - outs[V.same_as][(size_t)m * n + c];
                    num += d * d;
                    den += (double)outs[V.same_as][(size_t)m * n + c] * outs[V.same_as][(size_t)m * n + c];
                }
                double rel = sqrt(num / (den > 0 ? den : 1));
                if (!(rel <= w)) w = rel;
            }
            snprintf(verdict, sizeof verdict, w <= 1e-5 ? "  vs %s: %.1e" : "  vs %s: %.1e  FAIL",
                     versions[V.same_as].name, w);
        }
        outs[v] = got;
        amaxes[v] = rm;
        std::vector<float> ts;
        for (int i = 0; i < iters; i++) {
            cudaMemsetAsync(flush, i, flush_bytes); /* evict the weights from L2 */
            cudaEventRecord(e0);
            run();
            cudaEventRecord(e1);
            cudaEventSynchronize(e1);
            float ms;
            cudaEventElapsedTime(&ms, e0, e1);
            ts.push_back(ms);
        }
        std::sort(ts.begin(), ts.end());
        double us = ts[ts.size() / 2] * 1e3;
        printf("%-26s %12.2e %10.1f %9.0f%s\n", V.name, worst, us, wbytes / us / 1e3, verdict);
    }
    CK(cudaGetLastError());
    return 0;
}
